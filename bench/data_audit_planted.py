"""Plant train/val overlaps into copies of a proxy dataset and run data/audit_data.py on each.

    python bench/data_audit_planted.py --proxy PROXY8192 --work WORK

Cases (each a folder under WORK with the proxy's tokenizer-free shards):
  clean      the proxy as it is;
  one_copy   validation document 123 copied into the middle of the first training shard (at a
             document boundary);
  short_holdout  the preparation bug of the records' CaseOps script, scaled down: only the first
             100 of the 500 validation documents held out, documents 100-499 at the head of the
             training stream (in the published case: 10,000 of 50,000).
Prints each case's audit output (the CLI's, --no-progress) and exit status.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def read(path: Path) -> np.ndarray:
    return np.fromfile(path, "<u2", offset=1024)


def write(path: Path, tokens: np.ndarray) -> None:
    header = np.zeros(256, "<i4")
    header[:3] = (20240520, 1, len(tokens))
    with open(path, "wb") as f:
        f.write(header.tobytes())
        f.write(tokens.astype("<u2").tobytes())


def doc_bounds(tokens: np.ndarray) -> list[int]:
    return np.flatnonzero(tokens == 1).tolist() + [len(tokens)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--proxy", type=Path, required=True)
    p.add_argument("--work", type=Path, required=True)
    args = p.parse_args(argv)
    val_path = sorted(args.proxy.glob("proxy_val_*.bin"))[0]
    train_paths = sorted(args.proxy.glob("proxy_train_*.bin"))
    val = read(val_path)
    vb = doc_bounds(val)
    cases = {}
    for case in ("clean", "one_copy", "short_holdout"):
        folder = args.work / case
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        write(folder / val_path.name, val)
        shards = [read(t) for t in train_paths]
        if case == "one_copy":
            b = doc_bounds(shards[0])
            cut = b[len(b) // 2]
            shards[0] = np.concatenate([shards[0][:cut], val[vb[123]:vb[124]], shards[0][cut:]])
            print(f"one_copy: validation document 123 ({vb[124] - vb[123]} tokens, {val_path.name}@{vb[123]}) "
                  f"inserted at {train_paths[0].name}@{cut}")
        if case == "short_holdout":
            stream = np.concatenate([val[vb[100]:], *shards])
            sizes = np.cumsum([len(s) for s in shards])[:-1]
            shards = np.split(stream[:sum(len(s) for s in shards)], sizes)
            print(f"short_holdout: validation documents 100-499 ({len(val) - vb[100]:,} tokens) at the head of the "
                  "training stream")
        for t, tokens in zip(train_paths, shards):
            write(folder / t.name, tokens)
        cmd = [sys.executable, str(REPO / "data" / "audit_data.py"), str(folder), "--train-glob", "proxy_train_*.bin",
               "--val-glob", "proxy_val_*.bin", "--no-progress", "--no-write", "--report", str(folder / "report.tsv")]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        print(f"--- {case}: python data/audit_data.py $WORK/{case} --train-glob 'proxy_train_*.bin' "
              f"--val-glob 'proxy_val_*.bin' --no-progress --no-write --report $WORK/{case}/report.tsv")
        lines = proc.stdout.splitlines()
        shown = lines if len(lines) <= 16 else lines[:8] + [f"... ({len(lines) - 14} lines)"] + lines[-6:]
        print("\n".join(shown))
        print(f"exit status {proc.returncode}; report rows {len((folder / 'report.tsv').read_text().splitlines()) - 1}")
        cases[case] = proc.returncode
    return 0 if cases == {"clean": 0, "one_copy": 1, "short_holdout": 1} else 1


if __name__ == "__main__":
    sys.exit(main())
