"""CaseOps end to end: data/build_sp_dataset.py --caseops builds a small dataset, and
train_gpt.py scores it with the byte sidecar in every eval path (non-overlapping, sliding,
TTT); without the sidecar it refuses to run."""
import json
import re
import shutil

import numpy as np
import pytest

from conftest import run_script
from test_data_tools import VOCAB, _caseops_docs, bsd

VAL_DOCS = 6


@pytest.fixture(scope="module")
def caseops_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("caseops_e2e")
    src = root / "c.jsonl"
    src.write_text("".join(json.dumps({"text": d}) + "\n" for d in _caseops_docs()), encoding="utf-8")
    out = root / "data"
    assert bsd.main([str(src), "--output-dir", str(out), "--vocab-size", str(VOCAB), "--val-docs", str(VAL_DOCS),
                     "--caseops", "--no-progress", "--workers", "1"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    env = bsd.trainer_variables(manifest, out)
    return out, manifest, env


def _bytes(log: str, label: str) -> int:
    m = re.search(rf"^{label}\S* .*\bbytes:(\d+)", log, re.M)
    assert m, f"no {label} line"
    return int(m.group(1))


def test_trainer_scores_caseops_data_with_the_sidecar_everywhere(caseops_data, tmp_path):
    out, manifest, env = caseops_data
    overrides = {**env, "ITERATIONS": "4", "WARMDOWN_ITERS": "2", "TRAIN_LOG_EVERY": "2", "QAT_START_FRAC": "0.5",
                 "EVAL_STRIDE": "64", "TTT_ENABLED": "1", "TTT_WITH_SLIDING": "1", "TTT_EVAL_SEQ_LEN": "128", "TTT_CHUNK_SIZE": "64",
                 "VAL_MAX_TOKENS": "0"}
    assert overrides["CASEOPS_ENABLED"] == "1"
    run_script(tmp_path, overrides)
    log = (tmp_path / "run.txt").read_text()
    assert "bpb_bytes:sidecar files:1 glob:fineweb_val_bytes_*.bin" in log
    assert f"sha256:{manifest['tokenizer']['sha256']}" in log
    assert f"tokenizer_manifest_check:{out / 'manifest.json'}" in log
    # Sliding and TTT score every target: their bytes are the original text's, the sidecar total.
    assert _bytes(log, "final_\\S+_sliding_window") == manifest["text_bytes_val"]
    assert _bytes(log, "final_\\S+_ttt_lora") == manifest["text_bytes_val"]
    # The non-overlapping eval drops the final partial window: the sidecar sum of what it scores.
    side = np.concatenate([bsd.read_shard(out / n) for n in manifest["shards"]["val_bytes"]]).astype(np.int64)
    seq = 128  # conftest's TRAIN_SEQ_LEN
    scored = (len(side) - 1) // seq * seq
    assert _bytes(log, "final_\\S+_roundtrip") == int(side[1:scored + 1].sum())
    # ... which is fewer bytes than a LUT over the transformed pieces would count.
    assert manifest["text_bytes_val"] < manifest["tokens_val"] * 10


def test_caseops_without_its_sidecar_refuses_to_run(caseops_data, tmp_path):
    out, _, env = caseops_data
    bare = tmp_path / "bare"
    shutil.copytree(out, bare, ignore=shutil.ignore_patterns("*_val_bytes_*"))
    overrides = {**env, "DATA_PATH": str(bare), "TOKENIZER_PATH": str(bare / env["TOKENIZER_PATH"].split("/")[-1])}
    proc = run_script(tmp_path, overrides, check=False)
    assert proc.returncode != 0
    assert "CASEOPS_ENABLED=1 but no byte sidecar matches" in proc.stdout + proc.stderr
