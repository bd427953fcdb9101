"""Benchmark train_gpt.py configurations: speed, memory, MFU, score, artifact size, over seeds.

Each run is one subprocess of the unmodified script (`python train_gpt.py`, or
`python -m torch.distributed.run --standalone --nproc_per_node=N train_gpt.py`), configured
only through environment variables. The metrics are read back from the run's own log
(`OUT_DIR/<RUN_ID>.txt`), plus the child's peak RSS measured here. Results go to
`--out DIR` (default `bench/results/<timestamp>/`): the run logs, `results.json` and
`summary.md` (rewritten after every run, so an interrupted session keeps what it measured).

  python bench/benchmark.py --dataset proxy --steps 60 --seeds 1337,42 \\
      --config core:NUM_LAYERS=4,MODEL_DIM=128,NUM_HEADS=4,NUM_KV_HEADS=2

Importing this module does no work and does not import torch; the entry point is
`main(argv) -> int` (0: every run succeeded, 1: at least one run failed, 2: usage error).

Metric definitions (see bench/README.md for the full table):
  ms_per_step     steady-state step time: (train_time_last - train_time_first) /
                  (step_last - step_first) over the log's step lines and the final
                  `train_time_total_ms ... steps:` line; the first logged line (step 1) is the
                  base, so the first (slow) step is excluded. Falls back to the overall
                  average when the log has a single point.
  tokens_per_s    TRAIN_BATCH_TOKENS * 1000 / ms_per_step (global, all ranks together).
  flops_per_token 6 * N_matmul + 12 * L * d_attn * T  (training = forward + backward).
                  N_matmul = weights of every matrix multiply: the block matrices (q, k, v,
                  attention out, MLP in, MLP out) plus the output head (V * d, counted once
                  also when it is tied to the embedding). The embedding lookup is a gather,
                  not a matmul, and is not counted; nor are norms, RoPE, softcap or the loss.
                  12 * L * d_attn * T counts the attention score and value matmuls
                  (QK^T and AV: 2 * 2 * T * d_attn forward per token and layer, x3 for
                  forward + backward) without discounting the causal mask (the PaLM
                  convention), with d_attn = NUM_HEADS * head_dim = MODEL_DIM, T = TRAIN_SEQ_LEN.
  mfu             flops_per_token * tokens_per_s / (n_devices * peak), peak bf16 dense
                  TFLOP/s from PEAK_TFLOPS by device name, or --peak-tflops. GPU runs only,
                  unless --peak-tflops is given.
  peak memory     GPU: the log's `peak_memory_allocated_mib` (torch.cuda.max_memory_allocated
                  on rank 0). Always also peak_rss_mib: ru_maxrss of the run's process tree from
                  os.wait4 on the child (Linux: the largest single process of the tree -- the
                  launcher or one rank -- not a sum over ranks).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import math
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SCRIPT = REPO / "train_gpt.py"
SEPARATOR = "=" * 100

# --dataset presets: the data variables of train_gpt.py. Paths are absolute so the runs do not
# depend on the working directory.
DATASETS = {
    "sample": {
        "DATA_PATH": str(REPO / "data" / "sample"),
        "TRAIN_GLOB": "sotu_train_*.bin",
        "VAL_GLOB": "sotu_val_*.bin",
        "TOKENIZER_PATH": str(REPO / "data" / "sample" / "sotu_1024_bpe.model"),
    },
    "proxy": {  # ../shared/proxy beside the checkout; never copied into the repository
        "DATA_PATH": str(REPO.parent / "shared" / "proxy"),
        "TRAIN_GLOB": "proxy_train_*.bin",
        "VAL_GLOB": "proxy_val_*.bin",
        "TOKENIZER_PATH": str(REPO.parent / "shared" / "proxy" / "proxy_1024_bpe.model"),
    },
    "fineweb": {  # the script's defaults, as written by data/cached_challenge_fineweb.py
        "DATA_PATH": str(REPO / "data" / "datasets" / "fineweb10B_sp1024"),
        "TRAIN_GLOB": "fineweb_train_*.bin",
        "VAL_GLOB": "fineweb_val_*.bin",
        "TOKENIZER_PATH": str(REPO / "data" / "tokenizers" / "fineweb_1024_bpe.model"),
    },
}

# Peak dense bf16 tensor-core TFLOP/s (no sparsity) by device-name pattern; first match wins.
PEAK_TFLOPS = (
    (r"H100.*PCIe", 756.0),
    (r"H100.*NVL", 835.0),
    (r"GH200|H100|H800", 989.0),  # H100 SXM5 (the name "NVIDIA H100 80GB HBM3")
    (r"H200", 989.0),
    (r"A100", 312.0),
)

# Inherited variables that a launcher or an outer torchrun sets; a child must not see them.
LAUNCHER_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK",
                 "ROLE_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID")

NAME_RE = re.compile(r"^[A-Za-z0-9_+@-]+$")  # becomes RUN_ID and file names; no '.' (glob prefix)
KEY_RE = re.compile(r"^[A-Z_][A-Z0-9_]*$")


# ----------------------------------------------------------------------------- log parsing

def _num(s: str):
    v = float(s)
    return int(v) if re.fullmatch(r"-?\d+", s) else v


def _kv(line: str) -> dict:
    """`a:1 b:2.5ms c:x` -> {a: 1, b: 2.5, c: 'x'} (a trailing 'ms' unit is dropped)."""
    out = {}
    for tok in line.split():
        if ":" not in tok:
            continue
        k, v = tok.split(":", 1)
        m = re.fullmatch(r"(-?[0-9.]+(?:e[-+]?\d+)?)(ms)?", v)
        out[k] = _num(m.group(1)) if m else v
    return out


def parse_log(text: str) -> dict:
    """Parse one train_gpt.py log (the part after the last line of 100 '=': the source above it
    is skipped). Unknown lines are ignored; missing lines leave their keys out."""
    lines = text.splitlines()
    start = max((i for i, l in enumerate(lines) if l == SEPARATOR), default=-1) + 1
    p: dict = {"config": {}, "train_steps": [], "val_steps": [], "finals": {}}
    for line in lines[start:]:
        if line.startswith("config:") and "=" in line:
            k, v = line[len("config:"):].split("=", 1)
            p["config"][k] = v
        elif line.startswith("code_sha256:"):
            kv = _kv(line)
            p["code_sha256"], p["code_bytes_header"] = kv.get("code_sha256"), kv.get("code_bytes")
        elif line.startswith("python:"):
            m = re.match(r"python:(\S+) torch:(\S+) cuda:(\S+)", line)
            if m:
                p["python"], p["torch"], p["cuda"] = m.groups()
        elif line.startswith("device:"):
            m = re.match(r"device:(.*?) count:(\d+)(?: threads:(\d+))?\s*$", line)
            if m:
                p["device"], p["device_count"] = m.group(1), int(m.group(2))
                if m.group(3):
                    p["threads"] = int(m.group(3))
        elif line.startswith("model_params:"):
            kv = _kv(line)
            p["model_params"] = kv.pop("model_params")
            p["params_by_role"] = {k: v for k, v in kv.items() if isinstance(v, int)}
        elif line.startswith("world_size:"):
            p.update(_kv(line))
        elif line.startswith("warmup_steps:") and "warmup_time:" in line:
            p["warmup_time_ms"] = _kv(line)["warmup_time"]
        elif line.startswith("eval_prewarm_time:"):
            p["eval_prewarm_ms"] = _kv(line)["eval_prewarm_time"]
        elif line.startswith("artifact:") and "export_time:" in line:
            p["export_ms"] = _kv(line)["export_time"]
        elif line.startswith("step:") and "train_loss:" in line:
            kv = _kv(line)
            kv["step"] = int(str(kv["step"]).split("/")[0]) if isinstance(kv["step"], str) else kv["step"]
            p["train_steps"].append({k: kv[k] for k in ("step", "train_loss", "train_time", "step_avg", "tok_s") if k in kv})
        elif line.startswith("step:") and "val_bpb:" in line:
            kv = _kv(line)
            p["val_steps"].append(dict(step=int(str(kv["step"]).split("/")[0]), val_loss=kv.get("val_loss"),
                                       val_bpb=kv.get("val_bpb"), train_time=kv.get("train_time")))
        elif line.startswith("stopping_early:"):
            p["stopping_early"] = line.split(":", 1)[1].split()[0]
        elif line.startswith("peak_memory_allocated_mib:"):
            kv = _kv(line)
            p["peak_gpu_mem_alloc_mib"] = kv.get("peak_memory_allocated_mib")
            p["peak_gpu_mem_reserved_mib"] = kv.get("peak_memory_reserved_mib")
        elif line.startswith("final_score_exact "):
            kv = _kv(line)
            p["score"] = dict(metric=kv.get("metric"), val_loss=kv.get("val_loss"), val_bpb=kv.get("val_bpb"))
        elif line.startswith("final_") and " val_bpb:" in line:
            name, rest = line.split(" ", 1)
            kv = _kv(rest)
            if name.endswith("_exact"):
                entry = p["finals"].setdefault(name[:-len("_exact")], {})
                entry.update(kv)  # val_loss, val_bpb and any qualifiers (stride:, seq_len:, rank:, ...)
            else:
                entry = p["finals"].setdefault(name, {})
                for k_src, k_dst in (("eval_time", "eval_ms"), ("tokens", "tokens"), ("bytes", "bytes")):
                    if k_src in kv:
                        entry[k_dst] = kv[k_src]
        elif line.startswith("code_bytes:") and "total_bytes:" in line:
            kv = _kv(line)
            p.update(code_bytes=kv.get("code_bytes"), model_bytes=kv.get("model_bytes"), total_bytes=kv.get("total_bytes"))
        elif line.startswith("train_time_total_ms:"):
            kv = _kv(line)
            p.update(train_time_total_ms=kv.get("train_time_total_ms"), eval_time_total_ms=kv.get("eval_time_total_ms"),
                     steps=kv.get("steps"))
        elif line.startswith("error:"):
            p["error"] = line[len("error:"):].strip()
    return p


def steady_step_ms(parsed: dict) -> tuple[float | None, str]:
    """Steady-state ms/step: the slope of cumulative train_time over step, from the first
    logged step line to the last point (the final totals line when present), so the first
    (slow) step is excluded. Returns (value, basis)."""
    pts = [(s["step"], s["train_time"]) for s in parsed.get("train_steps", []) if "train_time" in s]
    if parsed.get("steps") and parsed.get("train_time_total_ms") is not None:
        pts.append((parsed["steps"], parsed["train_time_total_ms"]))
    pts = sorted(dict(pts).items())
    if len(pts) >= 2 and pts[-1][0] > pts[0][0]:
        (s0, t0), (s1, t1) = pts[0], pts[-1]
        return (t1 - t0) / (s1 - s0), f"steps {s0}->{s1}"
    if parsed.get("steps"):
        return parsed["train_time_total_ms"] / parsed["steps"], "overall average (single point)"
    return None, "no step data"


# ----------------------------------------------------------------------------- FLOPs / MFU

def _cfg_get(cfg: dict, key: str, default, typ):
    v = cfg.get(key, default)
    if typ is bool:
        return str(v) in ("1", "True", "true")
    return typ(v)


MATRIX_ROLES = ("matrix", "attn", "mlp", "proj")  # train_gpt.py's Muon roles (old and new names)


def model_flops(cfg: dict, params_by_role: dict | None = None) -> dict:
    """Parameter and FLOP counts of train_gpt.py's GPT from its resolved config (the log's
    `config:` lines; missing keys take the core defaults below). N_matmul comes from the log's
    per-role parameter counts when given (every Muon matrix: attention, MLP, projections such as
    the BigramHash one) plus the V x d output head; otherwise from the config formula for the
    core architecture: L * (d*h*hd + 2*d*h_kv*hd + h*hd*d + 2*d*hidden) + V*d. See the module
    docstring for the FLOPs formula."""
    L = _cfg_get(cfg, "NUM_LAYERS", 9, int)
    d = _cfg_get(cfg, "MODEL_DIM", 512, int)
    h = _cfg_get(cfg, "NUM_HEADS", 8, int)
    h_kv = _cfg_get(cfg, "NUM_KV_HEADS", 4, int)
    hidden = int(_cfg_get(cfg, "MLP_MULT", 2.0, float) * d)
    V = _cfg_get(cfg, "VOCAB_SIZE", 1024, int)
    T = _cfg_get(cfg, "TRAIN_SEQ_LEN", 1024, int)
    tied = _cfg_get(cfg, "TIE_EMBEDDINGS", True, bool)
    hd = d // h
    per_layer = d * h * hd + 2 * d * h_kv * hd + h * hd * d + 2 * d * hidden
    formula_matmul = L * per_layer + V * d                     # block matrices + output head
    scalars = L * (h + 4 * d) + min(L // 2, L - L // 2) * d    # q_gain, attn/mlp scale, resid_mix; skips
    formula_total = formula_matmul + (0 if tied else V * d) + scalars  # tied: the head is the embedding
    roles = params_by_role or {}
    if any(r in roles for r in MATRIX_ROLES):
        matmul = sum(roles.get(r, 0) for r in MATRIX_ROLES) + roles.get("head", V * d)
        source = "log role counts (" + "+".join(r for r in MATRIX_ROLES if r in roles) + " + head V*d)"
    else:
        matmul, source = formula_matmul, "config formula (core architecture)"
    attn = 12 * L * h * hd * T
    return dict(matmul_params=matmul, matmul_params_source=source, formula_matmul_params=formula_matmul,
                formula_total_params=formula_total, attn_flops_per_token=attn, flops_per_token=6 * matmul + attn)


def peak_tflops_for(device: str | None) -> float | None:
    for pattern, tf in PEAK_TFLOPS:
        if device and re.search(pattern, device, re.I):
            return tf
    return None


# ----------------------------------------------------------------------------- statistics

def stats(values: list) -> dict:
    """mean, sample std (n-1; None for one value), min, max and n of the finite numbers."""
    xs = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
    if not xs:
        return dict(n=0, mean=None, std=None, min=None, max=None)
    return dict(n=len(xs), mean=statistics.fmean(xs), std=statistics.stdev(xs) if len(xs) > 1 else None,
                min=min(xs), max=max(xs))


def interval_step_ms(parsed: dict) -> list[float]:
    """ms/step of each interval between consecutive logged points (step lines, then the final
    totals line), starting at the first logged step: the spread shows noise or drift."""
    pts = [(s["step"], s["train_time"]) for s in parsed.get("train_steps", []) if "train_time" in s]
    if parsed.get("steps") and parsed.get("train_time_total_ms") is not None:
        pts.append((parsed["steps"], parsed["train_time_total_ms"]))
    pts = sorted(dict(pts).items())
    return [(t1 - t0) / (s1 - s0) for (s0, t0), (s1, t1) in zip(pts, pts[1:]) if s1 > s0]


def run_metrics(parsed: dict, peak_rss_mib: float | None, wall_s: float, peak_tflops: float | None) -> dict:
    """The flat numeric metrics of one run (None where the log lacks the line)."""
    m: dict = {}
    cfg = parsed.get("config", {})
    ms, basis = steady_step_ms(parsed)
    batch = int(cfg["TRAIN_BATCH_TOKENS"]) if "TRAIN_BATCH_TOKENS" in cfg else None
    n_dev = parsed.get("world_size") or parsed.get("device_count") or 1
    m["steps"] = parsed.get("steps")
    m["ms_per_step"] = ms
    iv = interval_step_ms(parsed)
    m["ms_per_step_median_interval"] = statistics.median(iv) if len(iv) >= 2 else None
    m["ms_per_step_incl_first"] = (parsed["train_time_total_ms"] / parsed["steps"]
                                   if parsed.get("steps") else None)
    m["tokens_per_s"] = batch * 1000 / ms if batch and ms else None
    m["tokens_per_s_per_device"] = m["tokens_per_s"] / n_dev if m["tokens_per_s"] else None
    m["train_time_ms"] = parsed.get("train_time_total_ms")
    m["warmup_time_ms"] = parsed.get("warmup_time_ms")
    m["eval_time_ms"] = parsed.get("eval_time_total_ms")
    m["eval_prewarm_ms"] = parsed.get("eval_prewarm_ms")
    m["export_ms"] = parsed.get("export_ms")
    sliding = [v for k, v in parsed.get("finals", {}).items() if k.endswith("_sliding_window") and "eval_ms" in v]
    m["sliding_eval_ms"] = sliding[0]["eval_ms"] if sliding else None
    m["peak_gpu_mem_alloc_mib"] = parsed.get("peak_gpu_mem_alloc_mib")
    m["peak_gpu_mem_reserved_mib"] = parsed.get("peak_gpu_mem_reserved_mib")
    m["peak_rss_mib"] = peak_rss_mib
    m["model_params"] = parsed.get("model_params")
    m["flops_per_token"] = m["model_tflops"] = m["mfu"] = None
    if cfg:
        f = model_flops(cfg, parsed.get("params_by_role"))
        m["flops_per_token"] = f["flops_per_token"]
        if m["tokens_per_s"]:
            m["model_tflops"] = f["flops_per_token"] * m["tokens_per_s"] / 1e12
            on_gpu = parsed.get("device") not in (None, "cpu")
            peak = peak_tflops if peak_tflops else (peak_tflops_for(parsed.get("device")) if on_gpu else None)
            if peak:
                m["mfu"] = m["model_tflops"] / (peak * n_dev)
    m["final_train_loss"] = parsed["train_steps"][-1].get("train_loss") if parsed.get("train_steps") else None
    pre = parsed.get("finals", {}).get("final_prequant", {})
    m["val_bpb_prequant"], m["val_loss_prequant"] = pre.get("val_bpb"), pre.get("val_loss")
    score = parsed.get("score", {})
    m["val_bpb_score"], m["val_loss_score"] = score.get("val_bpb"), score.get("val_loss")
    for name, e in sorted(parsed.get("finals", {}).items()):
        for k in ("val_bpb", "val_loss", "eval_ms"):
            if e.get(k) is not None:
                m[f"{name}.{k}"] = e[k]
    for k in ("code_bytes", "model_bytes", "total_bytes"):
        m[k] = parsed.get(k)
    m["wall_s"] = wall_s
    return m


def run_info(parsed: dict, steady_basis: str) -> dict:
    """Non-numeric facts of one run from its log: environment and launch shape."""
    keys = ("python", "torch", "cuda", "device", "device_count", "threads", "code_sha256", "world_size",
            "grad_accum_steps", "micro_batch_seqs", "compile", "autocast", "stopping_early", "error")
    info = {k: parsed[k] for k in keys if k in parsed}
    info["ms_per_step_basis"] = steady_basis
    if parsed.get("score"):
        info["score_metric"] = parsed["score"].get("metric")
    cfg = parsed.get("config", {})
    if cfg:
        f = model_flops(cfg, parsed.get("params_by_role"))
        info["matmul_params"], info["matmul_params_source"] = f["matmul_params"], f["matmul_params_source"]
        info["attn_flops_per_token"] = f["attn_flops_per_token"]
        if parsed.get("model_params") is not None and not parsed.get("params_by_role"):
            # no role counts in the log: warn when the core formula does not explain the model
            info["param_formula_matches_log"] = f["formula_total_params"] == parsed["model_params"]
    if parsed.get("params_by_role"):
        info["params_by_role"] = parsed["params_by_role"]
    if parsed.get("finals"):
        info["finals"] = parsed["finals"]
    on_gpu = parsed.get("device") not in (None, "cpu")
    info["peak_memory_source"] = ("GPU: log peak_memory_allocated_mib (rank 0); host: wait4 ru_maxrss" if on_gpu
                                  else "CPU: wait4 ru_maxrss of the child process tree (largest single process)")
    return info


# ----------------------------------------------------------------------------- environment

def _git(*args: str) -> str | None:
    try:
        r = subprocess.run(["git", "--no-optional-locks", "-C", str(REPO), *args], capture_output=True, text=True,
                           timeout=20)
        return r.stdout.strip() if r.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def host_environment(script: Path) -> dict:
    cpu_model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    porcelain = _git("status", "--porcelain", "--untracked-files=no")
    try:
        rel = str(script.resolve().relative_to(REPO))
    except ValueError:
        rel = None
    return dict(
        hostname=socket.gethostname(), platform=platform.platform(), cpu_model=cpu_model or platform.processor() or None,
        cpu_count=os.cpu_count(), cpu_affinity=affinity, benchmark_python=platform.python_version(),
        git_commit=_git("rev-parse", "HEAD"), git_dirty=None if porcelain is None else bool(porcelain),
        script=str(script), script_modified=(None if porcelain is None or rel is None
                                             else any(l[3:] == rel for l in porcelain.splitlines())),
        script_sha256=hashlib.sha256(script.read_bytes()).hexdigest() if script.is_file() else None,
    )


def trainer_variables(script: Path) -> tuple[set, tuple]:
    """The variable names train_gpt.py reads or recognises (its Config fields and its table of
    published records' names), and the first words of its field names (TRAIN_, MUON_, ...),
    from its source (no import). A shell variable with one of those first words is likely a
    typo of a knob, which the trainer refuses."""
    try:
        src = script.read_text(encoding="utf-8")
    except OSError:
        return set(), ()
    names = {m.upper() for m in re.findall(r"^\s+(\w+)\s*:\s*\w+\s*=\s*knob\(", src, re.M)}
    table = re.search(r"^RECORD_NAMES\s*=\s*\{(.*?)^\}", src, re.S | re.M)
    if table:
        names |= set(re.findall(r'^\s+"([A-Z][A-Z0-9_]*)"\s*:', table.group(1), re.M))
    prefixes = tuple(sorted({n.split("_")[0] + "_" for n in names if "_" in n}))
    return names, prefixes


def child_base_environ(script: Path) -> tuple[dict, list]:
    """This process's environment minus anything the trainer would read or refuse (a stray
    NUM_LAYERS in the shell must not change a benchmark) and minus launcher variables."""
    names, prefixes = trainer_variables(script)
    env, dropped = {}, []
    for k, v in os.environ.items():
        if k in names or (prefixes and k.startswith(prefixes)) or k in LAUNCHER_VARS:
            dropped.append(k)
        else:
            env[k] = v
    env["PYTHONUNBUFFERED"] = "1"
    return env, sorted(dropped)


# ----------------------------------------------------------------------------- CLI parsing

def parse_assignments(text: str, what: str) -> dict:
    """`A=1,B=x,y,C=2` -> {A: '1', B: 'x,y', C: '2'}: a comma starts a new pair only when an
    UPPER_CASE name and '=' follow it, so values may contain commas."""
    out = {}
    if not text:
        return out
    for part in re.split(r",(?=[A-Z_][A-Z0-9_]*=)", text):
        if "=" not in part:
            raise ValueError(f"{what}: {part!r} is not KEY=VALUE")
        k, v = part.split("=", 1)
        if not KEY_RE.match(k):
            raise ValueError(f"{what}: {k!r} is not an environment variable name (UPPER_CASE)")
        out[k] = v
    return out


def _env_value(v) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, (int, float, str)):
        return str(v)
    raise ValueError(f"config values must be strings, numbers or booleans, got {v!r}")


def load_configs(specs: list[str], files: list[str]) -> dict[str, dict]:
    configs: dict[str, dict] = {}

    def add(name: str, env: dict, where: str):
        if not NAME_RE.match(name):
            raise ValueError(f"{where}: config name {name!r} may use only letters, digits, '_', '+', '@', '-'")
        if name in configs:
            raise ValueError(f"{where}: config {name!r} is defined twice")
        configs[name] = env

    for path in files:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"--configs {path}: {e}") from None
        if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
            raise ValueError(f"--configs {path}: expected a JSON object mapping name -> {{ENV: value}}")
        for name, env in data.items():
            for k in env:
                if not KEY_RE.match(k):
                    raise ValueError(f"--configs {path}: {name}: {k!r} is not an environment variable name")
            add(name, {k: _env_value(v) for k, v in env.items()}, f"--configs {path}")
    for spec in specs:
        name, _, rest = spec.partition(":")
        add(name, parse_assignments(rest, f"--config {spec}"), f"--config {spec}")
    return configs


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="bench/benchmark.py",
        description="Run train_gpt.py configurations (fixed steps or fixed wallclock, over seeds) and record "
                    "tokens/s, ms/step, peak memory, MFU, val_bpb before/after export, artifact bytes, eval and "
                    "warmup time and the exact environment as results.json + summary.md.",
        epilog="Env precedence (low to high): inherited environment (minus every variable train_gpt.py reads), "
               "--dataset, --env, --steps/--wallclock, the config's overrides, then SEED (from --seeds), RUN_ID and "
               "OUT_DIR set by the benchmark. Exit status: 0 all runs ok, 1 some run failed, 2 usage error.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", action="append", default=[], metavar="NAME[:K=V,K=V...]",
                    help="a named configuration: env overrides on top of the base env (repeatable)")
    ap.add_argument("--configs", action="append", default=[], metavar="FILE.json",
                    help='JSON file {"name": {"ENV": value, ...}, ...} (repeatable)')
    ap.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                    help="base environment for every run (repeatable)")
    ap.add_argument("--dataset", choices=sorted(DATASETS),
                    help="fill DATA_PATH/TRAIN_GLOB/VAL_GLOB/TOKENIZER_PATH: sample = data/sample, proxy = "
                         "../shared/proxy, fineweb = data/datasets/fineweb10B_sp1024 (the script defaults)")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--steps", type=int, metavar="N", help="fixed steps: ITERATIONS=N MAX_WALLCLOCK_SECONDS=0")
    mode.add_argument("--wallclock", type=float, metavar="SECONDS", help="fixed training time: MAX_WALLCLOCK_SECONDS")
    ap.add_argument("--seeds", metavar="S1,S2,...", help="run every config once per seed (sets SEED); "
                    "without it each config runs once with its own SEED")
    ap.add_argument("--nproc", type=int, default=1, metavar="N",
                    help="processes per run; N>1 launches python -m torch.distributed.run --standalone "
                         "--nproc_per_node=N")
    ap.add_argument("--threads", type=int, metavar="N",
                    help="CPU threads per run process (sets OMP_NUM_THREADS; default: inherited, usually all cores)")
    ap.add_argument("--out", metavar="DIR", help="output folder (default bench/results/<timestamp>/)")
    ap.add_argument("--overwrite", action="store_true", help="replace results and logs already in --out")
    ap.add_argument("--script", default=str(DEFAULT_SCRIPT), help="the trainer to run (default: train_gpt.py)")
    ap.add_argument("--python", default=sys.executable, help="interpreter for the runs (default: this one)")
    ap.add_argument("--peak-tflops", type=float, metavar="TF",
                    help="peak TFLOP/s per device for MFU (default: by device name, H100 SXM/H200 989 bf16)")
    ap.add_argument("--timeout", type=float, metavar="SECONDS", help="kill a run after this long (counts as failed)")
    ap.add_argument("--keep-weights", action="store_true",
                    help="keep each run's .raw.pt and artifact (default: deleted after the run, sizes are in the log)")
    ap.add_argument("--dry-run", action="store_true", help="print the runs (env + command) and exit")
    return ap


# ----------------------------------------------------------------------------- running

def _tail(path: Path, n_lines: int = 30, n_chars: int = 4000) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-n_lines:])[-n_chars:]


def launch(cmd: list[str], env: dict, cwd: Path, stdout: Path, stderr: Path, timeout: float | None) -> dict:
    """Run cmd to completion; return rc, wall time and the process tree's max RSS (os.wait4)."""
    t0 = time.perf_counter()
    timed_out = threading.Event()
    with open(stdout, "w") as fo, open(stderr, "w") as fe:
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=fo, stderr=fe, start_new_session=True)

        def kill():
            timed_out.set()
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass

        timer = threading.Timer(timeout, kill) if timeout else None
        if timer:
            timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:  # Ctrl-C: take the run's whole process group down with us
            kill()
            proc.wait()
            raise
        finally:
            if timer:
                timer.cancel()
    rc = os.waitstatus_to_exitcode(status)
    proc.returncode = rc
    return dict(rc=rc, wall_s=time.perf_counter() - t0, timed_out=timed_out.is_set(),
                peak_rss_mib=usage.ru_maxrss / 1024.0)  # Linux: KiB


