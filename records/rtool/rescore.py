"""validate --rescore: score a record's artifact again with the folder's own script (the trainer's
EVAL_ONLY mode) and compare the score with the one its log reports."""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from .common import *
from .logs import *
from .scripts import env_defaults, norm_value, readable_script

# keys never replayed from the log: the rescore's own run identity and output place
_NOT_REPLAYED = VOLATILE_KEYS | {"OUT_DIR", "EVAL_ONLY", "DRY_RUN"}
_LOCAL = ("DATA_PATH", "TOKENIZER_PATH", "TRAIN_GLOB", "VAL_GLOB")


# The repository this tool belongs to: a run launched from its root logs paths relative to it
# (the README's `DATA_PATH=data/sample`), and the rescore runs inside the record folder.
REPO_ROOT = Path(__file__).resolve().parents[2]
_PATHS = ("DATA_PATH", "TOKENIZER_PATH")
# Compiled and eager kernels sum in different orders: a compiled run of the CPU quick start
# re-scored eagerly moved val_bpb by 3.8e-5 (1.77188788 logged, 1.77192578 re-scored).
RESCORE_TOLERANCE_BPB = 1e-4


def resolve_data_paths(run: RunLog, defaults: dict) -> tuple[dict, list[str], list[str]]:
    """({key: absolute path}, notes, problems) for DATA_PATH and TOKENIZER_PATH: the environment's
    value when set, else the logged one (else the script default); a relative path is tried
    against the current directory, then the repository root. A path found nowhere is a problem
    that names the key, the places tried and the fix."""
    paths, notes, problems = {}, [], []
    for key in _PATHS:
        if key in os.environ:
            raw, origin = os.environ[key], "the environment"
        elif key in run.config:
            raw, origin = run.config[key], f"{run.path.name}"
        elif key in defaults:
            raw, origin = defaults[key], "the script default"
        else:
            continue
        p = Path(raw).expanduser()
        tried = [p] if p.is_absolute() else [Path.cwd() / p, REPO_ROOT / p]
        hit = next((t for t in tried if t.exists()), None)
        if hit is None:
            problems.append(f"{key}={raw} (from {origin}) is not at {' or '.join(str(t) for t in tried)}; "
                            f"set {key}=<path> in the environment to where it is on this machine")
            continue
        paths[key] = str(hit.resolve())
        notes.append(f"{key}={paths[key]} ({origin}: {raw})")
    return paths, notes, problems


def rescore_env(run: RunLog, artifact: Path, out_dir: Path, defaults: dict, paths: dict | None = None) -> dict:
    """The logged run's configuration where it differs from the script's defaults (the log dumps
    every knob, and replaying a default can set one of two exclusive knobs), the data paths of
    this machine where the environment sets them, the resolved absolute data and tokenizer
    paths (`paths`), and EVAL_ONLY pointing at the artifact."""
    env = dict(os.environ)
    for key, value in run.config.items():
        if key in _NOT_REPLAYED or (key in _LOCAL and key in os.environ):
            continue
        if key in defaults and norm_value(defaults[key]) == norm_value(value):
            env.pop(key, None)  # the default, as in the logged run
            continue
        env[key] = value
    env.update(paths or {})
    env.update(EVAL_ONLY=str(artifact.resolve()), OUT_DIR=str(out_dir), RUN_ID=f"rescore_{seed_key(run)}")
    return env


def pick_run(runs: list[RunLog], artifact: Path, seed: str | None) -> RunLog | str:
    """The log the artifact belongs to: --rescore-seed, else the log whose RUN_ID names the
    artifact file (`<RUN_ID>.<format>`), else the only log."""
    if seed is not None:
        hit = [r for r in runs if seed_key(r) == str(seed)]
        return hit[0] if hit else f"no log for seed {seed} (logs: {', '.join(seed_key(r) for r in runs)})"
    stem = artifact.name.split(".", 1)[0]
    hit = [r for r in runs if stem in (r.run_id, r.config.get("RUN_ID"))]
    if len(hit) == 1:
        return hit[0]
    if len(runs) == 1:
        return runs[0]
    return (f"cannot tell which seed wrote {artifact.name} (no log's RUN_ID is {stem!r}); "
            "give --rescore-seed")


