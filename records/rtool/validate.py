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
from .rescore import check_rescore

def check_files(folder: Path, rec: Record, rep: Report) -> Path | None:
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}_.+", folder.name):
        rep.add("FAIL", f"folder name {folder.name!r} is not YYYY-MM-DD_Description")
    missing = [n for n in ("README.md", "submission.json", "train_gpt.py") if not (folder / n).is_file()]
    runs = rec.runs
    script = folder / "train_gpt.py"
    if missing:
        others = [p.name for p in sorted(folder.glob("*.py")) if p.name != "train_gpt.py"]
        hint = f" (other scripts: {', '.join(others)})" if "train_gpt.py" in missing and others else ""
        rep.add("FAIL", f"files: missing {', '.join(missing)}{hint}")
    if not runs:
        rep.add("FAIL", "files: no training log (*.log / *.txt with step or metric lines)")
    if not missing and runs:
        rep.add("PASS", f"files: README.md, submission.json, train_gpt.py, {len(runs)} log(s) "
                        f"({', '.join(str(r.path.relative_to(folder)) for r in runs)})")
    for note in rec.notes:
        rep.add("INFO", f"logs: {note}")
    if (folder / "README.md").is_file() and not (folder / "README.md").read_text(errors="replace").strip():
        rep.add("FAIL", "README.md is empty")
    return script if script.is_file() else None


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
        if "compressed" in r.notes.get("code_bytes", "") and r.code_bytes < file_bytes:
            # the 04-27 1.0611 record counts its code compressed (31,999 bytes) and commits a 158 KB file;
            # the organisers accepted it, so it is a policy point to flag, not a failure
            rep.add("WARN", f"counted code {r.label}: the log counts {r.code_bytes:,} bytes of compressed code while "
                            f"the committed train_gpt.py is {file_bytes:,} bytes (model {r.model_bytes:,} + file = "
                            f"{total:,}{' > the cap' if total > CAP_BYTES else ''}). Counting compressed code is a "
                            "policy the organisers accepted for the 2026-04-27 record; `records_tool.py pack` makes "
                            "the committed file itself the counted code.")
            continue
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
    readable = unpack_source(data)
    if readable is not None:
        human = script.parent / HUMAN_NAME
        if not human.is_file():
            rep.add("FAIL", f"packed script: train_gpt.py is packed but {HUMAN_NAME}, its readable source, is missing")
        elif not packs_to(human.read_text(encoding="utf-8", errors="replace"), readable):
            rep.add("FAIL", f"packed script: {HUMAN_NAME} is not the source packed in train_gpt.py")
        else:
            rep.add("PASS", f"packed script: train_gpt.py ({len(data):,} bytes, the counted code) is the packed form of "
                            f"{HUMAN_NAME} ({human.stat().st_size:,} bytes)")
    for r in runs:
        status, msg = verify_script(r, data)
        rep.add(status, f"script {r.label}: {msg}")


def check_run_setup(runs: list[RunLog], rep: Report, record_track: bool) -> None:
    """Full validation split, and on the 10-minute track the 8xH100 hardware and three seeds."""
    seeds = sorted({seed_key(r) for r in runs})
    if record_track and len(seeds) < MIN_RECORD_SEEDS:
        rep.add("WARN", f"seeds: {len(seeds)} ({', '.join(seeds)}) in a record-track folder; a record submission "
                        f"shows {MIN_RECORD_SEEDS} seeds (the significance test needs at least 2): add runs, or move "
                        "the folder to track_non_record_16mb (`new --track non_record_16mb`)")
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


def check_data_audit(runs: list[RunLog], rep: Report) -> None:
    """The train/val document audit the run's preflight logged (`data_audit:<digest> ...` when the
    data folder held a full audit of exactly these shards, data/audit_data.py)."""
    for r in runs:
        audit = r.data_audit
        if audit is None:
            rep.add("UNVERIFIED", f"data audit {r.label}: no `data_audit:` line in the log (no proof that train and "
                                  "validation share no document)")
        elif re.fullmatch(r"[0-9a-f]{64}", audit.split()[0]) and " full:PASS " in f" {audit} ":
            rep.add("PASS", f"data audit {r.label}: digest {audit.split()[0]} (a full audit found no validation "
                            "document in the training shards; the run's shards matched it)")
        elif re.fullmatch(r"[0-9a-f]{64}", audit.split()[0]):
            rep.add("FAIL", f"data audit {r.label}: the full audit of the run's data reports problems: {audit}")
        else:
            rep.add("UNVERIFIED", f"data audit {r.label}: {audit}")