def plan_runs(args, configs: dict, base_env: dict, out: Path) -> list[dict]:
    seeds = [s.strip() for s in args.seeds.split(",")] if args.seeds else [None]
    for s in seeds:
        if s is not None and not re.fullmatch(r"\d+", s):
            raise ValueError(f"--seeds: {s!r} is not a non-negative integer")
    if len(set(seeds)) != len(seeds):
        raise ValueError("--seeds repeats a seed")
    mode_env = {}
    if args.steps is not None:
        if args.steps < 1:
            raise ValueError("--steps must be >= 1")
        mode_env = {"ITERATIONS": str(args.steps), "MAX_WALLCLOCK_SECONDS": "0"}
    elif args.wallclock is not None:
        if args.wallclock <= 0:
            raise ValueError("--wallclock must be > 0")
        mode_env = {"MAX_WALLCLOCK_SECONDS": str(args.wallclock)}
    if args.nproc < 1:
        raise ValueError("--nproc must be >= 1")
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError("--threads must be >= 1")
        mode_env["OMP_NUM_THREADS"] = str(args.threads)
    if args.nproc == 1:
        cmd = [args.python, str(Path(args.script).resolve())]
    else:
        cmd = [args.python, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}",
               str(Path(args.script).resolve())]
    runs = []
    for name, overrides in configs.items():
        for seed in seeds:
            run_id = name if seed is None else f"{name}_s{seed}"
            env = base_env | mode_env | overrides
            if seed is not None:
                env["SEED"] = seed
            env |= {"RUN_ID": run_id, "OUT_DIR": str(out)}
            runs.append(dict(config=name, seed=seed, run_id=run_id, env=env, cmd=cmd))
    return runs


