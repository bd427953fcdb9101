"""bench/benchmark.py: log parsing on a real train_gpt.py log, statistics, the FLOPs formula,
and the CLI end to end (two seeds of a tiny config on the sample, plus a failing config)."""
import json
import math
import re
import subprocess
import sys

import pytest

from conftest import REPO, TINY_ENV, clean_environ, run_script

from bench import benchmark as bm

BENCH = REPO / "bench" / "benchmark.py"
# One OpenMP thread per trainer process: on a small shared CPU, 2-thread runs slow down many times
# over whenever another process competes for the cores; a tiny model loses nothing with one thread.
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def exact(log: str, name: str, key: str = "val_bpb") -> float:
    """The value of `key` on the log line whose first word is exactly `name`."""
    return float(re.search(rf"^{re.escape(name)} .*?\b{key}:(-?[0-9.]+)", log, re.M).group(1))

# The core architecture at the script's original defaults (9 layers, d=512, MLP 2x, tied).
CORE_CFG = {"NUM_LAYERS": "9", "MODEL_DIM": "512", "NUM_HEADS": "8", "NUM_KV_HEADS": "4", "MLP_MULT": "2.0",
            "VOCAB_SIZE": "1024", "TRAIN_SEQ_LEN": "1024", "TIE_EMBEDDINGS": "True", "TRAIN_BATCH_TOKENS": "524288"}


