"""Small-scale CPU evidence for the attention backends and the fused cross-entropy.

One command, every case in its own subprocess (so each peak RSS is that case's alone):
  * attention at the default head shapes (8 query heads, 4 KV heads, head dim 64) for
    T = 256, 1024, 2048, rows cut from a real token stream (its BOS positions give the
    document lengths): forward and forward+backward time and peak RSS of masked SDPA
    (K/V repeated, bool [B,1,T,T] mask), plain causal SDPA (no document mask: the lower bound)
    and FlexAttention (inductor-compiled; torch has no CPU flex backward, so forward only);
  * a 4-layer model at the default width (d512, MLP 4x, vocab 8192): a training step
    (forward+backward, eager) with masked and causal SDPA, and a compiled no-grad forward
    with each of the three backends;
  * the training loss at vocab 8192 over 8192 rows: peak RSS and time with FUSED_CE=0 (fp32
    logits of the whole batch) and FUSED_CE=1 (chunked).
steady_extra_mb: peak RSS of the timed calls above the RSS before them (after a warm call
that compiles; the kernel's high-water mark is reset in between); peak_rss_mb: the process's
peak, compile included. Times on a shared CPU are noisy; RSS is not. CUDA behaves differently (flash kernels,
Triton flex): this is small-scale evidence, not a GPU projection.

    python bench/attention_bench.py --tokens ../shared/proxy8192/proxy_val_000000.bin \\
        --out bench/results/attention/attention_bench.json
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BOS = 1
TOKENS_PER_CASE = 8192  # rows x T: 32 x 256, 8 x 1024, 4 x 2048


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rows_from(path: str, B: int, T: int, offset: int):
    import numpy as np
    import torch
    tok = np.fromfile(path, dtype=np.uint16, offset=1024)
    return torch.from_numpy(tok[offset:offset + B * T].astype(np.int64)).view(B, T)


def vm_mb(field: str) -> float:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


STEADY = {}


def timed(fn, reps: int) -> float:
    """ms per call after one warm call (compiles); STEADY gets the peak RSS of the timed calls
    above the RSS before them (the kernel's high-water mark reset after the warm call, so the
    compiler's own memory does not count)."""
    fn()  # warm (and compile)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    before = vm_mb("VmRSS")
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    ms = 1000 * (time.perf_counter() - t0) / reps
    STEADY.update(steady_peak_rss_mb=round(vm_mb("VmHWM"), 1), steady_extra_mb=round(vm_mb("VmHWM") - before, 1))
    return ms


def attention_case(tg, backend: str, T: int, path: str, grad: bool, reps: int) -> dict:
    import torch
    import torch.nn.attention.flex_attention as fa
    B, H, Hkv, D = TOKENS_PER_CASE // T, 8, 4, 64
    ids = rows_from(path, B, T, 0)
    seg = tg.segment_starts(ids, BOS, T).cumsum(1)
    g = torch.Generator().manual_seed(0)
    q = torch.randn(B, H, T, D, generator=g).requires_grad_(grad)
    k, v = (torch.randn(B, Hkv, T, D, generator=g).requires_grad_(grad) for _ in range(2))
    if backend == "sdpa_masked":
        mask = tg.attention_layout(ids, BOS, "sdpa").mask
        run = lambda: tg.masked_sdpa(q, k, v, mask)
    elif backend == "sdpa_causal":
        run = lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    else:
        compiled = torch.compile(lambda q, k, v, seg: fa.flex_attention(q, k, v, block_mask=tg.flex_block_mask(seg),
                                                                        enable_gqa=True), fullgraph=True, dynamic=False)
        run = lambda: compiled(q, k, v, seg)
    step = (lambda: run().sum().backward()) if grad else (lambda: run())
    ctx = torch.enable_grad() if grad else torch.no_grad()
    with ctx:
        ms = timed(step, reps)
    docs = int((seg[:, -1]).sum())
    return dict(ms=round(ms, 2), docs_in_batch=docs, mean_segment=round(B * T / docs, 1), B=B)


MODEL_ENV = {"NUM_LAYERS": "4", "NUM_LOOPS": "0", "PARALLEL_START_LAYER": "0", "XSA_LAST_N": "4", "TRAIN_SEQ_LEN": "1024",
             "AUTOCAST": "off", "COMPILE": "0"}


def model_case(tg, backend: str, path: str, grad: bool, reps: int) -> dict:
    import torch
    env = {**MODEL_ENV, "ATTN_DOC_MASK": "0" if backend == "sdpa_causal" else "1"}
    cfg = tg.Config.from_env(env)
    model = tg.GPT(cfg, max_len=1024, bos_id=BOS)
    tg.set_attn_backend(model, "flex" if backend == "flex" else "sdpa")
    ids = rows_from(path, 4, 1024, 0)
    if grad:
        step = lambda: model(ids, ids).backward()
        with torch.enable_grad():
            ms = timed(step, reps)
    else:
        torch._dynamo.config.recompile_limit = 64
        compiled = torch.compile(model, fullgraph=True, dynamic=False)
        with torch.no_grad():
            ms = timed(lambda: compiled(ids), reps)
    return dict(ms=round(ms, 2), rows=4, T=1024, params=tg.count_params(model))


def ce_case(tg, fused: bool, reps: int) -> dict:
    import torch
    g = torch.Generator().manual_seed(0)
    x = torch.randn(TOKENS_PER_CASE, 512, generator=g).requires_grad_()
    w = (torch.randn(8192, 512, generator=g) * 0.02).requires_grad_()
    y = torch.randint(0, 8192, (TOKENS_PER_CASE,), generator=g)
    if fused:
        step = lambda: tg.softcap_cross_entropy(x, w, y, 30.0).backward()
    else:
        step = lambda: torch.nn.functional.cross_entropy(tg.softcap(torch.nn.functional.linear(x, w).float(), 30.0), y).backward()
    return dict(ms=round(timed(step, reps), 2), rows=TOKENS_PER_CASE, vocab=8192)


def run_case(name: str, path: str, reps: int) -> dict:
    sys.path.insert(0, str(REPO))
    import torch
    import train_gpt as tg
    base = rss_mb()
    kind, *rest = name.split(":")
    if kind == "attn":
        backend, T, mode = rest
        out = attention_case(tg, backend, int(T), path, mode == "fwdbwd", reps)
    elif kind == "model":
        backend, mode = rest
        out = model_case(tg, backend, path, mode == "train", reps)
    else:
        out = ce_case(tg, rest[0] == "fused", reps)
    return dict(case=name, **out, **STEADY, peak_rss_mb=round(rss_mb(), 1), rss_before_mb=round(base, 1),
                torch=torch.__version__, threads=torch.get_num_threads())


def cases() -> list[str]:
    out = []
    for T in (256, 1024, 2048):
        for b in ("sdpa_causal", "sdpa_masked", "flex"):
            out.append(f"attn:{b}:{T}:fwd")
        for b in ("sdpa_causal", "sdpa_masked"):
            out.append(f"attn:{b}:{T}:fwdbwd")
    out += [f"model:{b}:train" for b in ("sdpa_causal", "sdpa_masked")]
    out += [f"model:{b}:eval_compiled" for b in ("sdpa_causal", "sdpa_masked", "flex")]
    return out + ["ce:plain", "ce:fused"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", required=True, help="a challenge-format shard whose BOS positions give the document lengths")
    ap.add_argument("--out", required=True, help="JSON lines, one per case (written as they finish)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--only", default="", help="comma-separated case-name prefixes (default: all)")
    ap.add_argument("--case", help=argparse.SUPPRESS)  # child mode
    args = ap.parse_args(argv)
    if args.case:
        print(json.dumps(run_case(args.case, args.tokens, args.reps)))
        return 0
    todo = [c for c in cases() if not args.only or any(c.startswith(p) for p in args.only.split(","))]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    failed = 0
    with open(args.out, "w") as f:
        for i, name in enumerate(todo):
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, __file__, "--tokens", args.tokens, "--out", args.out, "--reps", str(args.reps),
                                   "--case", name], capture_output=True, text=True)
            line = proc.stdout.strip().splitlines()[-1] if proc.returncode == 0 else json.dumps(
                dict(case=name, error=proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"rc {proc.returncode}"))
            failed += proc.returncode != 0
            f.write(line + "\n")
            f.flush()
            print(f"[{i + 1}/{len(todo)}] {time.perf_counter() - t0:.0f}s {line}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