def _error_line(path: Path) -> str | None:
    """The most telling line of a failed run's stderr: the last exception, signal or abort
    message (torchrun ends with banners of '=' and '-'), else the last non-banner line."""
    try:
        lines = [l.strip() for l in path.read_text(errors="replace").splitlines() if l.strip()]
    except OSError:
        return None
    for pattern in (r"^\w+(Error|Exception)\b.*:|^error:|terminate called|Signal \d+ \(SIG\w+\)", r"[^=\-\s]"):
        hit = next((l for l in reversed(lines) if re.search(pattern, l)), None)
        if hit:
            return hit
    return None


def _loadavg() -> float | None:
    """1-minute load average of the host (a busy host makes CPU timings noisy)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def execute(run: dict, child_env: dict, out: Path, args) -> dict:
    log_path = out / f"{run['run_id']}.txt"
    stdout, stderr = out / f"{run['run_id']}.stdout.txt", out / f"{run['run_id']}.stderr.txt"
    load_before = _loadavg()
    res = launch(run["cmd"], child_env | run["env"], REPO, stdout, stderr, args.timeout)
    load_after = _loadavg()
    parsed = parse_log(log_path.read_text(errors="replace")) if log_path.is_file() else {"config": {}, "finals": {}}
    _, basis = steady_step_ms(parsed)
    record = dict(config=run["config"], seed=int(run["seed"]) if run["seed"] is not None else
                  (int(parsed["config"]["SEED"]) if "SEED" in parsed.get("config", {}) else None),
                  run_id=run["run_id"], rc=res["rc"], ok=res["rc"] == 0 and "score" in parsed,
                  timed_out=res["timed_out"], log=log_path.name if log_path.is_file() else None,
                  command=" ".join(shlex.quote(c) for c in run.get("shown_cmd", run["cmd"])), env=run["env"],
                  metrics=run_metrics(parsed, res["peak_rss_mib"], round(res["wall_s"], 3), args.peak_tflops),
                  info=run_info(parsed, basis) | dict(loadavg_1min_before=load_before, loadavg_1min_after=load_after),
                  resolved_config=parsed.get("config", {}))
    if not record["ok"]:
        record["stderr_tail"] = _tail(stderr)
        record["stdout_tail"] = _tail(stdout, 10, 2000)
        record["error"] = parsed.get("error") or _error_line(stderr) or f"rc={res['rc']}"
        if res["timed_out"]:
            record["error"] = f"timed out after {args.timeout:g} s"
        elif res["rc"] == 0:
            record["error"] = "exit status 0 but the log has no final_score_exact line"
        elif "score" in parsed:
            record["error"] = f"rc={res['rc']} after the log's final_score_exact (crashed at exit): {record['error']}"
    else:
        stdout.unlink(missing_ok=True)  # a subset of the log
        if stderr.stat().st_size == 0:
            stderr.unlink()
    if not args.keep_weights:  # raw/averaged weights and the artifact: everything of this run but text
        for f in out.glob(f"{run['run_id']}.*"):
            if f.is_file() and not f.name.endswith(".txt"):
                f.unlink()
    return record


# ----------------------------------------------------------------------------- reporting

SUMMARY_METRICS = (  # (key, label, format)
    ("ms_per_step", "ms/step (steady)", "{:.2f}"),
    ("ms_per_step_median_interval", "ms/step (median interval)", "{:.2f}"),
    ("tokens_per_s", "tokens/s", "{:,.0f}"),
    ("tokens_per_s_per_device", "tokens/s per device", "{:,.0f}"),
    ("model_tflops", "model TFLOP/s", "{:.4f}"),
    ("mfu", "MFU", "{:.2%}"),
    ("peak_gpu_mem_alloc_mib", "peak GPU alloc MiB", "{:,.0f}"),
    ("peak_rss_mib", "peak RSS MiB", "{:,.0f}"),
    ("val_bpb_prequant", "val_bpb prequant", "{:.4f}"),
    ("val_bpb_score", "val_bpb score", "{:.4f}"),
    ("total_bytes", "total bytes", "{:,.0f}"),
    ("model_bytes", "model bytes", "{:,.0f}"),
    ("code_bytes", "code bytes", "{:,.0f}"),
    ("warmup_time_ms", "warmup ms", "{:,.0f}"),
    ("eval_prewarm_ms", "eval graph compile ms (before timer)", "{:,.0f}"),
    ("export_ms", "export ms", "{:,.0f}"),
    ("eval_time_ms", "eval ms (export roundtrip)", "{:,.0f}"),
    ("sliding_eval_ms", "sliding-window eval ms", "{:,.0f}"),
    ("wall_s", "wall s", "{:.1f}"),
)


def _fmt(v, f: str) -> str:
    if v is None:
        return "-"
    try:
        return f.format(v)
    except (ValueError, TypeError):
        return str(v)


def summarize(runs: list[dict]) -> dict:
    out = {}
    for name in dict.fromkeys(r["config"] for r in runs):
        rs = [r for r in runs if r["config"] == name]
        ok = [r for r in rs if r["ok"]]
        keys = list(dict.fromkeys(k for r in ok for k in r["metrics"]))
        out[name] = dict(n_runs=len(rs), n_ok=len(ok), n_failed=len(rs) - len(ok),
                         seeds=[r["seed"] for r in ok],
                         metrics={k: stats([r["metrics"].get(k) for r in ok]) for k in keys})
    return out


def render_summary(doc: dict) -> str:
    env, lines = doc["environment"], []
    lines.append(f"# Benchmark {doc['created']}\n")
    lines.append(f"`{doc['command']}`\n")
    first = next((r for r in doc["runs"] if r.get("info", {}).get("device")), {}).get("info", {})
    lines.append("| environment | |\n|---|---|")
    rows = [
        ("device (log)", f"{first.get('device', '-')} x{first.get('device_count', '-')}"
                         + (f", {first['threads']} threads" if first.get("threads") else "")),
        ("python / torch / cuda (log)", f"{first.get('python', '-')} / {first.get('torch', '-')} / {first.get('cuda', '-')}"),
        ("host", f"{env['hostname']}, {env['cpu_model']}, {env['cpu_count']} cores ({env['cpu_affinity']} usable)"),
        ("git", f"{env['git_commit']}" + (" (dirty" + (", train_gpt.py modified" if env.get("script_modified") else "")
                                          + ")" if env["git_dirty"] else " (clean)")),
        ("script", f"{env['script']} sha256 {str(env['script_sha256'])[:16]}"),
        ("mode", doc["mode"]),
        ("base env", " ".join(f"{k}={v}" for k, v in doc["base_env"].items()) or "-"),
    ]
    lines += [f"| {k} | {v} |" for k, v in rows]
    for name, s in doc["summary"].items():
        ov = doc["configs"].get(name, {})
        lines.append(f"\n## {name}: {s['n_ok']}/{s['n_runs']} ok, seeds {', '.join(map(str, s['seeds'])) or '-'}\n")
        lines.append("overrides: " + (" ".join(f"`{k}={v}`" for k, v in ov.items()) or "(none)") + "\n")
        if s["n_ok"]:
            lines.append("| metric | mean | std | min | max | n |\n|---|---:|---:|---:|---:|---:|")
            for key, label, f in SUMMARY_METRICS:
                st = s["metrics"].get(key)
                if st and st["n"]:
                    lines.append(f"| {label} | {_fmt(st['mean'], f)} | {_fmt(st['std'], f)} | {_fmt(st['min'], f)} | "
                                 f"{_fmt(st['max'], f)} | {st['n']} |")
            for key, st in s["metrics"].items():
                if key.startswith("final_") and key.endswith(".val_bpb") and st["n"]:
                    lines.append(f"| {key} | {st['mean']:.6f} | {_fmt(st['std'], '{:.6f}')} | {st['min']:.6f} | "
                                 f"{st['max']:.6f} | {st['n']} |")
    lines.append("\n## Runs\n")
    lines.append("| run | rc | steps | ms/step | tokens/s | peak mem MiB | val_bpb pre | val_bpb score | total bytes | "
                 "wall s | load before/after | log |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in doc["runs"]:
        m = r["metrics"]
        mem = m.get("peak_gpu_mem_alloc_mib") or m.get("peak_rss_mib")
        lines.append(f"| {r['run_id']} | {r['rc']} | {_fmt(m.get('steps'), '{}')} | {_fmt(m.get('ms_per_step'), '{:.2f}')} | "
                     f"{_fmt(m.get('tokens_per_s'), '{:,.0f}')} | {_fmt(mem, '{:,.0f}')} | "
                     f"{_fmt(m.get('val_bpb_prequant'), '{:.4f}')} | {_fmt(m.get('val_bpb_score'), '{:.4f}')} | "
                     f"{_fmt(m.get('total_bytes'), '{:,}')} | {_fmt(m.get('wall_s'), '{:.1f}')} | "
                     f"{_fmt(r['info'].get('loadavg_1min_before'), '{:.2f}')}/{_fmt(r['info'].get('loadavg_1min_after'), '{:.2f}')} | "
                     f"{r.get('log') or '-'} |")
    failed = [r for r in doc["runs"] if not r["ok"]]
    if failed:
        lines.append("\n## Failures\n")
        for r in failed:
            lines.append(f"### {r['run_id']} (rc={r['rc']})\n\n{r.get('error', '')}\n\n```text\n{r.get('stderr_tail', '')}\n```")
    shas = {r["info"]["code_sha256"] for r in doc["runs"] if r.get("info", {}).get("code_sha256")}
    if len(shas) > 1:
        lines.append(f"\nWARNING: the runs used {len(shas)} different scripts (code_sha256 differs between logs).")
    if any(r.get("info", {}).get("param_formula_matches_log") is False for r in doc["runs"]):
        lines.append("\nWARNING: the FLOPs formula's parameter count differs from the log's model_params for some "
                     "run (the model has parts the formula does not know); flops_per_token and MFU undercount it.")
    lines.append("\nms/step = steady state (first logged step excluded); tokens/s = TRAIN_BATCH_TOKENS*1000/ms_per_step "
                 "(global); FLOPs/token = 6*N_matmul + 12*L*d*T (tied head counted once, embedding lookup not); "
                 "peak mem = GPU max_memory_allocated (log) on GPU, else host max RSS (wait4 ru_maxrss); std = sample std "
                 "(n-1). See bench/README.md.")
    return "\n".join(lines) + "\n"


def write_outputs(doc: dict, out: Path) -> None:
    doc["summary"] = summarize(doc["runs"])
    doc["n_failed"] = sum(not r["ok"] for r in doc["runs"])
    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n")
    tmp.replace(out / "results.json")
    (out / "summary.md").write_text(render_summary(doc))


def _progress_line(i: int, n: int, rec: dict) -> str:
    m = rec["metrics"]
    if not rec["ok"]:
        return f"[{i}/{n}] FAILED {rec['run_id']} rc={rec['rc']} after {m['wall_s']:.1f}s: {rec.get('error', '')}"
    mem = (f"peak_gpu_alloc={m['peak_gpu_mem_alloc_mib']}MiB" if m.get("peak_gpu_mem_alloc_mib") is not None
           else f"peak_rss={m['peak_rss_mib']:.0f}MiB")
    mfu = f" mfu={m['mfu']:.1%}" if m.get("mfu") is not None else ""
    return (f"[{i}/{n}] done {rec['run_id']} in {m['wall_s']:.1f}s: steps={m['steps']} ms/step={_fmt(m['ms_per_step'], '{:.2f}')} "
            f"tok/s={_fmt(m['tokens_per_s'], '{:,.0f}')}{mfu} {mem} bpb_pre={_fmt(m['val_bpb_prequant'], '{:.4f}')} "
            f"bpb_score={_fmt(m['val_bpb_score'], '{:.4f}')} total_bytes={_fmt(m['total_bytes'], '{:,}')}")


def _run_all(runs: list[dict], configs: dict, child_env: dict, out: Path, args, doc: dict) -> bool:
    """Run every planned run in order, rewriting results.json/summary.md after each; returns
    True when interrupted (Ctrl-C stops the current run and keeps what was measured)."""
    interrupted = False
    for i, run in enumerate(runs, 1):
        print(f"[{i}/{len(runs)}] start {run['run_id']}: " + " ".join(f"{k}={v}" for k, v in configs[run["config"]].items())
              + (f" SEED={run['seed']}" if run["seed"] else ""), flush=True)
        try:
            rec = execute(run, child_env, out, args)
        except KeyboardInterrupt:
            interrupted = True
            print(f"[{i}/{len(runs)}] interrupted; results so far are in {out}", flush=True)
            break
        doc["runs"].append(rec)
        write_outputs(doc, out)
        print(_progress_line(i, len(runs), rec), flush=True)
    write_outputs(doc, out)
    return interrupted


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    script = Path(args.script).resolve()
    try:
        if not script.is_file():
            raise ValueError(f"--script {script} does not exist")
        configs = load_configs(args.config, args.configs)
        if not configs:
            configs = {"default": {}}
        base_env = dict(DATASETS[args.dataset]) if args.dataset else {}
        for item in args.env:
            base_env |= parse_assignments(item, f"--env {item}")
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = Path(args.out).resolve() if args.out else REPO / "bench" / "results" / stamp
        runs = plan_runs(args, configs, base_env, out)
        if len({r["run_id"] for r in runs}) != len(runs):
            raise ValueError("two runs would share a RUN_ID")
    except ValueError as e:
        ap.print_usage(sys.stderr)
        print(f"bench/benchmark.py: error: {e}", file=sys.stderr)
        return 2
    child_env, dropped = child_base_environ(script)
    if args.dry_run:
        for r in runs:
            print(" ".join(f"{k}={shlex.quote(v)}" for k, v in r["env"].items()) + " " + " ".join(map(shlex.quote, r["cmd"])))
        return 0
    taken = [p for p in [out / "results.json", out / "summary.md"] + [out / f"{r['run_id']}{s}" for r in runs
             for s in (".txt", ".stdout.txt", ".stderr.txt")] if p.exists()]
    if taken and not args.overwrite:
        print(f"bench/benchmark.py: error: {out} already holds {', '.join(p.name for p in taken[:4])}"
              f"{' ...' if len(taken) > 4 else ''}; use another --out or --overwrite", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    for p in taken:
        p.unlink()
    if dropped:
        print(f"note: not passing inherited trainer variables to the runs: {', '.join(dropped)}")
    mode = (f"fixed steps: ITERATIONS={args.steps} MAX_WALLCLOCK_SECONDS=0" if args.steps is not None else
            f"fixed wallclock: MAX_WALLCLOCK_SECONDS={args.wallclock:g}" if args.wallclock is not None else
            "as configured (ITERATIONS / MAX_WALLCLOCK_SECONDS from env and configs)") + f", nproc={args.nproc}" + (
            f", threads={args.threads}" if args.threads is not None else "")
    doc = dict(schema=1, created=_dt.datetime.now().astimezone().isoformat(timespec="seconds"),
               command="python bench/benchmark.py " + " ".join(map(shlex.quote, sys.argv[1:] if argv is None else argv)),
               out_dir=str(out), mode=mode, nproc=args.nproc, threads=args.threads, seeds=args.seeds, base_env=base_env, configs=configs,
               dropped_inherited_env=dropped, environment=host_environment(script), runs=[])
    print(f"benchmark: {len(runs)} run(s) of {len(configs)} config(s) -> {out}  [{mode}]", flush=True)
    # Every run executes the same snapshot of the script, taken now: edits made to the working
    # tree during the benchmark do not leak into later runs. (The logs embed the source.)
    snap_dir = Path(tempfile.mkdtemp(prefix="bench_script_"))
    snapshot = snap_dir / script.name
    shutil.copy2(script, snapshot)
    doc["environment"]["script_sha256"] = hashlib.sha256(snapshot.read_bytes()).hexdigest()
    for run in runs:
        run["shown_cmd"] = run["cmd"]  # what a user would type; the run executes the snapshot
        run["cmd"] = [str(snapshot) if c == str(script) else c for c in run["cmd"]]
    def _terminate(signum, frame):  # SIGTERM like Ctrl-C: kill the current run's process group, keep results
        raise KeyboardInterrupt
    previous = signal.signal(signal.SIGTERM, _terminate)
    interrupted = False
    try:
        interrupted = _run_all(runs, configs, child_env, out, args, doc)
    finally:
        signal.signal(signal.SIGTERM, previous)
        shutil.rmtree(snap_dir, ignore_errors=True)
    n_failed = doc["n_failed"]
    print(f"benchmark: {len(doc['runs']) - n_failed} ok, {n_failed} failed; {out / 'results.json'}, {out / 'summary.md'}",
          flush=True)
    for name, s in doc["summary"].items():
        st = s["metrics"]
        if s["n_ok"]:
            def ms(key, f):
                v = st.get(key, {})
                return "-" if not v or v["mean"] is None else f.format(v["mean"]) + (
                    "" if v["std"] is None else " ± " + f.format(v["std"]))
            print(f"  {name}: n={s['n_ok']} ms/step {ms('ms_per_step', '{:.2f}')}  tok/s {ms('tokens_per_s', '{:,.0f}')}  "
                  f"bpb_pre {ms('val_bpb_prequant', '{:.4f}')}  bpb_score {ms('val_bpb_score', '{:.4f}')}  "
                  f"total_bytes {ms('total_bytes', '{:,.0f}')}")
    if interrupted:
        return 130
    return 1 if n_failed else 0


if __name__ == "__main__":
    sys.exit(main())