def check_rescore(folder: Path, runs: list[RunLog], artifact: Path, seed: str | None, launcher: str,
                  rep: Report, timeout_s: float = 3600.0, tolerance: float = RESCORE_TOLERANCE_BPB) -> None:
    if not artifact.is_file():
        rep.add("FAIL", f"rescore: artifact {artifact} not found")
        return
    run = pick_run(runs, artifact, seed)
    if isinstance(run, str):
        rep.add("FAIL", f"rescore: {run}")
        return
    if run.fmt != "ours" or not run.config or run.final_score is None:
        rep.add("UNVERIFIED", f"rescore {run.label}: {run.path.name} has no `config:` lines and `final_score_exact`; "
                              "the rescore replays our trainer's logged configuration")
        return
    script = folder / "train_gpt.py"
    data = script.read_bytes()
    defaults = env_defaults(readable_script(data))
    paths, notes, problems = resolve_data_paths(run, defaults)
    if problems:
        rep.add("FAIL", f"rescore {run.label}: " + "; ".join(problems))
        return
    print(f"  rescore data paths: {'; '.join(notes)}", flush=True)
    with tempfile.TemporaryDirectory(prefix="rescore_") as tmp:
        cmd = [*shlex.split(launcher), str(script.resolve())]
        print(f"  rescoring {artifact} as {run.label}: {' '.join(cmd)} with EVAL_ONLY and the config of {run.path.name}",
              flush=True)
        try:
            proc = subprocess.run(cmd, cwd=folder, env=rescore_env(run, artifact, Path(tmp), defaults, paths), capture_output=True,
                                  text=True, timeout=timeout_s)
        except (OSError, subprocess.TimeoutExpired) as e:
            rep.add("FAIL", f"rescore {run.label}: the trainer did not run ({e})")
            return
        log_path = Path(tmp) / f"rescore_{seed_key(run)}.txt"
        if proc.returncode != 0 or not log_path.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            rep.add("FAIL", f"rescore {run.label}: the trainer exited {proc.returncode}: {tail[0]}")
            return
        new = parse_log(log_path)
    old, got = run.final_score, new.final_score
    if got is None:
        rep.add("FAIL", f"rescore {run.label}: the EVAL_ONLY run printed no final_score_exact")
        return
    a_loss, a_bpb = old.fields.get("val_loss"), old.fields.get("val_bpb")
    b_loss, b_bpb = got.fields.get("val_loss"), got.fields.get("val_bpb")
    msg = (f"rescore {run.label}: {artifact.name} scores `{got.name}` val_loss {b_loss} val_bpb {b_bpb}; "
           f"{run.path.name} reports `{old.name}` val_loss {a_loss} val_bpb {a_bpb}")
    if (got.name, b_loss, b_bpb) == (old.name, a_loss, a_bpb):
        rep.add("PASS", msg + " (identical to the printed digits)")
        return
    try:
        d_bpb = abs(float(b_bpb) - float(a_bpb))
        # val_loss in nats moves with val_bpb by the run's own loss/bpb ratio
        d_loss = abs(float(b_loss) - float(a_loss)) / max(float(a_loss) / float(a_bpb), 1e-12)
    except (TypeError, ValueError, ZeroDivisionError):
        rep.add("FAIL", msg + " (a score is missing)")
        return
    within = got.name == old.name and max(d_bpb, d_loss) <= tolerance
    rep.add("PASS" if within else "FAIL",
            msg + f" (differs by {d_bpb:.2e} bpb; tolerance {tolerance:g} bpb: compiled and eager kernels "
                  f"sum in different orders{'' if got.name == old.name else '; the metric differs'})")
