"""Command `new`: build a record folder from run logs."""
from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

from .common import *
from .logs import *
from .scripts import *
from .stats import *
from .pack import write_packed

def shipped_total(r: RunLog, shipped_code: int | None) -> int | None:
    """A run's total bytes with the code counted as the file the folder ships (`shipped_code`
    bytes): a folder that ships the readable train_gpt.py counts its bytes, not the packed size
    the log projected. Without a model size in the log, the log's total."""
    if shipped_code is None or r.model_bytes is None:
        return r.total_bytes
    return r.model_bytes + shipped_code


def summarize_runs(runs: list[RunLog], shipped_code: int | None = None) -> dict:
    """Numbers that go into submission.json (and that validate recomputes). `shipped_code`: the
    size of the folder's train_gpt.py, which bytes_code and bytes_total count."""
    losses, bpbs = score_values(runs, "val_loss"), score_values(runs, "val_bpb")
    per_seed = {}
    for r in runs:
        per_seed[seed_key(r)] = {
            "val_loss": r.score.val_loss if r.score else None,
            "val_bpb": r.score.val_bpb if r.score else None,
            "artifact_bytes": shipped_total(r, shipped_code),
            "steps": r.steps,
            "step_avg_ms": None if r.step_avg_ms is None else round(r.step_avg_ms, 2),
            "train_time_s": None if r.train_time_ms is None else round(r.train_time_ms / 1000.0, 3),
            "eval_time_s": None if r.eval_time_ms is None else round(r.eval_time_ms / 1000.0, 3),
        }
    totals = [t for t in (shipped_total(r, shipped_code) for r in runs) if t is not None]
    codes = [shipped_code] if shipped_code is not None else [r.code_bytes for r in runs if r.code_bytes is not None]
    steps = [r.steps for r in runs if r.steps is not None]
    avgs = [r.step_avg_ms for r in runs if r.step_avg_ms is not None]
    pre = [m for m in (prequant_metric(r) for r in runs) if m is not None]
    return {
        "pre_quant_val_bpb": mean([m.val_bpb for m in pre]) if len(pre) == len(runs) else None,
        "pre_quant_val_loss": mean([m.val_loss for m in pre]) if len(pre) == len(runs) else None,
        "val_loss": mean(losses) if losses else None,
        "val_bpb": mean(bpbs) if bpbs else None,
        "val_loss_std": std(losses) if len(losses) > 1 else None,
        "val_bpb_std": std(bpbs) if len(bpbs) > 1 else None,
        "seed_results": per_seed,
        "bytes_total": max(totals) if totals else None,
        "artifact_bytes_mean": round(mean(totals)) if totals else None,
        "bytes_code": max(codes) if codes else None,
        "train_steps_mean": round(mean(steps), 2) if steps else None,
        "step_avg_ms_mean": round(mean(avgs), 2) if avgs else None,
    }


def prequant_metric(run: RunLog) -> Metric | None:
    """The last pre-quantization score of a log (ours: `final_prequant_exact`)."""
    pre = [m for m in run.metrics if is_prequant(m.name) and "live" not in m.name]
    exact = [m for m in pre if m.name.endswith("_exact")]
    return (exact or pre or [None])[-1]


def compliance(runs: list[RunLog]) -> dict:
    """The rule checks recent records state in submission.json, computed from the logs (None: not in log)."""
    def every(pred, values):
        values = list(values)
        return None if any(v is None for v in values) else all(pred(v) for v in values)

    return {
        "artifact_under_16mb": every(lambda b: b <= CAP_BYTES, (r.total_bytes for r in runs)),
        # the wallclock cap is checked at step boundaries: one average step of grace, as validate allows
        "train_under_600s": every(lambda r: r.train_time_ms <= 1000 * TRAIN_LIMIT_S + (r.step_avg_ms or 0.0),
                                  (r if r.train_time_ms is not None else None for r in runs)),
        "eval_under_600s": every(lambda t: t <= 1000 * EVAL_LIMIT_S, (r.eval_time_ms for r in runs)),
        "full_val_split": every(lambda v: norm_value(v) in (0.0, "0"), (r.config.get("VAL_MAX_TOKENS", "0") for r in runs)),
        "hardware_8xh100": every(lambda r: "H100" in r.device_name and r.device_count == 8,
                                 (r if r.device_name else None for r in runs)),
        "seeds": len(runs),
    }


