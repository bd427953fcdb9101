"""Shared helpers: the bundled sample dataset and a tiny model config that trains on CPU in seconds."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"
sys.path.insert(0, str(REPO))

# Tiny model on the bundled sample: every test run of the script uses this, plus overrides.
TINY_ENV = {
    "DATA_PATH": str(SAMPLE),
    "TRAIN_GLOB": "sotu_train_*.bin",
    "VAL_GLOB": "sotu_val_*.bin",
    "TOKENIZER_PATH": str(SAMPLE / "sotu_1024_bpe.model"),
    "VOCAB_SIZE": "1024",     # the sample's tokenizer
    "NUM_LAYERS": "2",
    "LOOP_START": "0",        # the default's depth recurrence and parallel lanes, fitted to 2 blocks
    "LOOP_END": "1",
    "PARALLEL_START_LAYER": "1",
    "MODEL_DIM": "64",
    "NUM_HEADS": "2",
    "NUM_KV_HEADS": "1",
    "TRAIN_SEQ_LEN": "128",
    "TRAIN_BATCH_TOKENS": "4096",
    "ITERATIONS": "12",
    "WARMDOWN_ITERS": "4",
    "WARMUP_STEPS": "2",
    "MAX_WALLCLOCK_SECONDS": "0",
    "VAL_LOSS_EVERY": "0",
    "TRAIN_LOG_EVERY": "4",
    "VAL_MAX_TOKENS": "16384",
    "VAL_BATCH_SIZE": "8192",
    "XSA_LAST_N": "1",
    "EMA_DECAY": "0.5",      # a 12-step run: the default 0.997 would export the init weights
    "QAT_START_FRAC": "0.5",  # late QAT fires at step 6 of 12
    "AUTOCAST": "off",        # exact fp32 numbers; at this size bf16 autocast is slower than fp32 on CPU
    "COMPILE": "0",           # eager: a first CPU compile (about 90 s) dwarfs a 12-step run; compiled runs set 1
}



def compile_counting_graphs(model):
    """torch.compile(model) as the trainer does (fullgraph, static shapes), with a backend that
    records every graph dynamo builds and runs it eagerly: returns (compiled, graphs), graphs a
    list of (GraphModule, example_inputs). Dynamo's guards decide recompiles for real; resets
    dynamo first so earlier tests' graphs do not count."""
    import torch
    graphs = []

    def backend(gm, example_inputs):
        graphs.append((gm, example_inputs))
        return gm.forward

    torch._dynamo.reset()
    return torch.compile(model, backend=backend, dynamic=False, fullgraph=True), graphs

def clean_environ() -> dict:
    """The caller's environment without any variable the trainer would read."""
    env = {k: v for k, v in os.environ.items() if not k.isupper() or k in ("PATH", "HOME", "LANG", "TMPDIR", "PYTHONPATH")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_script(tmp_path: Path, overrides: dict | None = None, nproc: int = 1, timeout: int = 600,
               script: Path = REPO / "train_gpt.py", check: bool = True) -> subprocess.CompletedProcess:
    env = clean_environ() | TINY_ENV | {"OUT_DIR": str(tmp_path), "RUN_ID": "run"} | (overrides or {})
    # A fixed thread count: runs a test compares must sum in the same order, and torch otherwise
    # takes its thread count from the CPUs it sees at start, which a CI sandbox can vary between
    # processes (one thread against two moves 1.4e-4 of a tiny artifact's weights).
    env.setdefault("OMP_NUM_THREADS", "2")
    if nproc == 1:
        cmd = [sys.executable, str(script)]
    else:
        env["OMP_NUM_THREADS"] = "1"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", str(script)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=tmp_path)
    if check and proc.returncode != 0:
        raise AssertionError(f"train_gpt.py failed (rc={proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def metric(log_text: str, name: str, key: str = "val_bpb") -> float:
    """A value from the first log line whose first word is `name` (a regex)."""
    m = re.search(rf"^{name} .*?\b{key}:(-?[0-9.]+)", log_text, re.M)
    assert m, f"no {name} {key} line in log"
    return float(m.group(1))


@pytest.fixture(scope="session")
def tg():
    import train_gpt
    return train_gpt
