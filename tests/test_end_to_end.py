"""The script as a user runs it: subprocess runs on the bundled sample, single process and torchrun."""
import math
import re

import pytest

from conftest import REPO, TINY_ENV, metric, run_script

LABEL = "int6-int8_brotli11"  # the default export: int6 matrices, int8 embedding and sparse gate, brotli-11 frames
# Phased TTT sized for the sample (2 documents in the first 16,384 tokens): one document per
# batch, one global phase after the first (longest) one, on 1 and 2 ranks alike
# (TTT_PHASE_EXTRA_BATCHES=0); the sliding eval is kept as a diagnostic next to it.
TTT_RUN = {"TTT_ENABLED": "1", "TTT_EVAL_SEQ_LEN": "128", "TTT_CHUNK_SIZE": "64", "TTT_BATCH_SIZE": "1",
           "TTT_LORA_RANK": "8", "TTT_WITH_SLIDING": "1", "PHASED_TTT_NUM_PHASES": "1", "PHASED_TTT_PREFIX_DOCS": "1",
           "GLOBAL_TTT_CHUNK_TOKENS": "2048", "TTT_PHASE_EXTRA_BATCHES": "0",
           "QAT_MODE": "late"}  # off by default; on here so the late-QAT trigger is checked across ranks too


@pytest.fixture(scope="module")
def single_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("single")
    proc = run_script(tmp, TTT_RUN)
    return tmp, proc, (tmp / "run.txt").read_text()


def test_run_trains_exports_reloads_and_scores(tg, single_run):
    tmp, proc, log = single_run
    src = (REPO / "train_gpt.py").read_text()
    assert log.startswith(src)  # the log is the record: it embeds the exact source
    for key in ("code_sha256:", "python:", "torch:", "config:NUM_LAYERS=2", "model_params:", "world_size:1 grad_accum_steps:8",
                "warmup_steps:2", "warmup_graphs:plain+looped", "step:12/12 val_loss:", "looping_start step:5 ", "qat_start step:6", "raw_model:", "averaged_weights: ema",
                "final_live_prequant_exact", "final_prequant_exact", "budget role:mlp", "export_packing", "artifact:",
                f"final_{LABEL}_roundtrip_exact", "final_quant_gap_exact", f"final_{LABEL}_sliding_window_exact val_loss:",
                f"final_{LABEL}_ttt_lora_exact", "ttt_phase:1/1", "train_time_total_ms:", f"final_score_exact metric:final_{LABEL}_ttt_lora"):
        assert key in log, key
    assert "WARNING: VAL_MAX_TOKENS=16384" in log  # the cap is loud
    first_loss = metric(log, "step:1/12", "train_loss")
    assert math.isfinite(metric(log, "final_score_exact")) and metric(log, "final_score_exact", "val_loss") < first_loss - 1.0
    pre, rt = metric(log, "final_prequant_exact"), metric(log, f"final_{LABEL}_roundtrip_exact")
    assert abs(rt - pre) < 0.02 and metric(log, "final_quant_gap_exact") == pytest.approx(rt - pre, abs=2e-8)
    sizes = dict(kv.split(":") for kv in next(l for l in log.splitlines() if l.startswith("code_bytes:")).split())
    assert int(sizes["code_bytes"]) == len(tg.pack_source(src))  # the counted code: the packed script
    assert int(sizes["readable_code_bytes"]) == len((REPO / "train_gpt.py").read_bytes())
    assert int(sizes["model_bytes"]) == (tmp / f"run.{LABEL}").stat().st_size
    assert int(sizes["total_bytes"]) == int(sizes["code_bytes"]) + int(sizes["model_bytes"])
    assert (tmp / "run.raw.pt").is_file() and (tmp / "run.avg.pt").is_file()
    assert "final_score_exact" in proc.stdout  # the console shows progress and the result


