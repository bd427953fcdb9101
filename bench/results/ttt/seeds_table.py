"""TTT gain per seed: each TTT variant's bpb minus the sliding (stride 64) bpb of the same
reloaded artifact on the same predictions, from artifact_report.py sweep JSONs.

  python seeds_table.py SEED:SLIDING.json:TTT.json[+MORE_TTT.json] ...
  e.g. 1337:sliding_s1337.json:ttt_s1337.json+ttt_extra_s1337.json+ttt_extra2_s1337.json
"""
import json
import statistics
import sys
from pathlib import Path


def rows(spec: str) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for part in spec.split("+"):
        for r in json.loads(Path(part).read_text())["rows"]:
            out.setdefault(r["variant"], r)
    return out


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    seeds, gains, secs, order = [], {}, {}, []
    for arg in argv:
        seed, sliding, ttt = arg.split(":", 2)
        base = rows(sliding)["as_trained"]["sliding:64"]["val_bpb"]
        seeds.append(seed)
        for name, r in rows(ttt).items():
            if name not in order:
                order.append(name)
            gains.setdefault(name, {})[seed] = r["ttt"]["val_bpb"] - base
            secs.setdefault(name, {})[seed] = r["ttt"]["eval_s"]
    head = ["variant"] + [f"gain s{s}" for s in seeds] + ["mean gain", "std", "eval s (per seed)"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for name in order:
        g = [gains[name].get(s) for s in seeds]
        have = [x for x in g if x is not None]
        std = f"{statistics.stdev(have):.5f}" if len(have) > 1 else "-"
        print("| " + " | ".join([name] + [f"{x:+.5f}" if x is not None else "-" for x in g]
                                + [f"{statistics.fmean(have):+.5f}", std,
                                   " / ".join(f"{secs[name][s]:.0f}" for s in seeds if s in secs[name])]) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