@pytest.fixture(scope="module")
def tiny_log(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench_log")
    run_script(tmp, {"ITERATIONS": "6", "TRAIN_LOG_EVERY": "2", "WARMDOWN_ITERS": "2"} | ONE_THREAD)
    return (tmp / "run.txt").read_text()


def test_parse_real_log(tiny_log):
    p = bm.parse_log(tiny_log)
    assert p["config"]["NUM_LAYERS"] == TINY_ENV["NUM_LAYERS"] and p["config"]["ITERATIONS"] == "6"
    assert p["device"] == "cpu" and p["device_count"] == 1 and p["cuda"] == "none"
    assert p["python"].count(".") == 2 and p["torch"].startswith("2.")
    assert len(p["code_sha256"]) == 64 and p["world_size"] == 1 and p["grad_accum_steps"] == 8
    assert p["model_params"] > 0 and p["steps"] == 6
    assert [s["step"] for s in p["train_steps"]] == [1, 2, 4, 6]
    assert p["warmup_time_ms"] == int(re.search(r"warmup_time:(\d+)ms", tiny_log).group(1))
    assert p["eval_time_total_ms"] == int(re.search(r"eval_time_total_ms:(\d+)", tiny_log).group(1))
    assert p["export_ms"] == int(re.search(r"export_time:(\d+)ms", tiny_log).group(1))
    assert "eval_prewarm_ms" not in p  # eager CPU run: nothing to prewarm
    # the header counts the file that ran, the size line the packed form a submission ships
    assert p["code_bytes_header"] == (REPO / "train_gpt.py").stat().st_size > p["code_bytes"]
    assert p["total_bytes"] == p["code_bytes"] + p["model_bytes"]
    # every final_*_exact line of the log is parsed, with its exact numbers
    names = set(re.findall(r"^(final_\S+)_exact ", tiny_log, re.M)) - {"final_score"}
    assert {"final_prequant"} <= names and names == set(p["finals"])
    for name in names:
        assert p["finals"][name]["val_bpb"] == exact(tiny_log, name + "_exact")
    assert p["score"]["val_bpb"] == exact(tiny_log, "final_score_exact") and p["score"]["metric"] in names

    m = bm.run_metrics(p, peak_rss_mib=321.0, wall_s=9.5, peak_tflops=None)
    t = {s["step"]: s["train_time"] for s in p["train_steps"]}
    steady = (p["train_time_total_ms"] - t[1]) / (6 - 1)  # the first (slow) step is excluded
    assert m["ms_per_step"] == pytest.approx(steady)
    assert m["tokens_per_s"] == pytest.approx(int(TINY_ENV["TRAIN_BATCH_TOKENS"]) * 1000 / steady)
    assert m["ms_per_step_median_interval"] is not None
    assert m["val_bpb_prequant"] == exact(tiny_log, "final_prequant_exact")
    assert m["val_bpb_score"] == exact(tiny_log, "final_score_exact")
    assert m["peak_rss_mib"] == 321.0 and m["peak_gpu_mem_alloc_mib"] is None
    assert m["mfu"] is None and m["model_tflops"] > 0  # no GPU: no MFU unless a peak is given
    assert bm.run_metrics(p, None, 1.0, peak_tflops=1.0)["mfu"] == pytest.approx(m["model_tflops"] / 1.0)


def test_parse_skips_the_embedded_source_and_reads_gpu_lines():
    log = "\n".join([
        'log(f"step:{step} train_loss:... final_score_exact val_bpb:9.9")',  # source text above the separator
        "=" * 100,
        "python:3.12.1 torch:2.9.0+cu128 cuda:12.8",
        "device:NVIDIA H100 80GB HBM3 count:8",
        *[f"config:{k}={v}" for k, v in CORE_CFG.items()],
        "model_params:17059912",
        "world_size:8 grad_accum_steps:1 micro_batch_seqs:64 compile:1 autocast:bf16",
        "warmup_steps:20 warmup_time:41234ms (weights, optimizer state and data position restored)",
        "eval_prewarm_time:35012ms (eval graphs compiled on dummy tokens before the timer)",
        "step:1/200 train_loss:6.9 lr_scale:1.0000 train_time:400ms step_avg:400.00ms tok_s:1",
        "step:100/200 train_loss:3.1 lr_scale:1.0000 train_time:9310ms step_avg:93.10ms tok_s:1",
        "step:200/200 train_loss:2.9 lr_scale:1.0000 train_time:18310ms step_avg:91.55ms tok_s:1",
        "peak_memory_allocated_mib:10240 peak_memory_reserved_mib:11000",
        "final_prequant_exact val_loss:2.50000000 val_bpb:1.48000000",
        "final_int8_zstd22_roundtrip_exact val_loss:2.51000000 val_bpb:1.49000000",
        "artifact:/x/run.int8_zstd22 format:int8_zstd22 params:17059912 bytes:15000000 export_time:5321ms",
        "final_x_sliding_window val_loss:2.4000 val_bpb:1.4000 stride:64 seq_len:1024 eval_time:61234ms tokens:9 bytes:9",
        "final_x_sliding_window_exact val_loss:2.4 val_bpb:1.40000000 stride:64 seq_len:1024",
        "final_quant_gap_exact val_loss:0.01000000 val_bpb:-0.00100000",
        "code_bytes:50000 model_bytes:15000000 total_bytes:15050000 cap:16000000",
        "train_time_total_ms:18310 eval_time_total_ms:70000 steps:200",
        "final_score_exact metric:final_x_sliding_window val_loss:2.4 val_bpb:1.40000000",
    ])
    p = bm.parse_log(log)
    assert p["device"] == "NVIDIA H100 80GB HBM3" and p["device_count"] == 8 and p["cuda"] == "12.8"
    assert p["finals"]["final_x_sliding_window"]["stride"] == 64
    assert p["finals"]["final_quant_gap"]["val_bpb"] == -0.001
    m = bm.run_metrics(p, peak_rss_mib=2000.0, wall_s=100.0, peak_tflops=None)
    assert m["ms_per_step"] == pytest.approx((18310 - 400) / 199)
    assert m["tokens_per_s_per_device"] == pytest.approx(m["tokens_per_s"] / 8)
    assert m["peak_gpu_mem_alloc_mib"] == 10240 and m["warmup_time_ms"] == 41234
    assert (m["eval_prewarm_ms"], m["export_ms"], m["sliding_eval_ms"]) == (35012, 5321, 61234)
    assert m["val_bpb_score"] == 1.4 and m["final_int8_zstd22_roundtrip.val_bpb"] == 1.49
    flops = bm.model_flops(CORE_CFG)["flops_per_token"]
    assert m["mfu"] == pytest.approx(flops * m["tokens_per_s"] / (8 * 989e12))
    assert bm.run_info(p, "x")["param_formula_matches_log"] is True


def test_stats_on_known_numbers():
    s = bm.stats([1, 2, 3, 4])
    assert s == dict(n=4, mean=2.5, std=pytest.approx(math.sqrt(5 / 3)), min=1.0, max=4.0)  # sample std (n-1)
    assert bm.stats([1.5, None, float("nan")]) == dict(n=1, mean=1.5, std=None, min=1.5, max=1.5)
    assert bm.stats([]) == dict(n=0, mean=None, std=None, min=None, max=None)


def test_flops_formula_on_the_core_config():
    f = bm.model_flops(CORE_CFG)
    per_layer = 512 * 512 + 2 * 512 * 256 + 512 * 512 + 2 * 512 * 1024  # q, k, v, out, MLP in/out
    assert f["matmul_params"] == 9 * per_layer + 1024 * 512 == 17_039_360  # + the tied head, counted once
    assert f["formula_total_params"] == 17_059_912  # the core model's pinned parameter count
    assert f["attn_flops_per_token"] == 12 * 9 * 512 * 1024
    assert f["flops_per_token"] == 6 * 17_039_360 + 12 * 9 * 512 * 1024 == 158_859_264
    # with the log's role counts: every Muon matrix plus the head; an untied head has its own role
    roles = {"attn": 100, "mlp": 200, "proj": 30, "embed": 1024 * 512, "bigram": 999, "scalar": 7}
    assert bm.model_flops(CORE_CFG, roles)["matmul_params"] == 330 + 1024 * 512
    assert bm.model_flops(CORE_CFG | {"TIE_EMBEDDINGS": "False"}, roles | {"head": 5})["matmul_params"] == 335
    assert bm.peak_tflops_for("NVIDIA H100 80GB HBM3") == 989 and bm.peak_tflops_for("NVIDIA H200") == 989
    assert bm.peak_tflops_for("NVIDIA H100 PCIe") == 756 and bm.peak_tflops_for("cpu") is None


def test_config_parsing(tmp_path):
    assert bm.parse_assignments("A=1,GLOB=a,b,C_2=x=y", "t") == {"A": "1", "GLOB": "a,b", "C_2": "x=y"}
    with pytest.raises(ValueError):
        bm.parse_assignments("lower=1", "t")
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"wide": {"MODEL_DIM": 256, "TIE_EMBEDDINGS": True}}))
    assert bm.load_configs(["core:NUM_LAYERS=4"], [str(f)]) == {
        "wide": {"MODEL_DIM": "256", "TIE_EMBEDDINGS": "1"}, "core": {"NUM_LAYERS": "4"}}
    with pytest.raises(ValueError):
        bm.load_configs(["a.b:X=1"], [])