def test_sliding_and_ttt_score_every_prediction(single_run):
    _, _, log = single_run
    n = 16384 - 1
    assert re.search(rf"^final_{LABEL}_sliding_window val_loss:.* stride:64 .* tokens:{n} ", log, re.M)
    assert re.search(rf"^final_{LABEL}_ttt_lora val_loss:.* rank:8 chunk:64 phases:1 .* tokens:{n} ", log, re.M)


def test_seed_makes_runs_reproducible(single_run, tmp_path):
    _, _, log = single_run
    run_script(tmp_path, TTT_RUN)
    again = (tmp_path / "run.txt").read_text()
    assert metric(again, "final_score_exact") == metric(log, "final_score_exact")


def test_torchrun_two_ranks_match_single_process(single_run, tmp_path):
    """Same seed and global batch on 2 ranks: training (DDP + split Muon), late QAT trigger,
    EMA, export, sliding-window and TTT eval all agree with the single-process run."""
    _, _, log = single_run
    run_script(tmp_path, TTT_RUN, nproc=2)
    dist_log = (tmp_path / "run.txt").read_text()
    assert "world_size:2 grad_accum_steps:4" in dist_log and "qat_start step:6" in dist_log
    assert "looping_start step:5 " in dist_log
    for name in ("final_prequant_exact", f"final_{LABEL}_sliding_window_exact", "final_score_exact"):
        assert abs(metric(dist_log, name) - metric(log, name)) < 1e-3, name


RANK_SYNC_DRIVER = """
import sys
import torch, torch.distributed as dist
sys.path.insert(0, {repo!r})
import train_gpt as tg

plain_run = tg.Trainer.run


def run_and_compare(self, *args, **kwargs):
    out = plain_run(self, *args, **kwargs)
    flat = torch.cat([p.detach().reshape(-1) for p in self.model.parameters()])
    gathered = [torch.zeros_like(flat) for _ in range(self.ctx.world_size)]
    dist.all_gather(gathered, flat)
    if self.ctx.is_main:
        print(f"rank_weight_max_diff:{{(gathered[0] - gathered[1]).abs().max().item():.3e}} steps:{{out['steps']}}")
    return out


tg.Trainer.run = run_and_compare
sys.exit(tg.main([]))
"""


def test_wallclock_decisions_keep_ranks_bit_identical(tmp_path):
    """Under a wallclock cap the warmdown LR depends on elapsed time. Each rank's own clock
    differs by microseconds, so each rank used to apply a slightly different LR, and the
    weights drifted apart (1e-6 after ~40 steps). All wallclock decisions now use one agreed
    time, so the ranks' weights stay bit-identical."""
    driver = tmp_path / "rank_sync_driver.py"
    driver.write_text(RANK_SYNC_DRIVER.format(repo=str(REPO)))
    proc = run_script(tmp_path, {"ITERATIONS": "100000", "MAX_WALLCLOCK_SECONDS": "4", "WARMDOWN_ITERS": "100000",
                                 "EVAL_STRIDE": "0", "QUANT_METHOD": "rtn"}, nproc=2, script=driver)  # rtn: no GPTQ reserve
    m = re.search(r"rank_weight_max_diff:(\S+) steps:(\d+)", proc.stdout)
    assert m and int(m.group(2)) >= 5, proc.stdout[-2000:]
    assert float(m.group(1)) == 0.0


GRAPH_COUNT_DRIVER = """
import functools
import sys
import torch
from torch._dynamo.utils import counters
torch.compile = functools.partial(torch.compile, backend="eager")  # dynamo's guards and recompiles, no inductor
sys.path.insert(0, {repo!r})
import train_gpt as tg

def counted(prewarm):
    def prewarm_and_count(*args, **kwargs):
        ms = prewarm(*args, **kwargs)
        print(f"graphs_after_prewarm:{{counters['stats']['unique_graphs']}}")
        return ms
    return prewarm_and_count


tg.prewarm_eval, tg.prewarm_ttt = counted(tg.prewarm_eval), counted(tg.prewarm_ttt)
rc = tg.main([])
print(f"graphs_at_end:{{counters['stats']['unique_graphs']}}")
sys.exit(rc)
"""


