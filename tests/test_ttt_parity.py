"""TTT parity with the 1.0611 record's own code (bench/ttt_parity.py over bench/parity.py's pair)."""
import sys

import pytest

from conftest import REPO

RECORDS = REPO.parent / "shared" / "reference" / "records"
pytestmark = pytest.mark.skipif(not RECORDS.is_dir(), reason="the reference records are not present")
sys.path.insert(0, str(REPO / "bench"))


def test_ttt_bpb_equals_the_records():
    """Both models from one set of weights, each code's own phased TTT (document order, batches,
    exact contexts, adapters, two global phases) on the same whole documents: bpb equal to
    1e-4 (measured 1.5e-8 at 4,096 tokens)."""
    import ttt_parity
    run = ttt_parity.standalone(["--val-tokens", "2048", "--ttt-tokens", "2048"])
    r = run.report["ttt"]
    assert r["predictions"] > 1500 and abs(r["bpb_ours"] - r["bpb_record"]) <= 1e-4, r
