"""DRY_RUN's projected model bytes of the presets for several PROJECTION_ROW_MAX values (the std
at which each synthetic row carries one large entry; 0 = none, nearly Gaussian rows), to compare
with the records' published sizes: 1.1248 (amax, zstd-22) 15,487,414 model bytes; 1.0856 (SDClip,
brotli) under 15,968,000 (its total was under 16,000,000 with 32 KB of code).

    python bench/projection_tail.py [--values 0,5,6,7]
"""
import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import train_gpt as tg  # noqa: E402

CASES = [("record_0321_1.1248.env", {}), ("record_0405_1.0856.env", {}), ("record_0427_1.0611.env", {})]


def projected(name: str, over: dict) -> int:
    env = dict(line.split("=", 1) for line in (ROOT / "configs" / name).read_text().splitlines() if line)
    cfg = tg.Config.from_env({**env, **over})
    with torch.device("meta"):
        model = tg.GPT(cfg, max_len=cfg.train_seq_len)
    return tg.project_artifact(model, cfg)[0]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--values", default="0,5,6,7", help="PROJECTION_ROW_MAX values, comma-separated")
    args = p.parse_args(argv)
    print("row_max " + " ".join(f"{n}:model_bytes" for n, _ in CASES))
    for v in [float(x) for x in args.values.split(",")]:
        tg.PROJECTION_ROW_MAX = v
        print(f"{v:g} " + " ".join(str(projected(n, o)) for n, o in CASES), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