def check_same_config(runs: list[RunLog]) -> list[str]:
    """Keys whose value differs between the runs (ignoring seed/run-id style keys)."""
    keys = sorted({k for r in runs for k in r.config} - VOLATILE_KEYS)
    return [k for k in keys if len({r.config.get(k, "<absent>") for r in runs}) > 1]


def build_submission(runs: list[RunLog], args, script_bytes: bytes, log_names: list[str]) -> dict:
    s = summarize_runs(runs, len(script_bytes))  # the bytes of the train_gpt.py the folder ships
    first = runs[0]
    hardware = (f"{first.device_count}x {first.device_name}" if first.device_name else NOT_IN_LOG)
    sub = {
        "author": args.author, "github_id": args.github_id, "name": args.name, "blurb": args.blurb or "",
        "date": args.date, "track": args.track,
        "val_loss": s["val_loss"], "val_bpb": s["val_bpb"],
        "val_loss_std": s["val_loss_std"], "val_bpb_std": s["val_bpb_std"], "std_ddof": 1,
        "seeds": [r.seed if r.seed is not None else seed_key(r) for r in runs],
        "seed_results": s["seed_results"],
        "scored_metric": first.score.name if first.score else None,
        "bytes_total": s["bytes_total"], "artifact_bytes_max": s["bytes_total"],
        "artifact_bytes_mean": s["artifact_bytes_mean"], "bytes_code": s["bytes_code"],
        "train_steps_mean": s["train_steps_mean"], "step_avg_ms_mean": s["step_avg_ms_mean"],
        "model_params": first.model_params,
        "hardware": hardware, "python_version": first.python_version or NOT_IN_LOG,
        "pytorch_version": first.torch_version or NOT_IN_LOG, "cuda_version": first.cuda_version or NOT_IN_LOG,
        "code_sha256": sha256_bytes(script_bytes), "logs": log_names,
        "pre_quant_val_bpb": s["pre_quant_val_bpb"], "pre_quant_val_loss": s["pre_quant_val_loss"],
        "compliance": compliance(runs),
    }
    if unpack_source(script_bytes) is not None:
        sub["code_packed"] = (f"train_gpt.py is the packed (minified, LZMA, self-extracting) form of {HUMAN_NAME}; "
                              "its bytes are the counted code")
    sig = significance_from_args(args, runs)
    if isinstance(sig, SigTest):
        sub["comparison_best_value"] = sig.best_mean
        sub["delta_vs_best"] = sig.ours_mean - sig.best_mean
        sub["significance_test"] = sig.test
        sub["p_value"] = sig.p
    sub["generated_by"] = "records/records_tool.py new"
    return sub


PATH_KEYS = {"DATA_PATH", "TOKENIZER_PATH", "OUT_DIR", "DATA_DIR", "LOGFILE", "MODEL_PATH"}


def reproduce_overrides(run: RunLog, defaults: dict) -> tuple[list[str], list[str]]:
    """(shell-quoted KEY=VALUE overrides of the script defaults, keys left out as local paths)."""
    overrides, local = [], []
    for k, v in sorted(run.config.items()):
        if k in VOLATILE_KEYS or k not in defaults or defaults[k].startswith("<"):
            continue
        if norm_value(v) == norm_value(defaults[k]):
            continue
        if k in PATH_KEYS or v.startswith(("/", "~")) or re.match(r"^[A-Za-z]:\\", v):
            local.append(k)
            continue
        overrides.append(f"{k}={shlex.quote(v)}")  # globs and spaces stay literal in the shell
    return overrides, local


def nproc_of(run: RunLog) -> tuple[int, str]:
    if run.world_size:
        return run.world_size, f"--nproc_per_node={run.world_size}: the logs' world_size"
    if run.device_count:
        return run.device_count, f"--nproc_per_node={run.device_count}: the logs' device count"
    return 8, "--nproc_per_node=8: the track's 8xH100, the logs give no world size"


