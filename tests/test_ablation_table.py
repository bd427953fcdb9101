"""bench/results/model/ablation_table.py: per-variant means and per-seed paired differences from trainer logs."""
import importlib.util

import pytest

from conftest import REPO

_spec = importlib.util.spec_from_file_location("ablation_table", REPO / "bench" / "results" / "model" / "ablation_table.py")
at = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(at)


def write_log(d, name, params, pre, live):
    (d / name).write_text("source\n" + "=" * 100 + f"\nmodel_params:{params} attn:1\n"
                          f"final_live_prequant_exact val_loss:1.0 val_bpb:{live}\n"
                          f"final_prequant_exact val_loss:1.0 val_bpb:{pre}\n"
                          f"final_int5-int8_brotli11_roundtrip_exact val_loss:1.0 val_bpb:{pre + 0.001}\n")


def test_paired_differences_and_metrics(tmp_path, capsys):
    for seed, base in ((1, 2.0), (2, 2.1)):
        write_log(tmp_path, f"new_s{seed}.txt", 100, base, base - 0.01)
        write_log(tmp_path, f"new_x_s{seed}.txt", 90, base + 0.02 + 0.01 * seed, base)
    (tmp_path / "broken_s3.txt").write_text("no score here")
    assert at.main([str(tmp_path), "--order", "new,new_x"]) == 0
    rows = {l.split("|")[1].strip(): [c.strip() for c in l.split("|")[2:-1]] for l in capsys.readouterr().out.splitlines()[2:]}
    assert rows["new"][:3] == ["100", "1,2", "2.0500"] and rows["new"][4] == "-"
    assert rows["new_x"][4] == "+0.0350 ± 0.0071 (2)" and "broken" not in rows  # a log without a score is skipped
    at.main([str(tmp_path), "--metric", "roundtrip"])
    assert "2.0510" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        at.main([str(tmp_path / "empty")])