def check_scores_and_configs(runs: list[RunLog], rep: Report) -> None:
    for r in runs:
        if r.score is None:
            rep.add("FAIL", f"score {r.label}: no final metric line in {r.path.name}")
        elif not (is_finite(r.score.val_bpb) and is_finite(r.score.val_loss)):
            rep.add("FAIL", f"score {r.label}: val_loss {r.score.val_loss} val_bpb {r.score.val_bpb} from `{r.score.name}` "
                            f"line {r.score.lineno} is not a finite number (the run diverged)")
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


def _lookup(sub: dict, key: str):
    m = re.fullmatch(r"seed_results\[(.+)\]\.(\w+)", key)
    return sub["seed_results"][m.group(1)][m.group(2)] if m else sub[key]


def check_submission(folder: Path, rec: Record, rep: Report) -> None:
    runs = rec.runs
    if rec.sub_error:
        rep.add("FAIL", rec.sub_error)
        return
    sub = rec.sub
    if sub is None:
        return
    bad_scores = [k for k in ("val_bpb", "val_loss") if k in sub and not is_number(sub[k])]
    for seed, res in (sub.get("seed_results") or {}).items() if isinstance(sub.get("seed_results"), dict) else ():
        bad_scores += [f"seed_results[{seed}].{k}" for k in ("val_bpb", "val_loss")
                       if isinstance(res, dict) and k in res and not is_number(res[k])]
    if bad_scores:
        rep.add("FAIL", "submission.json: " + ", ".join(f"{k} = {json.dumps(_lookup(sub, k))}" for k in bad_scores)
                + ": a score must be a finite number (a NaN or inf score is a diverged run, null is no score)")
        return
    # Byte counts are those of the train_gpt.py the folder ships. A log's own count is accepted too,
    # unless a log ran this very file and counted another size (a readable run projects its packed
    # size: a folder shipping the readable script must not state that size).
    script = rec.folder / "train_gpt.py"
    shipped = script.stat().st_size if script.is_file() else None
    by_file, by_log = summarize_runs(runs, shipped), summarize_runs(runs)
    file_sha = sha256_bytes(script.read_bytes()) if shipped is not None else None
    projected = any(r.code_sha256 == file_sha and r.code_bytes not in (None, shipped) for r in runs)
    s, byte_alts = (by_file, {}) if projected else (by_log, by_file)
    by_seed = {seed_key(r): r for r in runs}
    bad, unverified, checked = [], [], 0
    for key in ("name", "github_id", "val_bpb"):
        if key not in sub:
            bad.append(f"missing required field {key!r}")

    derived_avg = [r for r in runs if "derived" in r.notes.get("step_avg", "")]
    not_compared = []

    def cmp(label: str, json_value, log_value, alternatives=()):
        nonlocal checked
        if "step_avg_ms" in label and derived_avg:
            # the log has no step_avg: the tool derives train time / steps, the submitter measured it
            not_compared.append(label)
            return
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
              "bytes_total": (s["bytes_total"], (byte_alts.get("bytes_total"),)),
              "artifact_bytes_max": (s["bytes_total"], (byte_alts.get("bytes_total"),)),
              "bytes_code": (s["bytes_code"], (byte_alts.get("bytes_code"),)), "train_steps_mean": (s["train_steps_mean"], ()),
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
                alt = (byte_alts.get("seed_results", {}).get(seed_key(r), {}).get(k),) if k == "artifact_bytes" else ()
                cmp(f"seed_results[{seed}].{k}", v, logged[k], alt)
    extra = f"; not checkable: {', '.join(unverified)}" if unverified else ""
    if not_compared:
        extra += (f"; not compared: {', '.join(not_compared)} (the logs print no step_avg, so the tool's value is "
                  "derived as train time / steps)")
    if bad:
        rep.add("FAIL", "submission.json disagrees with the logs: " + "; ".join(bad) + extra)
    elif unverified:
        rep.add("UNVERIFIED", f"submission.json: {checked} values agree with the logs" + extra)
    else:
        rep.add("PASS", f"submission.json: {checked} values agree with the logs" + extra)



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
    rec = load_record(folder)
    runs = rec.runs
    script = check_files(folder, rec, rep)
    if runs:
        check_scores_and_configs(runs, rep)
        check_run_setup(runs, rep, record_track)
        check_data_audit(runs, rep)
        check_sizes(runs, script, rep)
        check_times(runs, rep, args.train_grace_steps, record_track)
        check_scripts(runs, script, rep)
        check_submission(folder, rec, rep)
        check_significance(args, runs, rep)
        if args.rescore and script is not None:
            check_rescore(folder, runs, Path(args.rescore), args.rescore_seed, args.rescore_launcher, rep,
                          tolerance=args.rescore_tolerance)
    elif rec.sub_error:
        rep.add("FAIL", rec.sub_error)
    return rep.summary()

