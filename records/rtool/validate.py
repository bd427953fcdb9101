"""Command `validate`: check a record folder."""
from __future__ import annotations

import json
import re
from pathlib import Path

from .common import *
from .logs import *
from .new import check_same_config, summarize_runs
from .scripts import *
from .stats import *

def check_files(folder: Path, rep: Report) -> tuple[list[RunLog], Path | None]:
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}_.+", folder.name):
        rep.add("FAIL", f"folder name {folder.name!r} is not YYYY-MM-DD_Description")
    missing = [n for n in ("README.md", "submission.json", "train_gpt.py") if not (folder / n).is_file()]
    runs = find_logs(folder)
    script = folder / "train_gpt.py"
    if missing:
        others = [p.name for p in sorted(folder.glob("*.py")) if p.name != "train_gpt.py"]
        hint = f" (other scripts: {', '.join(others)})" if "train_gpt.py" in missing and others else ""
        rep.add("FAIL", f"files: missing {', '.join(missing)}{hint}")
    if not runs:
        rep.add("FAIL", "files: no training log (*.log / *.txt with step or metric lines)")
    if not missing and runs:
        rep.add("PASS", f"files: README.md, submission.json, train_gpt.py, {len(runs)} log(s) "
                        f"({', '.join(r.path.name for r in runs)})")
    if (folder / "README.md").is_file() and not (folder / "README.md").read_text(errors="replace").strip():
        rep.add("FAIL", "README.md is empty")
    return runs, (script if script.is_file() else None)


def check_sizes(runs: list[RunLog], script: Path | None, rep: Report) -> None:
    for r in runs:
        if r.total_bytes is None:
            rep.add("UNVERIFIED", f"size {r.label}: total bytes {NOT_IN_LOG} ({r.path.name})")
        elif r.total_bytes <= CAP_BYTES:
            rep.add("PASS", f"size {r.label}: total {r.total_bytes:,} <= {CAP_BYTES:,} bytes ({r.notes.get('total_bytes')})")
        else:
            rep.add("FAIL", f"size {r.label}: total {r.total_bytes:,} > {CAP_BYTES:,} bytes ({r.notes.get('total_bytes')})")
    if script is None:
        return
    file_bytes = script.stat().st_size
    same = [r for r in runs if r.code_bytes == file_bytes]
    if same:
        rep.add("PASS", f"counted code: {', '.join(r.label for r in same)} count{'s' if len(same) == 1 else ''} "
                        f"{file_bytes:,} code bytes = the size of train_gpt.py")
    for r in runs:
        if r.code_bytes is None or r.code_bytes == file_bytes:
            continue
        if r.model_bytes is None:
            rep.add("UNVERIFIED", f"counted code {r.label}: log counts {r.code_bytes:,} code bytes but train_gpt.py is "
                                  f"{file_bytes:,} bytes, and the model bytes are {NOT_IN_LOG}")
            continue
        total = r.model_bytes + file_bytes
        status = "PASS" if total <= CAP_BYTES else "FAIL"
        rep.add(status, f"counted code {r.label}: log counts {r.code_bytes:,} code bytes, train_gpt.py is {file_bytes:,}; "
                        f"model {r.model_bytes:,} + file {file_bytes:,} = {total:,} "
                        f"{'<=' if status == 'PASS' else '>'} {CAP_BYTES:,}")