def test_compiled_run_builds_no_graph_after_the_prewarm(tmp_path):
    """With COMPILE=1 every graph (train step, Newton-Schulz shapes, both eval shapes, the TTT
    adapter and global-step graphs) is built before its timer: neither the training-time
    validation, nor the QAT switch, nor the reloaded artifact's scoring (non-overlapping,
    sliding and phased TTT) compiles anything new. Dynamo runs for real (its guards decide
    recompiles); only inductor is swapped for eager."""
    driver = tmp_path / "graph_count_driver.py"
    driver.write_text(GRAPH_COUNT_DRIVER.format(repo=str(REPO)))
    proc = run_script(tmp_path, {"COMPILE": "1", "VAL_LOSS_EVERY": "5", "EVAL_BATCH_SEQS": "16"} | TTT_RUN
                      | {"TTT_CHUNK_SIZE": "128"}, script=driver)
    log = (tmp_path / "run.txt").read_text()
    assert "compile:1" in log and "eval_prewarm_time:" in log and "qat_start step:6" in log
    assert f"final_{LABEL}_sliding_window_exact" in log and "ttt_phase:1/1" in log
    assert f"final_score_exact metric:final_{LABEL}_ttt_lora" in log
    counts = [int(n) for n in re.findall(r"graphs_after_prewarm:(\d+)", proc.stdout)]
    after = int(re.search(r"graphs_at_end:(\d+)", proc.stdout).group(1))
    assert len(counts) == 3 and counts[0] >= 3 and after == counts[-1]


CONTROL_GROUP_DRIVER = """
import sys
import torch, torch.distributed as dist
sys.path.insert(0, {repo!r})
import train_gpt as tg

dist.init_process_group("gloo")
rank = dist.get_rank()
# What setup_distributed builds on NCCL runs: a separate gloo group for host-side decisions.
ctx = tg.Dist(rank, 2, rank, torch.device("cpu"), control=dist.new_group(backend="gloo"))
with open(f"rank{{rank}}.txt", "w") as f:  # one file per rank: their stdout lines interleave
    f.write(str(tg.host_max(1000.0 + 0.25 * rank, ctx)))
tg.barrier(ctx)
dist.destroy_process_group()
"""


def test_host_max_through_a_gloo_control_group(tmp_path):
    driver = tmp_path / "control_group_driver.py"
    driver.write_text(CONTROL_GROUP_DRIVER.format(repo=str(REPO)))
    run_script(tmp_path, nproc=2, script=driver)
    assert [(tmp_path / f"rank{r}.txt").read_text() for r in (0, 1)] == ["1000.25", "1000.25"]


def test_bad_setting_fails_before_training(tmp_path):
    proc = run_script(tmp_path, {"NUM_KV_HEADS": "3"}, check=False)
    assert proc.returncode != 0 and "NUM_HEADS=2 must be divisible by NUM_KV_HEADS=3" in proc.stderr


def test_missing_data_is_a_clear_error(tmp_path):
    proc = run_script(tmp_path, {"DATA_PATH": str(tmp_path / "nowhere")}, check=False)
    assert proc.returncode != 0 and "is not a directory" in proc.stderr
    assert proc.returncode == 2 and "Traceback" not in proc.stderr  # a user error: the config report's kind
    assert "error:InputError: DATA_PATH=" in (tmp_path / "run.txt").read_text()  # the failure is in the log too


def test_over_cap_artifact_raises_after_saving_everything(tg, tmp_path, monkeypatch):
    for k, v in (TINY_ENV | {"OUT_DIR": str(tmp_path), "RUN_ID": "big", "ITERATIONS": "2", "EVAL_STRIDE": "0"}).items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.setattr(tg, "ARTIFACT_CAP_BYTES", 1000)
    with pytest.raises(RuntimeError, match=r"exceeds the 1000-byte cap"):
        tg.main([])
    log = (tmp_path / "big.txt").read_text()
    assert "final_score_exact" in log and "error:RuntimeError" in log
    assert (tmp_path / "big.raw.pt").is_file() and (tmp_path / f"big.{LABEL}").is_file()
