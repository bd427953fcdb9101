"""Combine artifact_report.py sweep JSONs of several seeds (same variants) into one markdown
table: model bytes and quantization gap (reloaded artifact minus unquantized weights, both
non-overlapping, same tokens) per seed, then the mean and sample std of the gap.

  python seeds_table.py sweep6_p8192_s1337.json sweep6_p8192_s42.json sweep6_p8192_s7.json

One seed's rows may come from several sweeps of the same weights: join them with "+"
(sweep_p1024_s1337.json+sweep4_p1024_s1337.json); a variant in several takes the first.
With --bpb the cells are the reloaded artifact's val_bpb instead of the gap (to compare runs
trained differently, e.g. with and without QAT, on the same tokens).
"""
import json
import statistics
import sys
from pathlib import Path


def load(spec: str) -> dict[str, dict]:
    rows: dict[str, dict] = {}
    for part in spec.split("+"):
        for r in json.loads(Path(part).read_text())["rows"]:
            rows.setdefault(r["variant"], r)
    return rows


def table(specs: list[str], bpb: bool = False) -> str:
    runs = [load(p) for p in specs]
    names = [Path(p.split("+")[0]).stem.split("_", 1)[1] for p in specs]  # e.g. p8192_s1337
    order = [v for v in runs[0] if all(v in r for r in runs)]
    what = "bpb" if bpb else "gap"
    head = ["variant"] + [f"bytes {n}" for n in names] + [f"{what} {n}" for n in names] + [f"mean {what}", "std"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for v in order:
        gaps = [r[v]["nonoverlap"]["val_bpb"] - (0.0 if bpb else r[v]["prequant_nonoverlap_bpb"]) for r in runs]
        std = statistics.stdev(gaps) if len(gaps) > 1 else float("nan")
        lines.append("| " + " | ".join([v] + [f"{r[v]['model_bytes']:,}" for r in runs] + [f"{g:+.5f}" if not bpb else f"{g:.5f}" for g in gaps]
                                       + [f"{statistics.fmean(gaps):+.5f}" if not bpb else f"{statistics.fmean(gaps):.5f}", f"{std:.5f}"]) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    bpb = "--bpb" in argv
    print(table([a for a in argv if a != "--bpb"], bpb))
    return 0


if __name__ == "__main__":
    sys.exit(main())
