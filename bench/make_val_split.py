"""Make a dataset folder whose validation split has a chosen number of tokens, by repeating
an existing split whole documents at a time; the train shards and tokenizer are linked.

FineWeb's sp1024 validation split has 62,021,632 tokens, and each rank of an 8-GPU run scores
an eighth of it (7,752,704). The proxy corpus has a 608,270-token validation split, so timing
the sliding-window eval at the real size needs the proxy's split repeated: every copy starts
on a document boundary (a BOS token), so the repeated split is still a sequence of whole
documents. The scores of such a split are meaningless as quality numbers; it is for timing.

Usage:
    python bench/make_val_split.py --src ../shared/proxy --tokens 7752704 --out /tmp/proxy_val8
    DATA_PATH=/tmp/proxy_val8 TRAIN_GLOB='proxy_train_*.bin' VAL_GLOB='proxy_val_*.bin' ...
"""
from __future__ import annotations

import argparse
import glob
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "data"))
from build_sp_dataset import read_shard, write_shard  # noqa: E402

FINEWEB_VAL_TOKENS = 62_021_632  # sp1024 validation split, as the records' logs report


def repeat_to(tokens: np.ndarray, n: int, bos_id: int) -> np.ndarray:
    """The first n tokens of tokens, tokens, tokens, ... Each copy must start with BOS so the
    copies are whole documents one after another."""
    if len(tokens) == 0 or tokens[0] != bos_id:
        raise ValueError(f"the source validation split must start with BOS={bos_id} (a document start)")
    reps = -(-n // len(tokens))
    return np.tile(tokens, reps)[:n]


def make_split(src: Path, out: Path, n_tokens: int, val_glob: str, bos_id: int) -> Path:
    val_files = sorted(glob.glob(str(src / val_glob)))
    if not val_files:
        raise FileNotFoundError(f"no validation shards match {src / val_glob}")
    tokens = np.concatenate([read_shard(f) for f in val_files])
    out.mkdir(parents=True, exist_ok=True)
    val_names = {Path(f).name for f in val_files}
    for f in sorted(src.iterdir()):  # train shards, tokenizer, everything but the old val split
        if f.name not in val_names and not (out / f.name).exists():
            os.symlink(f.resolve(), out / f.name)
    dest = out / Path(val_files[0]).name
    if dest.is_symlink():  # a link left by an earlier run: never write through it into the source
        dest.unlink()
    write_shard(dest, repeat_to(tokens, n_tokens, bos_id))
    return dest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", type=Path, required=True, help="dataset folder with the source split (and train shards, tokenizer)")
    ap.add_argument("--out", type=Path, required=True, help="folder to create: the repeated split plus links to the rest")
    ap.add_argument("--tokens", type=int, default=FINEWEB_VAL_TOKENS,
                    help=f"validation tokens to write (default {FINEWEB_VAL_TOKENS:,}, FineWeb's full split)")
    ap.add_argument("--val-glob", default="*_val_*.bin", help="source validation shards, relative to --src")
    ap.add_argument("--bos-id", type=int, default=1, help="document-start token id (default 1)")
    args = ap.parse_args(argv)
    if args.tokens < 2:
        ap.error("--tokens must be at least 2")
    if args.out.resolve() == args.src.resolve():
        ap.error("--out must differ from --src (the source split would be overwritten)")
    dest = make_split(args.src, args.out, args.tokens, args.val_glob, args.bos_id)
    print(f"wrote {dest} with {args.tokens:,} tokens; other files of {args.src} linked into {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
