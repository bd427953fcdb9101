"""Compressor table: the exported frames of a model under zstd-22, brotli-11 and lzma-9, each with
and without a byte shuffle and a row reordering.

The frames are exactly what train_gpt.py writes (one payload per role, codes in int8 containers or
bit-packed, whichever the export keeps, plus fp16 scales and passthrough tensors), taken from a
run's saved weights quantized with the run's config (plus overrides). Transforms, applied per frame
before compressing:
  shuffle  stride-2 byte shuffle (all even-offset bytes, then all odd-offset bytes), as the records
           do before brotli: the low and high bytes of fp16 values end up in separate runs.
  reorder  rows of every code matrix in a greedy nearest-neighbour chain (L1 distance between
           rows), so similar rows sit next to each other; the uint16 permutation is compressed with
           the same compressor and counted.
Every size is the sum over frames (header excluded: it is the same for all).

Example:
  python bench/compressors.py logs/run.txt --weights logs/run.raw.pt --set QUANT_METHOD=gptq \
      --out bench/results/quantization/compressors.json
"""
from __future__ import annotations

import argparse
import json
import lzma
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import train_gpt as tg  # noqa: E402
from bench.artifact_report import config_from_log, parse_overrides, calibration_hessians  # noqa: E402


def compressor(name: str):
    """bytes -> compressed bytes. A compressor asked for but not installed is an error."""
    if name == "zstd-22":
        return lambda b: tg.compress(b)
    if name == "lzma-9":
        return lambda b: lzma.compress(b, preset=9)
    if name == "brotli-11":
        try:
            import brotli
        except ImportError:
            raise SystemExit("brotli-11 was asked for but the brotli package is not installed (pip install brotli)") from None
        return lambda b: brotli.compress(b, quality=11, lgwin=24)
    raise SystemExit(f"unknown compressor {name!r}: use zstd-22, brotli-11, lzma-9")


def byte_shuffle(raw: bytes, stride: int = 2) -> bytes:
    a = np.frombuffer(raw, dtype=np.uint8)
    return b"".join(a[i::stride].tobytes() for i in range(stride))


def greedy_row_order(codes: np.ndarray) -> np.ndarray:
    """Start at row 0, then always move to the unused row nearest (L1) to the current one."""
    rows = codes.astype(np.int16)
    n = rows.shape[0]
    used = np.zeros(n, dtype=bool)
    order = np.empty(n, dtype=np.int64)
    cur = 0
    for i in range(n):
        order[i], used[cur] = cur, True
        if i == n - 1:
            break
        d = np.abs(rows - rows[cur]).sum(axis=1)
        d[used] = np.iinfo(np.int64).max
        cur = int(d.argmin())
    return order


def reordered(qstate: dict[str, tg.Quantized]) -> tuple[dict[str, tg.Quantized], bytes]:
    """The same tensors with the rows of every code matrix reordered, and the permutations (uint16)."""
    out, perms = {}, []
    for name, q in qstate.items():
        if q.bits == 16 or q.codes.size(0) > 65535:
            out[name] = q
            continue
        order = greedy_row_order(q.codes.numpy())
        out[name] = tg.Quantized(q.role, q.bits, (q.codes.size(0),) + tuple(q.codes.shape[1:]),
                                 codes=q.codes[order], scales=q.scales[order], lqer=q.lqer)
        perms.append(order.astype("<u2").tobytes())
    return out, b"".join(perms)


def frame_payloads(qstate: dict[str, tg.Quantized], packing: str) -> list[bytes]:
    """One raw payload per role, as encode_artifact builds them (packing per role: the given one)."""
    out = []
    for role in tg.ROLES:
        items = [(n, q) for n, q in qstate.items() if q.role == role]
        if items:
            quantized = any(q.bits < 16 for _, q in items)
            out.append(tg.pack_role(items, packing if quantized else "none")[0])
    return out


def measure(qstate: dict[str, tg.Quantized], names: list[str], log=print) -> list[dict]:
    rows = []
    for reorder in (False, True):
        qs, perm = reordered(qstate) if reorder else (qstate, b"")
        for packing in ("int8", "bitpack"):
            payloads = frame_payloads(qs, packing)
            for name in names:
                comp = compressor(name)
                for shuffle in (False, True):
                    t0 = time.perf_counter()
                    size = sum(len(comp(byte_shuffle(p) if shuffle else p)) for p in payloads)
                    size += len(comp(perm)) if perm else 0
                    rows.append(dict(compressor=name, packing=packing, shuffle=shuffle, reorder=reorder, bytes=size,
                                     raw_bytes=sum(map(len, payloads)) + len(perm), seconds=time.perf_counter() - t0))
                    log(f"{name:<10} packing:{packing:<8} shuffle:{int(shuffle)} reorder:{int(reorder)} bytes:{size}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("log", type=Path, help="the run's log (its config: lines give the configuration)")
    p.add_argument("--weights", type=Path, required=True, help="the run's saved state dict (.raw.pt / .avg.pt)")
    p.add_argument("--set", action="append", default=[], help="config overrides KEY=VALUE (repeatable), e.g. QUANT_METHOD=gptq")
    p.add_argument("--compressors", default="zstd-22,brotli-11,lzma-9", help="comma list")
    p.add_argument("--out", type=Path, default=Path("bench/results/quantization/compressors.json"))
    args = p.parse_args(argv)
    names = [c for c in args.compressors.split(",") if c]
    for n in names:
        compressor(n)  # fail before any work if one is missing
    env = config_from_log(args.log)
    env.update(parse_overrides("x:" + ",".join(args.set))[1] if args.set else {})
    cfg = tg.Config.from_env(env)
    ctx = tg.Dist(0, 1, 0, torch.device("cpu"))
    model = tg.build_model(cfg, ctx)
    model.load_state_dict(torch.load(args.weights, map_location="cpu", weights_only=True), strict=True)
    roles = {n: q.role for n, q in model.named_parameters()}
    hessians = calibration_hessians(model, cfg, ctx, args.log) if cfg.quant_method == "gptq" else None
    qstate = tg.quantize_state(model.state_dict(), roles, cfg, print, hessians)
    rows = measure(qstate, names)
    best_zstd = min(r["bytes"] for r in rows if r["compressor"] == "zstd-22" and not r["shuffle"] and not r["reorder"])
    for r in rows:
        r["vs_zstd_plain"] = r["bytes"] / best_zstd - 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(dict(log=str(args.log), weights=str(args.weights), overrides=args.set, rows=rows), indent=1))
    md = ["| compressor | packing | shuffle | reorder | bytes | vs zstd-22 (best packing, no transform) |", "|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: r["bytes"]):
        md.append(f"| {r['compressor']} | {r['packing']} | {int(r['shuffle'])} | {int(r['reorder'])} | {r['bytes']:,} | {100 * r['vs_zstd_plain']:+.2f}% |")
    args.out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
