"""The model-ablation table: one row per variant of bench/model_ablation.sh, its seeds' mean val_bpb
and the per-seed (paired) difference against a reference variant.

    python bench/results/model/ablation_table.py DIR [DIR ...] [--ref new] [--metric prequant]

DIR holds the trainer logs <variant>_s<seed>.txt. metric: prequant (the EMA weights before export,
the default), live (the live weights at the last step) or roundtrip (the exported artifact reloaded).
Small-scale CPU evidence only.
"""
from __future__ import annotations

import argparse
import re
import statistics
from collections import defaultdict
from pathlib import Path

METRICS = {"prequant": "final_prequant_exact", "live": "final_live_prequant_exact",
           "roundtrip": r"final_\S+_roundtrip_exact"}


def read_log(path: Path, metric: str) -> tuple[int | None, float | None]:
    """(model_params, val_bpb of the metric) of one trainer log; None where the run did not get there."""
    text = path.read_text(encoding="utf-8", errors="replace")
    body = text.split("=" * 100, 1)[-1]  # skip the embedded source
    params = re.search(r"^model_params:(\d+)", body, re.M)
    score = re.search(rf"^{METRICS[metric]} val_loss:\S+ val_bpb:([\d.]+)", body, re.M)
    return (int(params.group(1)) if params else None), (float(score.group(1)) if score else None)


def collect(dirs: list[Path], metric: str) -> tuple[dict[str, dict[int, float]], dict[str, int]]:
    scores, params = defaultdict(dict), {}
    for d in dirs:
        for path in sorted(d.glob("*_s*.txt")):
            m = re.fullmatch(r"(.+)_s(\d+)\.txt", path.name)
            if not m:
                continue
            n, bpb = read_log(path, metric)
            if bpb is not None:
                scores[m.group(1)][int(m.group(2))] = bpb
                params[m.group(1)] = n
    return scores, params


def table(scores: dict[str, dict[int, float]], params: dict[str, int], ref: str, order: list[str]) -> str:
    base = scores.get(ref, {})
    lines = [f"| variant | params | seeds | mean val_bpb | std | paired diff vs {ref} (mean ± std, n) |",
             "|---|---:|---|---:|---:|---:|"]
    for v in order + sorted(set(scores) - set(order)):
        if v not in scores:
            continue
        s = scores[v]
        vals = [s[k] for k in sorted(s)]
        std = f"{statistics.stdev(vals):.4f}" if len(vals) > 1 else "-"
        common = sorted(set(s) & set(base))
        if v == ref or not common:
            diff = "-"
        else:
            d = [s[k] - base[k] for k in common]
            diff = f"{statistics.mean(d):+.4f} ± {statistics.stdev(d):.4f} ({len(d)})" if len(d) > 1 else f"{d[0]:+.4f} (1)"
        lines.append(f"| {v} | {params.get(v) or 0:,} | {','.join(map(str, sorted(s)))} | {statistics.mean(vals):.4f} | {std} | {diff} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dirs", nargs="+", type=Path, help="directories of <variant>_s<seed>.txt logs")
    ap.add_argument("--ref", default="new", help="the variant the paired differences are taken against")
    ap.add_argument("--metric", default="prequant", choices=sorted(METRICS))
    ap.add_argument("--order", default="old,new,new_noloop,new_noparallel,new_nogates,new_nomuoneqr,new_oldopt,"
                    "old_newopt,new_shuffled,new_docpack,new_docmask,new_bigram_smear", help="row order")
    args = ap.parse_args(argv)
    scores, params = collect(args.dirs, args.metric)
    if not scores:
        ap.error(f"no <variant>_s<seed>.txt log with a {args.metric} score in {', '.join(map(str, args.dirs))}")
    print(table(scores, params, args.ref, args.order.split(",")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