def check_times(runs: list[RunLog], rep: Report, grace_steps: float, record_track: bool = True) -> None:
    """Training and evaluation wallclock; on the non-record track they are reported as INFO."""
    if not record_track:
        for r in runs:
            rep.add("INFO", f"time {r.label}: train {fmt_s(r.train_time_ms)}, eval {fmt_s(r.eval_time_ms)} "
                            "(non-record track: no time limit checked)")
        return
    for r in runs:
        if r.train_time_ms is None:
            rep.add("UNVERIFIED", f"train time {r.label}: {NOT_IN_LOG}")
        else:
            grace = grace_steps * (r.step_avg_ms or 0.0)
            limit = 1000 * TRAIN_LIMIT_S + grace
            ok = r.train_time_ms <= limit
            note = ""
            if ok and r.train_time_ms > 1000 * TRAIN_LIMIT_S:
                note = (f"; over by {r.train_time_ms - 1000 * TRAIN_LIMIT_S:.0f} ms, within the grace of "
                        f"{grace_steps:g} step(s) = {grace:.0f} ms (the cap is checked at step boundaries)")
            rep.add("PASS" if ok else "FAIL", f"train time {r.label}: {fmt_s(r.train_time_ms)} "
                    f"{'<=' if ok else '>'} {TRAIN_LIMIT_S:.0f} s ({r.notes.get('train_time')}{note})")
        if r.eval_time_ms is None:
            rep.add("UNVERIFIED", f"eval time {r.label}: {NOT_IN_LOG}")
        else:
            ok = r.eval_time_ms <= 1000 * EVAL_LIMIT_S
            rep.add("PASS" if ok else "FAIL", f"eval time {r.label}: {fmt_s(r.eval_time_ms)} "
                    f"{'<=' if ok else '>'} {EVAL_LIMIT_S:.0f} s ({r.notes.get('eval_time')})")


def check_scripts(runs: list[RunLog], script: Path | None, rep: Report) -> None:
    if script is None:
        rep.add("FAIL", "script: no train_gpt.py to verify against the logs")
        return
    data = script.read_bytes()
    for r in runs:
        status, msg = verify_script(r, data)
        rep.add(status, f"script {r.label}: {msg}")


def check_run_setup(runs: list[RunLog], rep: Report, record_track: bool) -> None:
    """Full validation split and the 8xH100 hardware of the 10-minute track."""
    for r in runs:
        partial = r.config.get("VAL_MAX_TOKENS")
        if partial is not None and norm_value(partial) not in (0.0, "0"):
            rep.add("FAIL", f"val split {r.label}: VAL_MAX_TOKENS={partial}: scored on part of the validation split, "
                            "not comparable to full-split scores")
        if not record_track:
            continue
        if r.device_name is None:
            rep.add("UNVERIFIED", f"hardware {r.label}: {NOT_IN_LOG}")
        else:
            ok = "H100" in r.device_name and r.device_count == 8
            rep.add("PASS" if ok else "FAIL", f"hardware {r.label}: {r.device_count}x {r.device_name} "
                    f"({'8xH100 as the track requires' if ok else 'the 10-minute track is timed on 8xH100'})")


def check_scores_and_configs(runs: list[RunLog], rep: Report) -> None:
    for r in runs:
        if r.score is None:
            rep.add("FAIL", f"score {r.label}: no final metric line in {r.path.name}")
        else:
            rep.add("PASS", f"score {r.label}: val_loss {fmt_num(r.score.val_loss)} val_bpb {fmt_num(r.score.val_bpb)} "
                            f"from `{r.score.name}` ({r.notes['score']})")
    seeds = [r.seed for r in runs]
    if len(runs) > 1 and None not in seeds and len(set(seeds)) != len(seeds):
        rep.add("FAIL", f"seeds: duplicates among the logs {seeds}")
    if len(runs) > 1:
        if all(r.config for r in runs):
            diff = check_same_config(runs)
            rep.add("FAIL" if diff else "PASS", "config: " + (f"differs between logs in {', '.join(diff)}" if diff else
                    "identical across logs (ignoring SEED, RUN_ID and rank/log-file keys)"))
        else:
            rep.add("SKIP", "config: not every log records its config; cannot compare across seeds")