def write_readme(folder: Path, runs: list[RunLog], sub: dict, script_text: str) -> None:
    """README.md skeleton: headline, results table, reproduce command, resolved config."""
    rows = []
    for r in runs:
        sr = sub["seed_results"][seed_key(r)]
        rows.append(f"| {seed_key(r)} | {fmt_num(sr['val_loss'])} | {fmt_num(sr['val_bpb'])} | "
                    f"{fmt_bytes(sr['artifact_bytes'])} | {sr['steps'] if sr['steps'] is not None else NOT_IN_LOG} | "
                    f"{sr['step_avg_ms'] if sr['step_avg_ms'] is not None else NOT_IN_LOG} | "
                    f"{sr['train_time_s'] if sr['train_time_s'] is not None else NOT_IN_LOG} | "
                    f"{sr['eval_time_s'] if sr['eval_time_s'] is not None else NOT_IN_LOG} |")
    std_txt = "n/a (one seed)" if sub["val_bpb_std"] is None else f"{sub['val_bpb_std']:.8f}"
    loss_std_txt = "n/a" if sub["val_loss_std"] is None else f"{sub['val_loss_std']:.8f}"
    rows.append(f"| **mean** | **{fmt_num(sub['val_loss'])}** | **{fmt_num(sub['val_bpb'])}** | "
                f"max {fmt_bytes(sub['bytes_total'])} | {sub['train_steps_mean']} | {sub['step_avg_ms_mean']} | | |")
    first = runs[0]
    overrides, local = reproduce_overrides(first, env_defaults(script_text))
    nproc, nproc_note = nproc_of(first)
    local_note = (f" Local paths are left out ({', '.join(local)}): the script's defaults read `./data/`; set them "
                  "to your copy of the data." if local else "")
    config_rows = "\n".join(f"| {k} | `{v}` |" for k, v in sorted(first.config.items())) or "| (no config in log) | |"
    seeds = " ".join(seed_key(r) for r in runs)
    pre_line = ("" if sub.get("pre_quant_val_bpb") is None else
                f" Before quantization: val_bpb {sub['pre_quant_val_bpb']:.8f} (mean of `final_prequant_exact`).")
    sig_line = ""
    if "p_value" in sub:
        sig_line = (f"\nAgainst the best score {sub['comparison_best_value']:.8f}: delta {sub['delta_vs_best']:+.8f}, "
                    f"{sub['significance_test']}, p = {sub['p_value']:.3g}.\n")
    files_script = ("- `train_gpt.py`: the exact script that produced the logs (verified against each log's embedded "
                    "source and code_sha256)." if "code_packed" not in sub else
                    f"- `train_gpt.py`: the counted code, a self-extracting packed form of `{HUMAN_NAME}` (run it as is).\n"
                    f"- `{HUMAN_NAME}`: the readable source; it packs to `train_gpt.py` (verified against each "
                    "log's embedded source).")
    text = f"""# {sub['name']}

**val_bpb: {fmt_num(sub['val_bpb'])}** (mean of {len(runs)} seed(s), std {std_txt}) | **val_loss: {fmt_num(sub['val_loss'])}** (std {loss_std_txt}) | **bytes_total: {fmt_bytes(sub['bytes_total'])}** (max over seeds) | {sub['hardware']}

Scored metric: `{sub['scored_metric']}` (the `final_score_exact` line of each log). Std is the sample std (ddof=1).{pre_line}
{sig_line}
{sub['blurb']}

## Results

| seed | val_loss | val_bpb | artifact bytes | steps | step_avg ms | train s | eval s |
|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

Versions: Python {sub['python_version']}, PyTorch {sub['pytorch_version']}, CUDA {sub['cuda_version']}. Code bytes: {fmt_bytes(sub['bytes_code'])}. train_gpt.py sha256 `{sub['code_sha256']}`.

![training and validation curves](curves.png)

## What changed and why

TODO: the method, each change with its measured effect (ablations), and what did not work.

## Reproducing

From inside this folder (environment variables that differ from the script's defaults; {nproc_note}).{local_note}

```bash
for SEED in {seeds}; do
  {' '.join(overrides)}{' ' if overrides else ''}SEED=$SEED torchrun --standalone --nproc_per_node={nproc} train_gpt.py
done
```

## Resolved configuration

From the `config:` lines of `{sub['logs'][0]}` (identical across seeds except {', '.join(sorted(VOLATILE_KEYS & set(first.config))) or 'nothing'}).

| key | value |
|---|---|
{config_rows}

## Files

{files_script}
{chr(10).join(f'- `{n}`: training log' for n in sub['logs'])}
- `submission.json`: metadata generated from the logs by `records/records_tool.py new`.
- `curves.png`: training loss and validation bpb of every seed.
"""
    (folder / "README.md").write_text(text, encoding="utf-8")


