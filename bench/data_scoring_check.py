"""Build plain SP8192 and CaseOps SP8192 data from a text slice, train a tiny model on each
with train_gpt.py (CPU), and check that every eval path counted the right bytes.

    python bench/data_scoring_check.py SLICE.jsonl --work DIR [--out bench/results/data/scoring_check.txt]

For each build, the run's sliding-window and TTT byte totals must equal the manifest's
text_bytes_val (both score every val target), and the CaseOps run must have used the
sidecar. It also reports what a LUT over the CaseOps pieces would have counted (the
mistake of scoring CaseOps shards without their sidecar). Exit status 1 if a check fails.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import sentencepiece as spm

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import train_gpt as tg  # noqa: E402

TINY = {"NUM_LAYERS": "2", "MODEL_DIM": "64", "NUM_HEADS": "2", "NUM_KV_HEADS": "1", "TRAIN_SEQ_LEN": "128",
        "TRAIN_BATCH_TOKENS": "1024", "ITERATIONS": "6", "WARMDOWN_ITERS": "2", "WARMUP_STEPS": "1",
        "MAX_WALLCLOCK_SECONDS": "0", "TRAIN_LOG_EVERY": "3", "XSA_LAST_N": "1", "EMA_DECAY": "0.5",
        "QAT_START_FRAC": "0.5", "EVAL_STRIDE": "64", "TTT_ENABLED": "1", "TTT_EVAL_SEQ_LEN": "256",
        "TTT_CHUNK_SIZE": "128", "VOCAB_SIZE": "8192", "BIGRAM_VOCAB_SIZE": "2048"}


def build(slice_path: Path, out: Path, caseops: bool) -> dict:
    cmd = [sys.executable, str(REPO / "data/build_sp_dataset.py"), str(slice_path), "--output-dir", str(out),
           "--vocab-size", "8192", "--val-docs", "12", "--prefix", "slice", "--workers", "2", "--no-progress"]
    cmd += ["--caseops"] if caseops else []
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    variables = done.stdout.strip().splitlines()[-1]
    return {"stdout": done.stdout, "env": dict(v.split("=", 1) for v in variables.split()),
            "manifest": json.loads((out / "manifest.json").read_text())}


def train(env: dict, out: Path) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.isupper() or k in ("PATH", "HOME", "LANG", "TMPDIR")}
    env = {k: v.strip("'") for k, v in env.items()}
    run_env = clean | TINY | env | {"OUT_DIR": str(out), "RUN_ID": "run", "PYTHONUNBUFFERED": "1"}
    subprocess.run([sys.executable, str(REPO / "train_gpt.py")], env=run_env, capture_output=True, text=True,
                   check=True, cwd=out)
    return (out / "run.txt").read_text()


def log_bytes(log: str, label: str) -> int:
    return int(re.search(rf"^{label} .*\bbytes:(\d+)", log, re.M).group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("slice", type=Path)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/data/scoring_check.txt")
    args = parser.parse_args()
    report, ok = [f"command: python bench/data_scoring_check.py SLICE --work WORK  (SLICE: {args.slice.name})"], True
    for name, caseops in (("sp8192", False), ("caseops_sp8192", True)):
        data = args.work / name
        b = build(args.slice, data, caseops)
        m = b["manifest"]
        log = train(b["env"], data)
        keep = [ln for ln in log.splitlines() if ln.startswith(("bpb_bytes", "tokenizer", "final_", "step:6/"))
                and "_exact" not in ln]
        sliding = log_bytes(log, r"final_\S+_sliding_window")
        ttt = log_bytes(log, r"final_\S+_ttt_lora")
        report += [f"## {name}", b["stdout"].strip(), *keep,
                   f"manifest text_bytes_val:{m['text_bytes_val']} tokens_val:{m['tokens_val']}",
                   f"check sliding bytes == text_bytes_val: {sliding == m['text_bytes_val']}",
                   f"check ttt bytes == text_bytes_val: {ttt == m['text_bytes_val']}"]
        ok &= sliding == ttt == m["text_bytes_val"]
        if caseops:
            ok &= "bpb_bytes:sidecar" in log
            sp = spm.SentencePieceProcessor(model_file=str(data / m["tokenizer"]["model"]))
            tokens = tg.torch.cat([tg.load_shard(data / n) for n in m["shards"]["val"]])
            lut = int(tg.lut_target_bytes(tokens, tg.build_byte_lut(sp, 8192)).sum())
            report.append(f"a LUT over the CaseOps pieces would count {lut} bytes, "
                          f"{100 * (lut / m['text_bytes_val'] - 1):.2f}% more than the sidecar's {m['text_bytes_val']}")
        else:
            ok &= "bpb_bytes:lut" in log
    report.append(f"all checks passed: {ok}")
    text = "\n".join(report).replace(str(args.work), "$WORK") + "\n"
    args.out.write_text(text)
    print(text, end="")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