def check_submission(folder: Path, runs: list[RunLog], rep: Report) -> None:
    path = folder / "submission.json"
    if not path.is_file():
        return
    try:
        sub = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        rep.add("FAIL", f"submission.json: invalid JSON ({e})")
        return
    s = summarize_runs(runs)
    by_seed = {seed_key(r): r for r in runs}
    bad, unverified, checked = [], [], 0
    for key in ("name", "github_id", "val_bpb"):
        if key not in sub:
            bad.append(f"missing required field {key!r}")

    def cmp(label: str, json_value, log_value, alternatives=()):
        nonlocal checked
        if log_value is None:
            unverified.append(f"{label} ({NOT_IN_LOG})")
            return
        checked += 1
        is_score = label.rsplit(".", 1)[-1] in ("val_loss", "val_bpb")
        if is_score and isinstance(json_value, (int, float)) and abs(json_value - log_value) > SCORE_TOLERANCE:
            bad.append(f"{label}: json {json_value!r} vs logs {show_value(log_value)} (a score must match to 4 decimals)")
        elif not any(agrees(json_value, v) for v in (log_value, *alternatives) if v is not None):
            bad.append(f"{label}: json {json_value!r} vs logs {show_value(log_value)}")

    loss_pop = std(score_values(runs, "val_loss"), ddof=0) if len(runs) > 1 else None
    bpb_pop = std(score_values(runs, "val_bpb"), ddof=0) if len(runs) > 1 else None
    simple = {"val_loss": (s["val_loss"], ()), "val_bpb": (s["val_bpb"], ()),
              "val_loss_std": (s["val_loss_std"], (loss_pop,)), "val_bpb_std": (s["val_bpb_std"], (bpb_pop,)),
              "bytes_total": (s["bytes_total"], ()), "artifact_bytes_max": (s["bytes_total"], ()),
              "bytes_code": (s["bytes_code"], ()), "train_steps_mean": (s["train_steps_mean"], ()),
              "step_avg_ms_mean": (s["step_avg_ms_mean"], ())}
    for key, (value, alts) in simple.items():
        if key in sub and sub[key] is not None:
            cmp(key, sub[key], value, alts)
    if "seeds" in sub:
        checked += 1
        if sorted(map(str, sub["seeds"])) != sorted(by_seed):
            bad.append(f"seeds: json {sub['seeds']} vs logs {sorted(by_seed)}")
    for seed, res in (sub.get("seed_results") or {}).items():
        r = by_seed.get(str(seed))
        if r is None:
            bad.append(f"seed_results[{seed}]: no log for this seed")
            continue
        logged = s["seed_results"][seed_key(r)]
        for k, v in res.items():
            if k in logged and v is not None:
                cmp(f"seed_results[{seed}].{k}", v, logged[k])
    extra = f"; not checkable: {', '.join(unverified)}" if unverified else ""
    if bad:
        rep.add("FAIL", "submission.json disagrees with the logs: " + "; ".join(bad) + extra)
    elif unverified:
        rep.add("UNVERIFIED", f"submission.json: {checked} values agree with the logs" + extra)
    else:
        rep.add("PASS", f"submission.json: {checked} values agree with the logs")



def check_significance(args, runs: list[RunLog], rep: Report) -> None:
    sig = significance_from_args(args, runs)
    if sig is None:
        rep.add("SKIP", "significance: no --best-loss / --best-bpb / --best-losses / --best-record given")
        return
    if isinstance(sig, str):
        rep.add("FAIL", f"significance: cannot test ({sig})")
        return
    unit = "bpb" if "val_bpb" in sig.test else "nats"
    msg = (f"significance: mean {sig.ours_mean:.8f} vs best {sig.best_mean:.8f}, gain {sig.gain:+.6f} {unit} "
           f"(need >= {sig.margin:.6f}); {sig.test}: t = {sig.t:.3f}, df = {sig.df:.2f}, p = {sig.p:.3g} "
           f"({'<' if sig.p < P_THRESHOLD else '>='} {P_THRESHOLD})")
    rep.add("PASS" if sig.passed() else "FAIL", msg)


def cmd_validate(args) -> int:
    folder = Path(args.folder)
    if not folder.is_dir():
        return refuse(f"{folder} is not a directory")
    record_track = "non_record" not in folder.resolve().parent.name
    print(f"validating {folder} ({'10-minute record track' if record_track else 'non-record track'})")
    rep = Report(args.allow_unverified)
    runs, script = check_files(folder, rep)
    if runs:
        check_scores_and_configs(runs, rep)
        check_run_setup(runs, rep, record_track)
        check_sizes(runs, script, rep)
        check_times(runs, rep, args.train_grace_steps, record_track)
        check_scripts(runs, script, rep)
        check_submission(folder, runs, rep)
        check_significance(args, runs, rep)
    return rep.summary()

