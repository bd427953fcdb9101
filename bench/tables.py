"""Markdown tables for the README from benchmark results (results.json of bench/benchmark.py).

  python bench/tables.py ablation bench/results/ablation_core_full_qat bench/results/ablation_singles --configs full_stack
  python bench/tables.py qat bench/results/ablation_core_full_qat --configs full_stack,qat_always,qat_late

`ablation`: val_bpb before export (mean +- sample std over seeds), its delta against the baseline
config's mean, and the post-export score. `qat`: the quantization gap (artifact reloaded from
disk minus the unquantized weights, both non-overlapping eval) per QAT mode.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path


def load_runs(folders: list[Path]) -> dict[str, list[dict]]:
    runs: dict[str, list[dict]] = {}
    for folder in folders:
        data = json.loads((folder / "results.json").read_text())
        for r in data["runs"]:
            if r["ok"]:
                runs.setdefault(r["config"], []).append(r["metrics"])
    return runs


def mean_std(values: list[float]) -> tuple[float, float | None]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def fmt(m: float, s: float | None, digits: int = 4) -> str:
    return f"{m:.{digits}f}" + (f" ± {s:.{digits}f}" if s is not None else "")


def metric(r: dict, suffix: str) -> float:
    keys = [k for k in r if k.endswith(suffix)]
    if len(keys) != 1:
        raise SystemExit(f"expected one metric ending in {suffix!r}, found {keys}")
    return r[keys[0]]


def ablation(runs: dict[str, list[dict]], baseline: str, only: list[str] | None = None) -> str:
    if only:
        runs = {c: rs for c, rs in runs.items() if c in only or c == baseline}
    base, _ = mean_std([r["val_bpb_prequant"] for r in runs[baseline]])
    lines = ["| config | seeds | val_bpb before export | Δ vs " + baseline + " | val_bpb of the artifact | ms/step |",
             "|---|---:|---:|---:|---:|---:|"]
    order = [baseline] + sorted(c for c in runs if c != baseline and not c.startswith("+")) + sorted(c for c in runs if c.startswith("+"))
    for c in order:
        rs = runs[c]
        pre = mean_std([r["val_bpb_prequant"] for r in rs])
        score = mean_std([r["val_bpb_score"] for r in rs])
        ms = statistics.fmean(r["ms_per_step"] for r in rs)
        lines.append(f"| {c} | {len(rs)} | {fmt(*pre)} | {pre[0] - base:+.4f} | {fmt(*score)} | {ms:.0f} |")
    return "\n".join(lines)


def qat(runs: dict[str, list[dict]], configs: list[str]) -> str:
    lines = ["| QAT mode (config) | seeds | val_bpb before export | val_bpb after roundtrip | quantization gap (bpb) | total bytes |",
             "|---|---:|---:|---:|---:|---:|"]
    for c in configs:
        rs = runs[c]
        pre = mean_std([r["val_bpb_prequant"] for r in rs])
        rt = mean_std([metric(r, "_roundtrip.val_bpb") for r in rs])
        gap = mean_std([metric(r, "quant_gap.val_bpb") for r in rs])
        size = statistics.fmean(r["total_bytes"] for r in rs)
        lines.append(f"| {c} | {len(rs)} | {fmt(*pre)} | {fmt(*rt)} | {fmt(*gap, digits=5)} | {size:,.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("kind", choices=("ablation", "qat"))
    p.add_argument("folders", nargs="+", type=Path, help="benchmark output folders (each holds results.json)")
    p.add_argument("--baseline", default="core", help="ablation: the config the deltas are against")
    p.add_argument("--configs", help="comma list of configs (qat: in order, default full_stack,qat_always,qat_late; "
                   "ablation: restrict to these plus the baseline and every '+feature' config)")
    args = p.parse_args(argv)
    runs = load_runs(args.folders)
    if args.kind == "ablation":
        only = args.configs.split(",") + [c for c in runs if c.startswith("+")] if args.configs else None
        print(ablation(runs, args.baseline, only))
    else:
        print(qat(runs, (args.configs or "full_stack,qat_always,qat_late").split(",")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
