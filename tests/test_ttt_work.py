"""bench/ttt_work.py: the TTT work of this script's protocol against the previous one and a record's."""
import json
import math
import sys

import pytest
import torch

from conftest import REPO
from test_data_reader import write_shard

sys.path.insert(0, str(REPO / "bench"))
import ttt_work  # noqa: E402

RECORD = REPO.parent / "shared" / "reference" / "records" / "2026-04-27_1.0611" / "train_gpt.py"


def test_work_of_the_exact_contexts(tmp_path):
    """On 300 documents of 2..3,000 tokens: this protocol's row-tokens and attention never
    exceed the record's (its functions, read from its script) and are within 1% of them; the
    previous bucketed, padded protocol does more of both."""
    if not RECORD.is_file():
        pytest.skip("the reference records are not present")
    g = torch.Generator().manual_seed(0)
    tokens = []
    for n in torch.randint(2, 3000, (300,), generator=g).tolist():
        tokens += [1] + torch.randint(2, 1000, (n - 1,), generator=g).tolist()
    shard = write_shard(tmp_path / "val.bin", tokens)
    out = tmp_path / "work.json"
    assert ttt_work.main(["--val", str(shard), "--record", str(RECORD), "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["ours"]["batches"] == r["record"]["batches"] == math.ceil(300 / 64)
    for key in ("row_tokens", "attn_flops"):
        assert r["record"][key] * 0.99 <= r["ours"][key] <= r["record"][key] < r["before"][key]
    assert r["phases_world1"]["docs"] == [100, 200] and r["phases_world8"]["docs"] == []  # 5 batches: 8 ranks reach no phase
