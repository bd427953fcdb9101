"""bench/artifact_report.py: variant specs."""
import sys

from conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
import artifact_report  # noqa: E402


def test_variant_values_may_hold_commas():
    name, env = artifact_report.parse_overrides("today:TTT_TARGETS=q,v,head,TTT_LORA_RANK=8,PHASED_TTT_NUM_PHASES=0")
    assert name == "today" and env == {"TTT_TARGETS": "q,v,head", "TTT_LORA_RANK": "8", "PHASED_TTT_NUM_PHASES": "0"}
    assert artifact_report.parse_overrides("as_trained:") == ("as_trained", {})
