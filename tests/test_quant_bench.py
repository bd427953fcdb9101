"""bench/artifact_report.py sweep with GPTQ/LQER variants and bench/compressors.py, on a tiny run's saved weights."""
import json
import subprocess
import sys

import pytest

from conftest import REPO, run_script


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("quant_bench")
    run_script(tmp, {"ITERATIONS": "6", "EVAL_STRIDE": "0", "QAT_MODE": "off", "OMP_NUM_THREADS": "1"})
    return tmp


def test_help_of_both_tools():
    for tool, words in (("artifact_report.py", ("sweep", "budget")), ("compressors.py", ("--compressors", "shuffle"))):
        out = subprocess.run([sys.executable, str(REPO / "bench" / tool), "--help"], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0 and all(w in out.stdout for w in words), out.stderr


def test_sweep_scores_rtn_gptq_and_lqer_variants(tiny_run, tmp_path):
    from bench import artifact_report as ar
    out = tmp_path / "sweep.json"
    rc = ar.main(["sweep", str(tiny_run / "run.txt"), "--weights", str(tiny_run / "run.raw.pt"), "--prequant",
                  "--variant", "rtn:QUANT_METHOD=rtn,QUANT_CLIP=amax", "--variant", "gptq:QUANT_METHOD=gptq,QUANT_CLIP=sdclip,GPTQ_CALIBRATION_BATCHES=2",
                  "--variant", "gptq_lqer:QUANT_METHOD=gptq,QUANT_CLIP=sdclip,GPTQ_CALIBRATION_BATCHES=2,LQER_ENABLED=1",
                  "--out", str(out)])
    rows = {r["variant"]: r for r in json.loads(out.read_text())["rows"]}
    assert rc == 0 and set(rows) == {"rtn", "gptq", "gptq_lqer"}
    assert len({r["prequant_nonoverlap_bpb"] for r in rows.values()}) == 1
    assert any(l.startswith("gptq matrices:") for l in rows["gptq"]["budget"])
    assert any(l.startswith("lqer rank:4") for l in rows["gptq_lqer"]["budget"])
    assert rows["gptq_lqer"]["model_bytes"] > rows["gptq"]["model_bytes"]
    assert "quant gap" in out.with_suffix(".md").read_text()


def test_compressor_table_covers_every_combination(tiny_run, tmp_path):
    from bench import compressors
    out = tmp_path / "c.json"
    assert compressors.main([str(tiny_run / "run.txt"), "--weights", str(tiny_run / "run.raw.pt"), "--out", str(out),
                             "--compressors", "zstd-22,lzma-9"]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 2 * 2 * 2 * 2  # compressors x packing x shuffle x reorder
    plain = [r for r in rows if r["compressor"] == "zstd-22" and not r["shuffle"] and not r["reorder"]]
    assert min(r["vs_zstd_plain"] for r in plain) == 0.0
    with pytest.raises(SystemExit, match="unknown compressor"):
        compressors.compressor("gzip-9")


def test_a_missing_compressor_is_a_clear_error(monkeypatch):
    from bench import compressors
    monkeypatch.setitem(sys.modules, "brotli", None)  # import brotli now raises ImportError
    with pytest.raises(SystemExit, match="brotli-11 was asked for but the brotli package is not installed"):
        compressors.compressor("brotli-11")


def test_greedy_row_order_is_a_permutation_chaining_neighbours():
    import numpy as np
    from bench import compressors
    rows = np.array([[0, 0], [9, 9], [1, 0], [8, 9], [2, 1]], dtype=np.int8)
    order = compressors.greedy_row_order(rows)
    assert sorted(order) == list(range(5)) and list(order) == [0, 2, 4, 3, 1]
    assert compressors.byte_shuffle(bytes([1, 2, 3, 4, 5])) == bytes([1, 3, 5, 2, 4])


def test_pergroup_ratio_prints_every_role_and_an_exact_round_trip(tiny_run, capsys):
    from bench import pergroup_ratio
    assert pergroup_ratio.main([str(tiny_run / "run.txt"), "--weights", str(tiny_run / "run.raw.pt"),
                                "--set", "QUANT_METHOD=rtn"]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = {l.split()[0]: l.split()[1:] for l in out}
    assert {"attn", "mlp", "embed", "total_bytes"} <= rows.keys() and out[-1] == "round_trip: exact"
    assert int(rows["embed"][3]) > 0 == int(rows["attn"][3])  # only the sorted roles carry permutations
    assert float(rows["total_bytes"][3]) == pytest.approx(int(rows["total_bytes"][1]) / int(rows["total_bytes"][0]), abs=1e-4)
