"""Time data/audit_data.py on the SP8192 proxy, and project its full run on 80 FineWeb shards.

    python bench/data_audit_bench.py --proxy PROXY8192 --work WORK [--shards 80]

1. The full audit (exact, then with --near-dup) of the proxy folder as it is, read-only.
2. A FineWeb-sized folder in WORK built from the proxy's documents: a validation split of
   50,000 documents (proxy training documents with their tokens reversed, so the validation
   lengths cover the training lengths and nearly every training document gets hashed, the
   expensive case), and one training shard of 100,000,000 tokens (the proxy's training
   documents repeated). The audit runs on 3 training shards (links to the one file) and
   prints its validation and training phases: the projection is the whole run plus
   (shards - 3) times the training phase per shard. The shard is in the page cache after the
   first run, so reading 200 MB per shard from disk is not in the per-shard cost: the
   projection adds it at --disk-mb-s.
3. The sampled check of train_gpt.py (train_gpt.audit_data) on --shards links to the shard:
   what the preflight and DRY_RUN cost on an 80-shard folder.

Timings depend on the machine and its load; the output says what ran and prints raw times.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _load(name: str):
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "data" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


aud = _load("audit_data")
bsd = _load("build_sp_dataset")


def timed_audit(folder: Path, **kw) -> tuple[float, dict]:
    lines = []
    t0 = time.perf_counter()
    r = aud.run_audit(folder, aud.AuditOptions(**kw), progress=False, log=lines.append)
    r["time_line"] = lines[-1]
    return time.perf_counter() - t0, r


def docs_of(tokens: np.ndarray, bos: int = 1) -> list[np.ndarray]:
    starts = np.flatnonzero(tokens == bos).tolist() + [len(tokens)]
    return [tokens[s + 1:e] for s, e in zip(starts, starts[1:]) if e - s > 1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--proxy", type=Path, required=True, help="the SP8192 proxy folder (proxy_train_*.bin, proxy_val_*.bin)")
    p.add_argument("--work", type=Path, required=True, help="scratch folder (about 300 MB)")
    p.add_argument("--shards", type=int, default=80)
    p.add_argument("--shard-tokens", type=int, default=100_000_000)
    p.add_argument("--disk-mb-s", type=float, default=1000.0, help="read speed assumed for the projection")
    args = p.parse_args(argv)
    globs = dict(train_glob="proxy_train_*.bin", val_glob="proxy_val_*.bin")

    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")
    for near in (False, True):
        secs, r = timed_audit(args.proxy, near_dup=near, **globs)
        tokens = r["val"]["tokens"] + r["train"]["tokens"]
        print(f"proxy full audit near_dup={near}: {secs:.2f} s, {tokens:,} tokens ({tokens / secs / 1e6:.1f} M tokens/s), "
              f"result {r['result']}, shared {r['shared_docs']['count']}, val docs {r['val']['docs']}, "
              f"train docs {r['train']['docs']}, hashed {r['train']['hashed_docs']}"
              + (f", near-duplicates {r['near_duplicates']['count']}" if near else ""))

    train = np.concatenate([np.fromfile(f, "<u2", offset=1024) for f in sorted(args.proxy.glob("proxy_train_*.bin"))])
    tdocs = docs_of(train)
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    for old in work.glob("fineweb_*.bin"):
        old.unlink()
    val = [d[::-1] for d in (tdocs * (50_000 // len(tdocs) + 1))[:50_000]]
    bsd.write_shard(work / "fineweb_val_000000.bin", np.concatenate([np.concatenate([[1], d]) for d in val]).astype(np.uint16))
    reps = args.shard_tokens // len(train) + 1
    shard = np.tile(train, reps)[:args.shard_tokens]
    bsd.write_shard(work / "fineweb_train_000000.bin", shard)
    del shard
    print(f"scale folder: 50,000 val documents ({aud.shard_tokens(work / 'fineweb_val_000000.bin'):,} tokens), "
          f"training shard of {args.shard_tokens:,} tokens (the proxy's {len(tdocs):,} documents x {reps})")

    def links(n: int) -> None:
        for old in work.glob("fineweb_train_0*.bin"):
            if old.is_symlink():
                old.unlink()
        for i in range(1, n):
            (work / f"fineweb_train_{i:06d}.bin").symlink_to("fineweb_train_000000.bin")

    aud.run_audit(work, aud.AuditOptions(official="none"), progress=False, log=lambda m: None)  # warm the page cache
    for near in (False, True):
        links(3)
        secs, r = timed_audit(work, official="none", near_dup=near)
        train_s = float(r["time_line"].split("training ")[1].rstrip("s)"))
        per_shard = train_s / 3
        read = args.shard_tokens * 2 / 1e6 / args.disk_mb_s
        total = secs + (args.shards - 3) * per_shard + args.shards * read
        print(f"scale full audit near_dup={near} shards=3: {secs:.2f} s, train docs {r['train']['docs']:,}, "
              f"hashed {r['train']['hashed_docs']:,}, result {r['result']}; {r['time_line']}")
        print(f"projection near_dup={near}: {per_shard:.2f} s per {args.shard_tokens:,}-token shard "
              f"({args.shard_tokens / per_shard / 1e6:.1f} M tokens/s), + {read:.2f} s to read it at "
              f"{args.disk_mb_s:.0f} MB/s: {args.shards} shards in about {total:.0f} s ({total / 60:.1f} min)")

    import train_gpt as tg
    links(args.shards)
    cfg = tg.Config.from_env({"DATA_PATH": str(work), "VOCAB_SIZE": "8192"})
    files = lambda split: sorted(str(p) for p in work.glob(f"fineweb_{split}_0*.bin"))
    for attempt in range(2):
        t0 = time.perf_counter()
        problems, line = tg.audit_data(cfg, files("train"), files("val"), 1)
        print(f"trainer sampled check, {len(files('train'))} shards, run {attempt + 1}: "
              f"{time.perf_counter() - t0:.2f} s, problems {len(problems)}; {line}")
    links(1)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