def test_import_does_no_work_and_dry_run_builds_the_torchrun_command():
    code = ("import sys; import bench.benchmark, bench.profile_step; assert 'torch' not in sys.modules; "
            "from bench.benchmark import main; sys.exit(main(['--dry-run', '--nproc', '2', '--steps', '3', "
            "'--seeds', '1,2', '--dataset', 'sample', '--config', 'a:NUM_LAYERS=2']))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 2 and "torch.distributed.run --standalone --nproc_per_node=2" in lines[0]
    assert "ITERATIONS=3 MAX_WALLCLOCK_SECONDS=0" in lines[0] and "SEED=2" in lines[1] and "RUN_ID=a_s2" in lines[1]
    help_ = subprocess.run([sys.executable, str(BENCH), "--help"], capture_output=True, text=True, timeout=60)
    assert help_.returncode == 0 and "--seeds" in help_.stdout and "--peak-tflops" in help_.stdout


def test_cli_two_seeds_and_a_failing_config(tmp_path):
    out = tmp_path / "res"
    env_args = [a for k, v in TINY_ENV.items() if k not in ("ITERATIONS", "MAX_WALLCLOCK_SECONDS")
                for a in ("--env", f"{k}={v}")]
    cmd = [sys.executable, str(BENCH), *env_args, "--env", "OMP_NUM_THREADS=1", "--steps", "4", "--seeds", "1,2",
           "--out", str(out), "--config", "tiny", "--config", "bad:NUM_LAYERS=abc"]
    stray = {"QK_GAIN_INIT": "9.5", "TRAIN_FOOBAR": "1"}  # set in the shell: must not reach the runs
    proc = subprocess.run(cmd, env=clean_environ() | stray, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr  # a failed config fails the session...
    assert "[1/4] start tiny_s1" in proc.stdout and "[2/4] done tiny_s2" in proc.stdout
    assert "[3/4] FAILED bad_s1" in proc.stdout and "NUM_LAYERS" in proc.stdout
    doc = json.loads((out / "results.json").read_text())  # ...without losing the other results
    for key in ("created", "command", "mode", "base_env", "configs", "environment", "runs", "summary", "n_failed"):
        assert key in doc, key
    for key in ("hostname", "cpu_model", "cpu_count", "git_commit", "git_dirty", "script_sha256"):
        assert key in doc["environment"], key
    assert set(stray) <= set(doc["dropped_inherited_env"])
    assert doc["n_failed"] == 2 and [r["run_id"] for r in doc["runs"]] == ["tiny_s1", "tiny_s2", "bad_s1", "bad_s2"]
    ok = [r for r in doc["runs"] if r["ok"]]
    assert [r["seed"] for r in ok] == [1, 2] and [r["resolved_config"]["SEED"] for r in ok] == ["1", "2"]
    for r in ok:
        assert r["resolved_config"]["NUM_LAYERS"] == TINY_ENV["NUM_LAYERS"]
        assert r["resolved_config"]["QK_GAIN_INIT"] != "9.5"
        assert r["rc"] == 0 and r["metrics"]["steps"] == 4 and (out / r["log"]).is_file()
        for key in ("ms_per_step", "tokens_per_s", "peak_rss_mib", "val_bpb_prequant", "val_bpb_score", "total_bytes",
                    "model_bytes", "code_bytes", "eval_time_ms", "warmup_time_ms", "flops_per_token"):
            assert r["metrics"][key] is not None and r["metrics"][key] > 0, key
        for key in ("python", "torch", "cuda", "device", "code_sha256", "peak_memory_source"):
            assert key in r["info"], key
    assert len({r["info"]["code_sha256"] for r in ok}) == 1  # both seeds ran the same snapshot
    s = doc["summary"]["tiny"]
    assert s["n_ok"] == 2 and s["n_failed"] == 0
    st = s["metrics"]["val_bpb_score"]
    vals = [r["metrics"]["val_bpb_score"] for r in ok]
    assert st["n"] == 2 and st["mean"] == pytest.approx(sum(vals) / 2) and st["min"] == min(vals)
    assert st["std"] == pytest.approx(abs(vals[0] - vals[1]) / math.sqrt(2))
    bad = [r for r in doc["runs"] if r["config"] == "bad"]
    assert all(r["rc"] != 0 and not r["ok"] and "NUM_LAYERS='abc'" in r["stderr_tail"] for r in bad)
    assert doc["summary"]["bad"]["n_failed"] == 2
    md = (out / "summary.md").read_text()
    assert "## tiny: 2/2 ok" in md and "| ms/step (steady) |" in md and "## Failures" in md and "bad_s2" in md
    assert not list(out.glob("*.pt")) and not list(out.glob("*zstd*"))  # weights deleted, logs kept
    # the same --out again is refused rather than appended to
    again = subprocess.run(cmd, env=clean_environ(), cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "--overwrite" in again.stderr


def test_profile_step_runs_on_the_tiny_config():
    env = ",".join(f"{k}={v}" for k, v in TINY_ENV.items() if k not in ("DATA_PATH", "TRAIN_GLOB", "VAL_GLOB",
                                                                            "TOKENIZER_PATH"))
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "profile_step.py"), "--dataset", "sample", "--env", env,
                           "--threads", "1", "--timed-steps", "1", "--steps", "1", "--row-limit", "5"],
                          env=clean_environ(), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for key in ("plain step ms:", "phase::forward", "phase::backward", "phase::muon", "top ops by self_cpu_time_total",
                "host-device sync points per step", "aten::_local_scalar_dense"):
        assert key in proc.stdout, key
