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
from .scripts import env_defaults, norm_value, unpack_source

# keys never replayed from the log: the rescore's own run identity and output place
_NOT_REPLAYED = VOLATILE_KEYS | {"OUT_DIR", "EVAL_ONLY", "DRY_RUN"}
_LOCAL = ("DATA_PATH", "TOKENIZER_PATH", "TRAIN_GLOB", "VAL_GLOB")


def rescore_env(run: RunLog, artifact: Path, out_dir: Path, defaults: dict) -> dict:
    """The logged run's configuration where it differs from the script's defaults (the log dumps
    every knob, and replaying a default can set one of two exclusive knobs), the data paths of
    this machine where the environment sets them, and EVAL_ONLY pointing at the artifact."""
    env = dict(os.environ)
    for key, value in run.config.items():
        if key in _NOT_REPLAYED or (key in _LOCAL and key in os.environ):
            continue
        if key in defaults and norm_value(defaults[key]) == norm_value(value):
            env.pop(key, None)  # the default, as in the logged run
            continue
        env[key] = value
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
                  rep: Report, timeout_s: float = 3600.0) -> None:
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
    source = unpack_source(data) or data.decode("utf-8", errors="replace")
    defaults = env_defaults(source)
    with tempfile.TemporaryDirectory(prefix="rescore_") as tmp:
        cmd = [*shlex.split(launcher), str(script.resolve())]
        print(f"  rescoring {artifact} as {run.label}: {' '.join(cmd)} with EVAL_ONLY and the config of {run.path.name}",
              flush=True)
        try:
            proc = subprocess.run(cmd, cwd=folder, env=rescore_env(run, artifact, Path(tmp), defaults), capture_output=True,
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
    same = (got.name, got.fields.get("val_loss"), got.fields.get("val_bpb")) == \
        (old.name, old.fields.get("val_loss"), old.fields.get("val_bpb"))
    msg = (f"rescore {run.label}: {artifact.name} scores `{got.name}` val_loss {got.fields.get('val_loss')} val_bpb "
           f"{got.fields.get('val_bpb')}; {run.path.name} reports `{old.name}` val_loss {old.fields.get('val_loss')} "
           f"val_bpb {old.fields.get('val_bpb')}")
    rep.add("PASS" if same else "FAIL", msg + (" (identical to the printed digits)" if same else ""))
