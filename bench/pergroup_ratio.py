"""Bytes and time of EXPORT_COMPRESSOR=pergroup against brotli on a trained run's weights: the
weights are quantized once (the run's config from its log, plus --set overrides such as a preset's
quantization), then encoded with brotli, with pergroup, and with pergroup without the row sort (no role sorted).
Prints one line per role and the totals; each quantized role's pergroup/brotli ratio without its
permutations is what train_gpt.py's PERGROUP_RATIO (the DRY_RUN projection) is set from.

    python bench/pergroup_ratio.py logs/RUN.txt --weights logs/RUN.raw.pt --set MATRIX_BITS=6 ...
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import train_gpt as tg  # noqa: E402
from bench.artifact_report import calibration_hessians, config_from_log  # noqa: E402


def encode(qstate, compressor: str) -> tuple[bytes, dict[str, int], float]:
    print(f"encoding with {compressor}...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    blob, report = tg.encode_artifact(qstate, "auto", compressor)
    return blob, {r["role"]: r["sizes"][r["chosen"]][1] for r in report}, time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("log", type=Path, help="the run's log (its config: lines give the model)")
    p.add_argument("--weights", type=Path, required=True, help="the run's saved state dict (.raw.pt / .avg.pt)")
    p.add_argument("--set", action="append", default=[], help="config overrides KEY=VALUE (repeatable)")
    p.add_argument("--sorted-roles", help="comma list of roles whose rows are L1-sorted (default: train_gpt.py's SORTED_ROLES)")
    args = p.parse_args(argv)
    if args.sorted_roles is not None:
        tg.SORTED_ROLES = tuple(args.sorted_roles.split(","))
    env = {**config_from_log(args.log), **dict(kv.split("=", 1) for kv in args.set)}
    cfg = tg.Config.from_env(env)
    ctx = tg.Dist(0, 1, 0, torch.device("cpu"))
    model = tg.build_model(cfg, ctx)
    model.load_state_dict(torch.load(args.weights, map_location="cpu", weights_only=True), strict=True)
    roles = {n: q.role for n, q in model.named_parameters()}
    print(f"weights:{args.weights.name} params:{tg.count_params(model)} quant_method:{cfg.quant_method} "
          f"bits:{sorted({cfg.bits(r) for r in set(roles.values())})} lrzip:{tg.shutil.which('lrzip')}", flush=True)
    print("quantizing (GPTQ calibration with QUANT_METHOD=gptq)...", file=sys.stderr, flush=True)
    hessians = calibration_hessians(model, cfg, ctx, args.log) if cfg.quant_method == "gptq" else None
    qstate = tg.quantize_state(model.state_dict(), roles, cfg, lambda m: None, hessians)
    runs = {"brotli": encode(qstate, "brotli"), "pergroup": encode(qstate, "pergroup")}
    tg.SORTED_ROLES, hot = (), tg.SORTED_ROLES
    runs["pergroup_nosort"] = encode(qstate, "pergroup")
    tg.SORTED_ROLES = hot
    decoded = tg.decode_artifact(runs["pergroup"][0])
    assert all(torch.equal(decoded[n], tg.dequantize(q)) for n, q in qstate.items()), "pergroup round trip differs"
    perm = {r: sum(2 * q.shape[0] for q in qstate.values() if q.role == r and q.bits < 16 and r in tg.SORTED_ROLES)
            for r in runs["brotli"][1]}
    print("role " + " ".join(f"{k}_bytes" for k in runs) + " permutation_bytes pergroup/brotli ratio_without_permutations")
    for role, b in runs["brotli"][1].items():
        pg = runs["pergroup"][1][role]
        print(f"{role} " + " ".join(str(r[1][role]) for r in runs.values()) + f" {perm[role]} {pg / b:.4f} {(pg - perm[role]) / b:.4f}")
    print("total_bytes " + " ".join(str(len(r[0])) for r in runs.values()) + f" {len(runs['pergroup'][0]) / len(runs['brotli'][0]):.4f}")
    print("encode_seconds " + " ".join(f"{r[2]:.1f}" for r in runs.values()) + " (under load)")
    t0 = time.perf_counter()
    tg.decode_artifact(runs["brotli"][0])
    t1 = time.perf_counter()
    tg.decode_artifact(runs["pergroup"][0])
    print(f"decode_seconds brotli:{t1 - t0:.1f} pergroup:{time.perf_counter() - t1:.1f} (under load)")
    print("round_trip: exact")
    return 0


if __name__ == "__main__":
    sys.exit(main())