def plot_curves(runs: list[RunLog], out: Path) -> bool:
    """Training loss and validation bpb against step for every seed (matplotlib, Agg)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for r in runs:
        if r.train_points:
            xs, ys = zip(*r.train_points)
            ax1.plot(xs, ys, label=r.label, lw=1)
        vals = [(s, b) for s, _, b in r.val_points if b is not None]
        if vals:
            xs, ys = zip(*vals)
            ax2.plot(xs, ys, marker="o", ms=3, label=r.label)
        if r.score is not None and r.score.val_bpb is not None and r.steps is not None:
            ax2.scatter([r.steps], [r.score.val_bpb], marker="*", s=80, zorder=3)
    ax1.set(xlabel="step", ylabel="train loss (nats)", title="training loss")
    ax2.set(xlabel="step", ylabel="val bpb", title="validation bpb (star: scored metric)")
    last = max([s for r in runs for s, *_ in r.train_points + r.val_points] or [0])
    tails = ([y for r in runs for s, y in r.train_points if s >= 0.1 * last],
             [b for r in runs for s, _, b in r.val_points if b is not None and s >= 0.1 * last]
             + [r.score.val_bpb for r in runs if r.score is not None and r.score.val_bpb is not None])
    for ax, ys in zip((ax1, ax2), tails):
        if len(ys) > 1:  # zoom on the last 90% of steps: the first points would flatten the rest
            pad = 0.05 * (max(ys) - min(ys)) + 1e-3
            ax.set_ylim(min(ys) - pad, max(ys) + pad)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return True


def cmd_new(args) -> int:
    script_path = Path(args.script)
    if not script_path.is_file():
        return refuse(f"script {script_path} not found (give --script)")
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", args.date) or not re.fullmatch(r"[\w.+-]+", args.description):
        return refuse(f"--date {args.date!r} must be YYYY-MM-DD and --description {args.description!r} one word "
                       "of letters, digits, _ . + - (the folder is named DATE_DESCRIPTION)")
    missing = [p for p in [*args.logs, args.requirements] if p and not Path(p).is_file()]
    if missing:
        return refuse(f"not found: {', '.join(map(str, missing))}")
    if not args.blurb.strip():
        return refuse("--blurb is empty: submission.json and the README carry a one-paragraph summary of the method")
    script = script_path.read_bytes()
    readable = None
    packed_source = unpack_source(script)
    if packed_source is not None:  # a packed script given as --script: its readable source must sit beside it
        human = script_path.parent / HUMAN_NAME
        if not human.is_file():
            return refuse(f"{script_path} is packed and {human}, its readable source, is missing")
        readable = human.read_text(encoding="utf-8")
        if not packs_to(readable, packed_source):
            return refuse(f"{human} is not the source packed in {script_path}")
    elif args.pack:
        readable = script.decode("utf-8", errors="replace")
        script = pack_source(readable)
    runs = [parse_log(p) for p in args.logs]
    problems = []
    for r in runs:
        status, msg = verify_script(r, script, script_path.name)
        if status != "PASS":
            problems.append(msg)
        if r.score is None:
            problems.append(f"{r.path.name}: no final metric line (did the run finish?)")
        elif not (is_finite(r.score.val_bpb) and is_finite(r.score.val_loss)):
            problems.append(f"{r.path.name}: the score `{r.score.name}` is val_loss {r.score.val_loss} val_bpb "
                            f"{r.score.val_bpb} (line {r.score.lineno}): the run diverged; a record needs a finite score")
        partial = r.config.get("VAL_MAX_TOKENS")
        if partial is not None and norm_value(partial) not in (0.0, "0") and not args.allow_partial_val:
            problems.append(f"{r.path.name}: VAL_MAX_TOKENS={partial}: scored on part of the validation split, not "
                            "comparable with full-split records (--allow-partial-val for a test folder)")
    seeds = [seed_key(r) for r in runs]
    if len(set(seeds)) != len(seeds):
        problems.append(f"duplicate seeds among the logs: {seeds}")
    diff_keys = check_same_config(runs)
    if diff_keys and not args.allow_config_diff:
        problems.append("the logs were run with different configs (" + ", ".join(diff_keys)
                        + "); a multi-seed mean must come from one config (--allow-config-diff to override)")
    if problems:
        return refuse("\n  ".join(["refusing to build the record:"] + problems))
    folder = Path(args.out) if args.out else (Path(args.records_root) / f"track_{args.track}"
                                               / f"{args.date}_{args.description}")
    if folder.exists() and any(folder.iterdir()) and not args.force:
        return refuse(f"{folder} exists and is not empty (use --force to overwrite)")
    # Everything is written into a hidden folder beside the target and moved in place at the end:
    # a failure (a full disk, an unwritable place) leaves no half-written record behind.
    stage = folder.parent / f".{folder.name}.partial"
    shutil.rmtree(stage, ignore_errors=True)
    try:
        stage.mkdir(parents=True)
        final, folder = folder, stage
        if packed_source is not None:  # the packed file as given (its bytes are what the logs counted)
            shutil.copyfile(script_path, folder / "train_gpt.py")
            (folder / HUMAN_NAME).write_text(readable, encoding="utf-8")
        elif readable is not None:
            write_packed(readable, folder)
        else:
            shutil.copyfile(script_path, folder / "train_gpt.py")
        names = []
        for r in runs:
            name = f"train_seed{r.seed}.log" if r.seed is not None else r.path.name
            shutil.copyfile(r.path, folder / name)
            names.append(name)
        if args.requirements:
            shutil.copyfile(args.requirements, folder / "requirements.txt")
        sub = build_submission(runs, args, script, names)
        (folder / "submission.json").write_text(json.dumps(sub, indent=2) + "\n", encoding="utf-8")
        write_readme(folder, runs, sub, readable if readable is not None else script.decode("utf-8"))
        plotted = plot_curves(runs, folder / "curves.png")
        final.mkdir(parents=True, exist_ok=True)
        for f in stage.iterdir():
            f.replace(final / f.name)
        folder = final
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    print(f"created {folder}")
    for n in ["train_gpt.py", *([HUMAN_NAME] if readable is not None else []), *names, "submission.json",
              "README.md"] + (["requirements.txt"] if args.requirements else []):
        print(f"  {n}")
    print("  curves.png" if plotted else "  (no curves.png: matplotlib is not installed)")
    if readable is not None:
        print(f"train_gpt.py is packed: {len(script):,} counted bytes for {len(readable.encode()):,} readable "
              f"({HUMAN_NAME})")
    for r in runs:
        if r.code_bytes is not None and r.code_bytes != len(script):
            if readable is not None and r.code_bytes > len(script):
                print(f"note {r.label}: the log counts {r.code_bytes:,} code bytes, train_gpt.py has {len(script):,} "
                      "(the run executed the readable source; the packed file is the counted code)")
            elif readable is None and r.model_bytes is not None:  # a readable script: bytes_total counts it
                print(f"note {r.label}: the log counts {r.code_bytes:,} code bytes (the packed form), the folder's "
                      f"readable train_gpt.py has {len(script):,}: bytes_total counts the file ({r.model_bytes:,} + "
                      f"{len(script):,}); --pack commits the packed script the run counted")
            else:
                print(f"WARNING {r.label}: the log counts {r.code_bytes:,} code bytes, train_gpt.py has {len(script):,}")
        if r.config.get("VAL_MAX_TOKENS") not in (None, "0"):
            print(f"WARNING {r.label}: VAL_MAX_TOKENS={r.config['VAL_MAX_TOKENS']}: a partial validation split")
    print(f"val_bpb mean {fmt_num(sub['val_bpb'])}  val_loss mean {fmt_num(sub['val_loss'])}  "
          f"bytes_total {fmt_bytes(sub['bytes_total'])}  seeds {', '.join(map(str, sub['seeds']))}")
    sig = significance_from_args(args, runs)
    if isinstance(sig, SigTest):
        print(f"significance: gain {sig.gain:+.6f} (need >= {sig.margin:.6f}), {sig.test}, p = {sig.p:.3g}")
    elif isinstance(sig, str):
        print(f"WARNING significance not computed: {sig}")
    for r in runs:
        if r.total_bytes is not None and r.total_bytes > CAP_BYTES:
            print(f"WARNING {r.label}: total {r.total_bytes:,} bytes is over the {CAP_BYTES:,}-byte cap")
        if r.train_time_ms is not None and r.train_time_ms > 1000 * TRAIN_LIMIT_S and args.track == "10min_16mb":
            print(f"WARNING {r.label}: training took {fmt_s(r.train_time_ms)} (limit {TRAIN_LIMIT_S:.0f} s)")
    print(f"next: python records/records_tool.py validate {folder}")
    return 0

