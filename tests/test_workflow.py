"""What a competitor's tools see: the official log patterns match our log, an artifact can be
re-scored alone (EVAL_ONLY), and a dry run checks a configuration in seconds (DRY_RUN)."""
import re

import pytest

from conftest import REPO, run_script

# The patterns of the official baseline's log lines, as reviewers' and community scripts match them.
OFFICIAL = {
    "step": re.compile(r"^step:(\d+)/(\d+) train_loss:([\d.]+) train_time:(\d+)ms step_avg:([\d.]+)ms", re.M),
    "val": re.compile(r"^step:(\d+)/\d+ val_loss:([\d.]+) val_bpb:([\d.]+) train_time:(\d+)ms step_avg:([\d.]+)ms", re.M),
    "serialized": re.compile(r"^Serialized model (\S+): (\d+) bytes", re.M),
    "code": re.compile(r"^Code size: (\d+) bytes$", re.M),
    "total": re.compile(r"^Total submission size (\S+): (\d+) bytes$", re.M),
    "peak": re.compile(r"^peak memory allocated: (\d+) MiB reserved: (\d+) MiB$", re.M),
    "exact": re.compile(r"^final_\S+_exact val_loss:([\d.]+) val_bpb:([\d.]+)", re.M),
}
LABEL = "int5-int6-int8_zstd22"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trained")
    run_script(tmp)
    return tmp, (tmp / "run.txt").read_text()


def kv_line(log: str, prefix: str) -> dict:
    line = next(l for l in log.splitlines() if l.startswith(prefix))
    return dict(tok.split(":", 1) for tok in line.split() if ":" in tok)


def test_official_patterns_match_our_log(trained):
    tmp, log = trained
    body = log.split("=" * 100, 1)[1]  # the log after the embedded source
    ours = [l for l in body.splitlines() if l.startswith("step:") and "train_loss:" in l]
    steps = OFFICIAL["step"].findall(body)
    assert ours and len(steps) == len(ours)  # every one of our step lines matches the official pattern
    assert [int(s[0]) for s in steps] == [1, 4, 8, 12] and all(int(s[1]) == 12 for s in steps)
    assert OFFICIAL["val"].search(body).group(1) == "12"
    sizes = kv_line(body, "code_bytes:")
    (fmt, model), = OFFICIAL["serialized"].findall(body)
    assert fmt == LABEL and int(model) == int(sizes["model_bytes"]) == (tmp / f"run.{LABEL}").stat().st_size
    assert int(OFFICIAL["code"].search(body).group(1)) == int(sizes["code_bytes"]) == len((REPO / "train_gpt.py").read_bytes())
    (fmt, total), = OFFICIAL["total"].findall(body)
    assert fmt == LABEL and int(total) == int(sizes["total_bytes"])
    # A script that takes the last `final_*_exact val_loss: val_bpb:` line gets the final score.
    last = OFFICIAL["exact"].findall(body)[-1]
    score = kv_line(body, "final_score_exact ")
    assert last == (score["val_loss"], score["val_bpb"])


def test_peak_memory_line_matches_the_official_pattern(tg):
    lines = tg.peak_memory_lines(20862 * 2**20 + 5, 21204 * 2**20)
    assert OFFICIAL["peak"].match(lines[0]).groups() == ("20862", "21204")
    assert lines[1] == "peak_memory_allocated_mib:20862 peak_memory_reserved_mib:21204"


def test_records_tool_reads_our_sizes_from_our_line(trained):
    import sys
    sys.path.insert(0, str(REPO / "records"))
    import records_tool
    tmp, _ = trained
    run = records_tool.parse_log(tmp / "run.txt")
    assert run.total_bytes == run.code_bytes + run.model_bytes == int(kv_line((tmp / "run.txt").read_text(), "code_bytes:")["total_bytes"])
    assert "code_bytes: model_bytes: total_bytes:" in run.notes["total_bytes"]
