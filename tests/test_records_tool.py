"""Tests of records/records_tool.py: log parsing (published formats and ours), new, validate,
diff, leaderboard, significance math and the CLI. CPU only, no network, a few seconds."""
from __future__ import annotations

import importlib.util
import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT / "tests" / "fixtures" / "records"
PUB, OURS, REAL = FIX / "published", FIX / "ours", FIX / "real"
TOOL = ROOT / "records" / "records_tool.py"

_spec = importlib.util.spec_from_file_location("records_tool", TOOL)
rt = importlib.util.module_from_spec(_spec)
sys.modules["records_tool"] = rt
_spec.loader.exec_module(rt)


# ----- helpers -----

def run_cli(capsys, *argv) -> tuple[int, str]:
    code = rt.main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out + out.err


def lines_with(text: str, status: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith(status)]


def tiny_logs(tmp_path: Path, edit=None) -> list[Path]:
    """Copies of the our-format fixtures, optionally edited line by line: edit(seed, line)."""
    out = []
    for seed in (1, 2, 3):
        text = (OURS / f"tiny_s{seed}.txt").read_text()
        if edit is not None:
            text = "\n".join(edit(seed, ln) for ln in text.split("\n"))
        p = tmp_path / f"in_s{seed}.txt"
        p.write_text(text)
        out.append(p)
    return out


def make_record(capsys, tmp_path: Path, logs=None, script=OURS / "tiny_train_gpt.py", desc="Tiny_Test",
                extra=()) -> Path:
    logs = logs if logs is not None else tiny_logs(tmp_path)
    code, out = run_cli(capsys, "new", *logs, "--script", script, "--name", "Tiny test", "--author", "A B",
                        "--github-id", "ab", "--description", desc, "--date", "2026-05-01", "--blurb", "A tiny test.",
                        "--records-root", tmp_path / "records", *extra)
    assert code == 0, out
    return tmp_path / "records" / "track_10min_16mb" / f"2026-05-01_{desc}"


def published_folder(tmp_path: Path, name: str, files: dict) -> Path:
    folder = tmp_path / "records" / "track_10min_16mb" / name
    folder.mkdir(parents=True)
    for dst, src in files.items():
        if isinstance(src, Path):
            shutil.copyfile(src, folder / dst)
        else:
            (folder / dst).write_text(src)
    return folder


# ----- parsing: published formats -----

@pytest.mark.parametrize("name, metric, loss, bpb, steps, train_ms, eval_ms, total, code, has_source, seed", [
    ("naive_baseline_train.log", "final_int8_zlib_roundtrip_exact", 2.07269931, 1.22436570, 13780, 600038, 1401,
     15863489, 47642, False, 1337),
    ("smeargate_train.log", "final_sliding_window_eval_exact", 1.95110428, 1.15555486, 12047, 599974, 1553 + 75096,
     15878809, 61629, True, 1337),
    ("int5mlp_seed42.log", "final_int8_zlib_roundtrip_exact", 1.92941613, 1.14271194, 6709, 600037, 168421,
     15965978, 52930, True, 42),
    ("gptq_lite_seed1337.log", "final_int6_sliding_window_exact", 1.89576235, 1.12278022, 7096, 600036,
     1960 + 5788 + 73133, 15555017, 67603, False, 1337),
    ("legal_ttt_seed1337.log", "legal_ttt_exact", 1.88976776, 1.11922988, 7179, 600128,
     1971 + 6562 + 74066 + 410268, 15977386, 89458, False, 1337),
    ("top_phased_ttt_seed42.log", "quantized_ttt_phased", 2.31944212, 1.05989454, 4945, 599592, 508800,
     15897259, 31999, False, 42),
])
def test_parse_published(name, metric, loss, bpb, steps, train_ms, eval_ms, total, code, has_source, seed):
    r = rt.parse_log(PUB / name)
    assert r.fmt == "published"
    assert r.score.name == metric
    assert r.score.val_loss == pytest.approx(loss, abs=1e-9)
    assert r.score.val_bpb == pytest.approx(bpb, abs=1e-9)
    assert r.steps == steps
    assert r.train_time_ms == pytest.approx(train_ms)
    assert r.eval_time_ms == pytest.approx(eval_ms)
    assert (r.total_bytes, r.code_bytes) == (total, code)
    assert (r.source is not None) == has_source
    assert r.seed == seed
    assert r.train_points and r.val_points


def test_published_details_and_not_in_log():
    top = rt.parse_log(PUB / "top_phased_ttt_seed42.log")
    assert top.config["NUM_LAYERS"] == "11" and top.config["ARTIFACT_DIR"] == ""
    assert top.config_source == "log `Hyperparameters:` block"
    assert top.notes["eval_time"] == "log `total_eval_time:` line"
    assert top.notes["code_bytes"] == "log `Code size (compressed):` line"
    assert "derived" in top.notes["step_avg"] and top.step_avg_ms == pytest.approx(599592 / 4945)
    assert top.train_points[1] == (500, 2.5615)
    assert top.device_name is None and top.python_version is None  # stdout capture: not in log
    smear = rt.parse_log(PUB / "smeargate_train.log")
    assert smear.source == (PUB / "smeargate_train_gpt_v5.py").read_text()  # no trailing newline
    assert (smear.device_count, smear.device_name) == (8, "NVIDIA H100 80GB HBM3")
    assert (smear.python_version, smear.torch_version, smear.cuda_version) == ("3.12.3", "2.9.1+cu128", "12.8")
    int5 = rt.parse_log(PUB / "int5mlp_seed42.log")
    assert int5.source == (PUB / "int5mlp_train_gpt.py").read_text()  # ends with "\n": blank line in the log
    assert "label may not describe the eval" in int5.notes["score"]
    gptq = rt.parse_log(PUB / "gptq_lite_seed1337.log")
    assert all(m.name != "val_bpb:" for m in gptq.metrics)  # trailing `---` summary is not a metric
    assert gptq.total_bytes == 15555017 and gptq.model_bytes == 15487414


def test_metric_priority_inline():
    text = "\n".join([
        "step:10/10 val_loss:2.1 val_bpb:1.3 train_time:1000ms step_avg:100.00ms",
        "final_int8_zlib_roundtrip val_loss:2.0727 val_bpb:1.2244 eval_time:1401ms",
        "final_int8_zlib_roundtrip_exact val_loss:2.07269931 val_bpb:1.22436570",
        "quantized_sampled_sliding_no_ttt_summary_exact seeds:1,2 mean_val_loss:1.7 mean_val_bpb:1.0",
        "final_int8_ttt_lora val_loss:2.0180 val_bpb:1.1929 eval_time:60123ms",
    ])
    r = rt.parse_log_text(text, Path("lora.log"))
    assert r.score.name == "final_int8_ttt_lora"  # TTT wins even without an _exact line
    assert r.eval_time_ms == pytest.approx(1401 + 60123)
    assert rt.metric_family("quantized_sliding_no_ttt_exact") == "sliding"
    assert rt.parse_log_text("hello\n", Path("x.log")).score is None


# ----- parsing: our format -----

def test_parse_ours_contract():
    r = rt.parse_log(OURS / "tiny_s1.txt")
    assert r.fmt == "ours" and r.seed == 1 and r.seed_source == "log `config:` lines"
    assert r.source == (OURS / "tiny_train_gpt.py").read_text()
    assert r.code_sha256 == rt.sha256_bytes((OURS / "tiny_train_gpt.py").read_bytes())
    assert r.score.name == "final_int8_zstd22_roundtrip" and r.score.val_bpb == pytest.approx(1.1431)
    assert "final_score_exact" in r.notes["score"]
    assert (r.train_time_ms, r.eval_time_ms, r.steps) == (599950, 171579, 6709)
    assert (r.code_bytes, r.model_bytes, r.total_bytes) == (1062, 15913048, 15914110)
    assert (r.python_version, r.torch_version, r.cuda_version) == ("3.11.7", "2.13.0", "12.8")
    assert (r.device_count, r.device_name) == (8, "NVIDIA H100 80GB HBM3")
    assert r.config["MATRIX_LR"] == "0.025" and r.config_source == "log `config:` lines"
    assert any(m.name == "final_prequant_exact" for m in r.metrics)  # parsed, never scored


def test_parse_real_logs_from_train_gpt():
    runs = [rt.parse_log(REAL / f"real_s{s}.txt") for s in (1, 2, 3)]
    for seed, r in zip((1, 2, 3), runs):
        assert r.fmt == "ours" and r.seed == seed and r.source is not None
        assert r.code_sha256 == rt.sha256_bytes(r.source.encode())
        assert r.score is not None and r.score.name.startswith("final_") and r.score.name.endswith("_roundtrip")
        assert r.total_bytes == r.code_bytes + r.model_bytes
        assert r.train_time_ms is not None and r.eval_time_ms is not None and r.steps
        assert r.train_points and r.val_points
    assert rt.check_same_config(runs) == []


def test_env_defaults_ast():
    smear = rt.env_defaults((PUB / "smeargate_train_gpt_v5.py").read_text())
    assert smear["NUM_LAYERS"] == "9" and smear["TRAIN_BATCH_TOKENS"] == "524288"
    assert smear["TIE_EMBEDDINGS"] == "1" and smear["RUN_ID"].startswith("<expr>")
    tiny = rt.env_defaults((OURS / "tiny_train_gpt.py").read_text())  # dataclass of knob(default, ...)
    assert tiny["NUM_LAYERS"] == "9" and tiny["TIE_EMBEDDINGS"] == "True" and tiny["MAX_WALLCLOCK_SECONDS"] == "600.0"
    real = rt.env_defaults(rt.parse_log(REAL / "real_s1.txt").source)
    assert real["SEED"] == "1337" and "MATRIX_LR" in real
    assert rt.env_defaults('import os\nX = os.environ["NEEDED"]\nY = os.getenv("OPT")\n') == \
        {"NEEDED": "<required>", "OPT": "<unset>"}


def tiny_run_env(out_dir: Path, run_id: str) -> dict:
    """Environment of a few-step CPU run of train_gpt.py on the bundled sample data."""
    sample = ROOT / "data" / "sample"
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "PYTHONPATH", "SYSTEMROOT")
    env = {k: v for k, v in __import__("os").environ.items() if k in keep}
    env.update(DATA_PATH=str(sample), TRAIN_GLOB="sotu_train_*.bin", VAL_GLOB="sotu_val_*.bin",
               TOKENIZER_PATH=str(sample / "sotu_1024_bpe.model"), VOCAB_SIZE="1024", NUM_LAYERS="1", NUM_LOOPS="0",
               PARALLEL_START_LAYER="0", MODEL_DIM="32", NUM_HEADS="2",
               NUM_KV_HEADS="1", XSA_LAST_N="1", TRAIN_SEQ_LEN="64", TRAIN_BATCH_TOKENS="512", ITERATIONS="4", WARMUP_STEPS="1",
               VAL_LOSS_EVERY="2", TRAIN_LOG_EVERY="1", VAL_BATCH_SIZE="2048", VAL_MAX_TOKENS="4096",
               OUT_DIR=str(out_dir), RUN_ID=run_id, SEED="7", OMP_NUM_THREADS="1")
    return env


def need_trainer():
    if not (ROOT / "train_gpt.py").is_file() or not (ROOT / "data" / "sample" / "sotu_1024_bpe.model").is_file():
        pytest.skip("train_gpt.py or data/sample is not present")


@pytest.fixture(scope="module")
def trainer_runs(tmp_path_factory):
    """The repository's train_gpt.py run for 4 tiny CPU steps, readable and packed (the `pack`
    command's output), with one config; returns (folder, packed folder, {name: RunLog})."""
    need_trainer()
    tmp = tmp_path_factory.mktemp("trainer")
    packed_dir = tmp / "packed"
    assert rt.main(["pack", str(ROOT / "train_gpt.py"), "--out", str(packed_dir)]) == 0
    logs = {}
    for name, script in (("contract", ROOT / "train_gpt.py"), ("packed", packed_dir / "train_gpt.py")):
        # no wallclock cap: the warmdown then follows steps, not the (load-dependent) clock
        env = dict(tiny_run_env(tmp, name), MAX_WALLCLOCK_SECONDS="0")
        proc = subprocess.run([sys.executable, str(script)], cwd=tmp, env=env, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        logs[name] = rt.parse_log(tmp / f"{name}.txt")
    return tmp, packed_dir, logs


def test_current_train_gpt_log_follows_the_contract(trainer_runs):
    """Runs the repository's train_gpt.py for a few CPU steps (about 5 s) and parses its log,
    so a change of the trainer's log format cannot hide behind the snapshot fixtures."""
    script = ROOT / "train_gpt.py"
    r = trainer_runs[2]["contract"]
    assert r.fmt == "ours" and r.seed == 7 and r.config["NUM_LAYERS"] == "1"
    assert rt.verify_script(r, script.read_bytes())[0] == "PASS"
    assert r.final_score is not None and r.score is r.final_score
    assert None not in (r.total_bytes, r.code_bytes, r.model_bytes, r.train_time_ms, r.eval_time_ms, r.steps,
                        r.step_avg_ms, r.python_version, r.torch_version, r.device_name)
    assert r.steps == 4 and r.train_points and r.val_points
    text = r.path.read_text()  # the warmup says what it does, a line per step (the official `warmup_step:i/N`)
    how = "the first step of each graph compiles it" if " compile:1 " in text else "eager, nothing to compile"
    assert f"warmup: 1 step(s) of graph(s) plain; {how}" in text
    assert re.search(r"(?m)^warmup_step:1/1 graph:plain elapsed:[\d.]+s$", text)


# ----- pack -----

def test_pack_round_trip_and_refusals(capsys, tmp_path):
    src = (OURS / "tiny_train_gpt.py").read_text()
    packed = rt.pack_source(src)
    assert rt.unpack_source(packed) == rt.minify_source(src) and rt.unpack_source(src.encode()) is None
    assert packed.startswith(b"#coding:latin-1\nimport lzma,linecache as C\n") and len(packed) < len(src)
    code, out = run_cli(capsys, "pack", OURS / "tiny_train_gpt.py", "--out", tmp_path / "p")
    assert code == 0 and "round trip checked" in out
    # never `cd <out> && torchrun ...`: the default ./data paths resolve from where the run starts
    assert "cd " not in out and f"--nproc_per_node=8 {tmp_path / 'p' / 'train_gpt.py'}" in out
    assert (tmp_path / "p" / "train_gpt.py").read_bytes() == packed
    assert (tmp_path / "p" / "train_gpt_human.py").read_text() == src
    code, out = run_cli(capsys, "pack", OURS / "tiny_train_gpt.py", "--out", tmp_path / "p")
    assert code == 2 and "--force" in out
    code, out = run_cli(capsys, "pack", tmp_path / "p" / "train_gpt.py", "--out", tmp_path / "q")
    assert code == 2 and "already a packed script" in out
    # the two-line wrapper of the accepted 2026-04-05 record is read too
    import base64, lzma
    record_style = ("import lzma as L,base64 as B\nexec(L.decompress(B.b85decode('"
                    + base64.b85encode(lzma.compress(src.encode())).decode() + "')))").encode()
    assert rt.unpack_source(record_style) == src
    ours_before = ('import lzma as L,base64 as B\nPACKED_SOURCE=L.decompress(B.b85decode("'
                   + base64.b85encode(lzma.compress(src.encode())).decode()
                   + '")).decode()\nexec(compile(PACKED_SOURCE,"train_gpt_human.py","exec"))\n').encode()
    assert rt.unpack_source(ours_before) == src and rt.packs_to(src, src)


def test_trainer_counts_the_packed_size_the_tool_writes(tg):
    """A readable run counts (and DRY_RUN projects) the code bytes of the wrapper `pack` writes:
    the trainer's template and size rule are the tool's."""
    from conftest import REPO
    src = (REPO / "train_gpt.py").read_text()
    assert tg.pack_source(src) == rt.pack_source(src)
    readable, counted = tg.code_sizes()
    assert readable == len((REPO / "train_gpt.py").read_bytes()) and counted == len(rt.pack_source(src))


def test_packed_script_runs_bit_for_bit_and_counts_itself(capsys, tmp_path, trainer_runs):
    """The packed train_gpt.py, run on CPU like the readable one, prints the same metrics bit for
    bit, embeds the minified source it ran and counts (and hashes) its own bytes; new/validate accept it."""
    run_dir, packed_dir, logs = trainer_runs
    a, b = logs["contract"], logs["packed"]

    def values(run):  # every metric to the printed digit; eval_time: is a timer and may differ
        return [(m.name, m.fields["val_loss"], m.fields["val_bpb"]) for m in run.metrics]

    assert values(a) == values(b) and len(a.metrics) >= 3
    assert a.final_score.line == b.final_score.line
    assert a.val_points == b.val_points and a.train_points == b.train_points
    packed_bytes = (packed_dir / "train_gpt.py").read_bytes()
    assert b.source == rt.minify_source((ROOT / "train_gpt.py").read_text())  # the log holds the text that ran
    assert b.code_bytes == len(packed_bytes) and b.code_sha256 == rt.sha256_bytes(packed_bytes)
    assert a.code_bytes == len(packed_bytes)  # the readable run counts the packed file it will ship
    assert b.total_bytes == b.model_bytes + len(packed_bytes) and a.model_bytes == b.model_bytes
    assert rt.verify_script(b, packed_bytes)[0] == "PASS" and rt.verify_script(a, packed_bytes)[0] == "PASS"
    # new with the packed script: the folder holds both files and validates them
    code, out = run_cli(capsys, "new", run_dir / "packed.txt", "--script", packed_dir / "train_gpt.py", "--name", "n",
                        "--author", "a", "--github-id", "g", "--description", "Packed", "--blurb", "b",
                        "--allow-partial-val", "--out", tmp_path / "rec" / "2026-05-01_Packed")
    assert code == 0, out
    folder = tmp_path / "rec" / "2026-05-01_Packed"
    assert (folder / "train_gpt.py").read_bytes() == packed_bytes
    assert (folder / "train_gpt_human.py").read_text() == (ROOT / "train_gpt.py").read_text()
    sub = json.loads((folder / "submission.json").read_text())
    assert sub["bytes_code"] == len(packed_bytes) and "code_packed" in sub
    code, out = run_cli(capsys, "validate", folder)
    assert "PASS       packed script: train_gpt.py" in out and "code_sha256 is the packed file's" in out
    assert "PASS       counted code: seed 7 counts" in out


def test_validate_rescore_replays_the_artifact(capsys, tmp_path, trainer_runs):
    """--rescore runs the folder's script under EVAL_ONLY with the seed's logged config: the same
    final_score_exact to the printed digits is a PASS, another one a FAIL."""
    run_dir, _, logs = trainer_runs
    [artifact] = [p for p in run_dir.glob("contract.*") if p.suffix not in (".txt", ".pt")]
    folder = tmp_path / "rec" / "2026-05-01_Rescore"
    code, out = run_cli(capsys, "new", run_dir / "contract.txt", "--script", ROOT / "train_gpt.py", "--name", "n",
                        "--author", "a", "--github-id", "g", "--description", "Rescore", "--blurb", "b",
                        "--allow-partial-val", "--out", folder)
    assert code == 0, out
    code, out = run_cli(capsys, "validate", folder, "--rescore", artifact)
    [line] = [ln for ln in out.splitlines() if ln.startswith(("PASS", "FAIL")) and " rescore " in ln[:20]]
    assert line.startswith("PASS       rescore seed 7:") and "(identical to the printed digits)" in line, out
    log = folder / "train_seed7.log"
    text = log.read_text()
    # the last two printed digits moved: inside the stated tolerance, and a FAIL at tolerance 0
    log.write_text(re.sub(r"(?m)^(final_score_exact .* val_bpb:\d\.\d{6})\d\d", r"\g<1>99", text))
    code, out = run_cli(capsys, "validate", folder, "--rescore", artifact)
    # (submission.json, written from the unedited log, now disagrees: only the rescore line matters here)
    assert "PASS       rescore seed 7:" in out and "tolerance 0.0001 bpb" in out, out
    code, out = run_cli(capsys, "validate", folder, "--rescore", artifact, "--rescore-tolerance", "0")
    assert code == 1 and "FAIL       rescore seed 7:" in out
    # 1e-3 off: outside it
    log.write_text(re.sub(r"(?m)^(final_score_exact .* val_bpb:)(\S+)",
                          lambda m: f"{m.group(1)}{float(m.group(2)) + 1e-3:.8f}", text))
    code, out = run_cli(capsys, "validate", folder, "--rescore", artifact)
    assert code == 1 and "FAIL       rescore seed 7:" in out
    code, out = run_cli(capsys, "validate", folder, "--rescore", tmp_path / "missing.ptz")
    assert code == 1 and "FAIL       rescore: artifact" in out


def test_new_pack_from_a_readable_run(capsys, tmp_path):
    folder = make_record(capsys, tmp_path, extra=("--pack",))
    src = (OURS / "tiny_train_gpt.py").read_text()
    assert (folder / "train_gpt.py").read_bytes() == rt.pack_source(src)
    assert (folder / "train_gpt_human.py").read_text() == src
    code, out = run_cli(capsys, "validate", folder)
    assert code == 0, out
    assert "code_sha256 is the readable source's: the run executed the same code unpacked" in out
    (folder / "train_gpt_human.py").write_text(src + "EDITED = 1\n")
    code, out = run_cli(capsys, "validate", folder)
    assert code == 1 and "FAIL       packed script: train_gpt_human.py is not the source packed in train_gpt.py" in out


# ----- new + validate -----

def test_new_creates_folder_that_validates(capsys, tmp_path):
    folder = make_record(capsys, tmp_path, extra=("--best-loss", "1.95"))
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["README.md", "curves.png", "submission.json", "train_gpt.py",
                     "train_seed1.log", "train_seed2.log", "train_seed3.log"]
    assert (folder / "train_gpt.py").read_bytes() == (OURS / "tiny_train_gpt.py").read_bytes()
    assert (folder / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    sub = json.loads((folder / "submission.json").read_text())
    for key in ("author", "github_id", "name", "blurb", "date", "track", "val_loss", "val_bpb", "val_loss_std",
                "val_bpb_std", "seeds", "seed_results", "bytes_total", "bytes_code", "hardware",
                "pytorch_version", "cuda_version"):
        assert key in sub, key
    assert sub["seeds"] == [1, 2, 3] and sub["bytes_total"] == 15914110 and sub["bytes_code"] == 1062
    assert sub["val_loss"] == pytest.approx((1.93 + 1.9296 + 1.9305) / 3)
    assert set(sub["seed_results"]["2"]) == {"val_loss", "val_bpb", "artifact_bytes", "steps", "step_avg_ms",
                                             "train_time_s", "eval_time_s"}
    assert sub["hardware"] == "8x NVIDIA H100 80GB HBM3" and sub["p_value"] < 0.01
    readme = (folder / "README.md").read_text()
    assert "| 2 | 1.92960000 | 1.14286301 | 15,778,318 | 6711 |" in readme
    assert "MATRIX_LR=0.025 MLP_MULT=3.0 MUON_WD=0.04 NUM_LAYERS=10 SEED=$SEED" in readme
    assert "| MUON_WD | `0.04` |" in readme
    code, out = run_cli(capsys, "validate", folder, "--best-loss", "1.95")
    assert code == 0, out
    assert out.strip().endswith("RESULT: PASS (0 failed, 0 unverified)")
    assert not lines_with(out, "FAIL") and len(lines_with(out, "PASS")) >= 20


def test_new_refuses_script_mismatch_and_missing_source(capsys, tmp_path):
    other = tmp_path / "train_gpt.py"
    other.write_text((OURS / "tiny_train_gpt.py").read_text() + "# edited after the run\n")
    code, out = run_cli(capsys, "new", *tiny_logs(tmp_path), "--script", other, "--name", "n", "--author", "a",
                        "--github-id", "g", "--description", "D", "--blurb", "b", "--records-root", tmp_path / "records")
    assert code == 2 and "refusing" in out and "code_sha256" in out
    assert not (tmp_path / "records").exists()
    code, out = run_cli(capsys, "new", PUB / "naive_baseline_train.log", "--script", other, "--name", "n",
                        "--author", "a", "--github-id", "g", "--description", "D", "--blurb", "b", "--records-root", tmp_path / "r")
    assert code == 2 and "does not embed its source" in out


def test_new_refuses_mixed_configs(capsys, tmp_path):
    logs = tiny_logs(tmp_path, lambda s, ln: "config:NUM_LAYERS=11" if s == 3 and ln == "config:NUM_LAYERS=10" else ln)
    # the embedded source is untouched, so only the config check can refuse
    code, out = run_cli(capsys, "new", *logs, "--script", OURS / "tiny_train_gpt.py", "--name", "n", "--author", "a",
                        "--github-id", "g", "--description", "D", "--blurb", "b", "--records-root", tmp_path / "records")
    assert code == 2 and "NUM_LAYERS" in out


def test_new_and_validate_real_train_gpt_logs(capsys, tmp_path):
    script = tmp_path / "train_gpt.py"
    script.write_text(rt.parse_log(REAL / "real_s1.txt").source)
    folder = make_record(capsys, tmp_path, logs=[REAL / f"real_s{s}.txt" for s in (1, 2, 3)], script=script,
                         desc="Real_Tiny", extra=("--allow-partial-val",))
    assert (folder / "train_gpt.py").read_bytes() == script.read_bytes()
    code, out = run_cli(capsys, "validate", folder)
    assert code == 1
    fails = lines_with(out, "FAIL")
    # tiny CPU runs: only the partial validation split and the CPU hardware fail
    assert fails and all(("VAL_MAX_TOKENS" in f) or ("hardware" in f) for f in fails), fails
    assert len([ln for ln in lines_with(out, "PASS") if "embeds train_gpt.py exactly" in ln]) == 3


def test_new_partial_val_blurb_reproduce_command_and_fields(capsys, tmp_path):
    script = tmp_path / "train_gpt.py"
    script.write_text(rt.parse_log(REAL / "real_s1.txt").source)
    real = [REAL / f"real_s{s}.txt" for s in (1, 2, 3)]
    args = ["new", *real, "--script", script, "--name", "n", "--author", "a", "--github-id", "g", "--description", "R",
            "--records-root", tmp_path / "r"]
    code, out = run_cli(capsys, *args, "--blurb", "b")
    assert code == 2 and "VAL_MAX_TOKENS=16384: scored on part of the validation split" in out
    code, out = run_cli(capsys, *args, "--blurb", "  ", "--allow-partial-val")
    assert code == 2 and "--blurb is empty" in out
    with pytest.raises(SystemExit):  # --blurb is required
        rt.main([str(a) for a in args])
    capsys.readouterr()
    code, out = run_cli(capsys, *args, "--blurb", "Tiny CPU runs.", "--allow-partial-val")
    assert code == 0 and "WARNING seed 1: VAL_MAX_TOKENS=16384" in out
    folder = next((tmp_path / "r" / "track_10min_16mb").iterdir())
    sub = json.loads((folder / "submission.json").read_text())
    assert sub["blurb"] == "Tiny CPU runs." and sub["pre_quant_val_bpb"] == pytest.approx(
        sum(rt.parse_log(p).metrics[[m.name for m in rt.parse_log(p).metrics].index("final_prequant_exact")].val_bpb
            for p in real) / 3)
    assert sub["compliance"]["full_val_split"] is False and sub["compliance"]["seeds"] == 3
    assert sub["compliance"]["hardware_8xh100"] is False and sub["compliance"]["artifact_under_16mb"] is True
    readme = (folder / "README.md").read_text()
    [cmd] = [ln for ln in readme.splitlines() if "torchrun" in ln]
    assert "--nproc_per_node=1 train_gpt.py" in cmd  # the logs' world size, not a hard-coded 8
    assert "TRAIN_GLOB='sotu_train_*.bin'" in cmd  # quoted: the shell must not expand it
    assert "DATA_PATH" not in cmd and "TOKENIZER_PATH" not in cmd and "OUT_DIR" not in cmd
    assert "Local paths are left out (DATA_PATH, OUT_DIR, TOKENIZER_PATH)" in readme
    assert "TODO: one-paragraph" not in readme and "Tiny CPU runs." in readme


def _set(pattern: str, repl: str, seeds=(1, 2, 3)):
    return lambda s, ln: re.sub(pattern, repl, ln) if s in seeds else ln


@pytest.mark.parametrize("edit, expected", [
    (_set(r"total_bytes:\d+", "total_bytes:16000001", seeds=(2,)), "FAIL       size seed 2: total 16,000,001 >"),
    (_set(r"^train_time_total_ms:\d+", "train_time_total_ms:601000", seeds=(3,)), "FAIL       train time seed 3: 601.000 s"),
    (_set(r"eval_time_total_ms:\d+", "eval_time_total_ms:600500", seeds=(1,)), "FAIL       eval time seed 1: 600.500 s"),
])
def test_validate_fails_on_size_and_time(capsys, tmp_path, edit, expected):
    folder = make_record(capsys, tmp_path, logs=tiny_logs(tmp_path, edit))
    code, out = run_cli(capsys, "validate", folder)
    assert code == 1, out
    assert any(ln.startswith(expected) for ln in out.splitlines()), out
    assert len(lines_with(out, "FAIL")) == 1, out  # the json was generated from these logs: it agrees
    assert "RESULT: FAIL" in out


def test_validate_train_time_grace_is_one_step(capsys, tmp_path):
    # 600.050 s with 89.42 ms steps: the cap is checked at step boundaries, so this passes;
    # --train-grace-steps 0 makes the check strict
    folder = make_record(capsys, tmp_path, logs=tiny_logs(tmp_path, _set(r"^train_time_total_ms:\d+",
                                                                          "train_time_total_ms:600050")))
    code, out = run_cli(capsys, "validate", folder)
    assert code == 0 and "within the grace of 1 step(s)" in out
    code, out = run_cli(capsys, "validate", folder, "--train-grace-steps", "0")
    assert code == 1 and "FAIL       train time seed 1: 600.050 s > 600 s" in out


def test_validate_fails_on_script_mismatch(capsys, tmp_path):
    folder = make_record(capsys, tmp_path)
    with open(folder / "train_gpt.py", "a") as f:
        f.write("# changed after the runs\n")
    code, out = run_cli(capsys, "validate", folder)
    assert code == 1
    fails = lines_with(out, "FAIL")
    assert len(fails) == 3 and all(f.startswith("FAIL       script seed") and "code_sha256" in f for f in fails)


def test_validate_fails_when_json_disagrees(capsys, tmp_path):
    folder = make_record(capsys, tmp_path)
    sub = json.loads((folder / "submission.json").read_text())
    sub["val_bpb"] = 1.1500
    sub["seed_results"]["3"]["artifact_bytes"] = 15000000
    (folder / "submission.json").write_text(json.dumps(sub))
    code, out = run_cli(capsys, "validate", folder)
    assert code == 1
    [fail] = lines_with(out, "FAIL")
    assert "submission.json disagrees" in fail and "val_bpb: json 1.15 vs logs 1.1431196" in fail
    assert "seed_results[3].artifact_bytes: json 15000000 vs logs 15633008" in fail


def test_validate_published_folders(capsys, tmp_path):
    folder = published_folder(tmp_path, "2026-03-20_10L_Int5MLP_MuonWD04_SWA50", {
        **{f"train_seed{s}.log": PUB / f"int5mlp_seed{s}.log" for s in (42, 1337, 2024)},
        "train_gpt.py": PUB / "int5mlp_train_gpt.py", "submission.json": PUB / "int5mlp_submission.json",
        "README.md": "# excerpt\n"})
    code, out = run_cli(capsys, "validate", folder)
    assert code == 1
    assert len([ln for ln in lines_with(out, "PASS") if "embeds train_gpt.py exactly" in ln]) == 3
    assert len([ln for ln in lines_with(out, "PASS") if "within the grace of 1 step" in ln]) == 3
    [fail] = lines_with(out, "FAIL")  # the sloppy published json
    assert "missing required field 'val_bpb'" in fail and "bytes_total: json 15900000 vs logs 15965978" in fail

    gptq = published_folder(tmp_path, "2026-03-22_11L_EMA_GPTQ-lite", {
        "train_seed1337.log": PUB / "gptq_lite_seed1337.log", "train_gpt.py": "print('not the real script')\n",
        "README.md": "# excerpt\n",
        "submission.json": json.dumps({"name": "Record: 11L EMA + GPTQ-lite", "github_id": "signalrush",
                                       "val_loss": 1.89576235, "val_bpb": 1.12278022, "bytes_total": 15555017})})
    code, out = run_cli(capsys, "validate", gptq)
    assert code == 1 and not lines_with(out, "FAIL")
    unverified = lines_with(out, "UNVERIFIED")
    assert any("does not embed its source" in ln for ln in unverified)
    assert any(ln.startswith("UNVERIFIED hardware") and "not in log" in ln for ln in unverified)
    assert any(ln.startswith("UNVERIFIED data audit seed 1337: no `data_audit:` line") for ln in unverified)
    code, out = run_cli(capsys, "validate", gptq, "--allow-unverified")
    assert code == 0 and "RESULT: PASS (0 failed, 3 unverified, unverified allowed, 1 warning(s))" in out  # the warning: one seed


def test_validate_reports_the_data_audit_digest_or_unverified(capsys, tmp_path):
    folder = make_record(capsys, tmp_path)
    code, out = run_cli(capsys, "validate", folder)
    digest = "0d2f5a7c41b9e8f3a6d1c0b7e4f2a9d8c3b6e1f0a5d4c7b2e9f8a3d6c1b0e7f4"
    assert code == 0 and len([ln for ln in lines_with(out, "PASS") if f"data audit seed" in ln and digest in ln]) == 3
    log = folder / "train_seed2.log"
    text = log.read_text()
    log.write_text(re.sub(r"(?m)^data_audit:\S+ full:PASS", "data_audit:UNVERIFIED (no full audit in x)", text))
    code, out = run_cli(capsys, "validate", folder)
    assert code == 1 and "UNVERIFIED data audit seed 2: UNVERIFIED (no full audit in x)" in out
    log.write_text(re.sub(r"(?m)^(data_audit:\S+) full:PASS", r"\1 full:FAIL (m) problems: a short split;", text))
    code, out = run_cli(capsys, "validate", folder)
    assert code == 1 and f"FAIL       data audit seed 2: the full audit of the run's data reports problems: {digest}" in out
    log.write_text(re.sub(r"(?m)^data_audit:.*\n", "", text))
    code, out = run_cli(capsys, "validate", folder)
    assert code == 1 and "UNVERIFIED data audit seed 2: no `data_audit:` line in the log" in out


def test_validate_non_record_track_reports_time_as_info(capsys, tmp_path):
    folder = tmp_path / "records" / "track_non_record_16mb" / "2026-04-01_Long"
    folder.mkdir(parents=True)
    logs = tiny_logs(tmp_path, _set(r"^train_time_total_ms:\d+", "train_time_total_ms:14400000"))
    code, _ = run_cli(capsys, "new", *logs, "--script", OURS / "tiny_train_gpt.py", "--name", "n", "--author", "a",
                      "--github-id", "g", "--description", "x", "--blurb", "b", "--out", folder, "--force")
    assert code == 0
    code, out = run_cli(capsys, "validate", folder)
    assert code == 0 and "INFO       time seed 1: train 14400.000 s" in out


# ----- significance -----

def test_t_distribution_against_closed_forms():
    for t in (-2.5, -0.3, 0.0, 0.7, 3.0619, 12.0):
        assert rt.t_sf(t, 1) == pytest.approx(0.5 - math.atan(t) / math.pi, abs=1e-13)       # Cauchy
        assert rt.t_sf(t, 2) == pytest.approx(0.5 - t / (2 * math.sqrt(2 + t * t)), abs=1e-13)
        cdf4 = 0.5 + t * (t * t + 6) / (2 * (t * t + 4) ** 1.5)
        assert rt.t_sf(t, 4) == pytest.approx(1 - cdf4, abs=1e-13)


def test_welch_and_one_sample_known_values():
    # hand computation: means 1.91 / 1.94, sample variances 1e-4 each, n = 3:
    # t = (1.94 - 0.005 - 1.91) / sqrt(2e-4/3) = 3.0618621785, Welch df = 4 exactly
    sig = rt.welch_test([1.90, 1.91, 1.92], [1.93, 1.94, 1.95], 0.005)
    assert sig.t == pytest.approx(0.025 / math.sqrt(2e-4 / 3), rel=1e-12) and sig.df == pytest.approx(4.0)
    t = sig.t
    assert sig.p == pytest.approx(1 - (0.5 + t * (t * t + 6) / (2 * (t * t + 4) ** 1.5)), rel=1e-10)
    assert sig.p == pytest.approx(0.0187950557555725, rel=1e-9) and not sig.passed()  # p >= 0.01
    one = rt.one_sample_test([1.90, 1.91, 1.92], 1.95, 0.005)
    assert one.t == pytest.approx(0.035 / (0.01 / math.sqrt(3))) and one.df == 2.0
    assert one.p == pytest.approx(0.5 - one.t / (2 * math.sqrt(2 + one.t ** 2)), rel=1e-10)
    with pytest.raises(ValueError):
        rt.one_sample_test([1.9], 1.95)


def test_significance_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    ours, best = [1.9290, 1.9301, 1.9285, 1.9296], [1.9360, 1.9381, 1.9352]
    sig = rt.welch_test(ours, best, 0.005)
    ref = stats.ttest_ind(ours, [b - 0.005 for b in best], equal_var=False, alternative="less")
    assert sig.t == pytest.approx(-ref.statistic, rel=1e-10) and sig.p == pytest.approx(ref.pvalue, rel=1e-9)
    one = rt.one_sample_test(ours, 1.9400, 0.005)
    ref = stats.ttest_1samp(ours, 1.9400 - 0.005, alternative="less")
    assert one.p == pytest.approx(ref.pvalue, rel=1e-9)


def test_validate_significance_modes(capsys, tmp_path):
    folder = make_record(capsys, tmp_path)
    code, out = run_cli(capsys, "validate", folder, "--best-losses", "1.9430,1.9450,1.9420")
    assert code == 0 and "one-sided Welch t-test" in out and "PASS       significance" in out
    code, out = run_cli(capsys, "validate", folder, "--best-loss", "1.9330")  # gain 0.0030 < 0.005
    assert code == 1 and "FAIL       significance" in out
    code, out = run_cli(capsys, "validate", folder, "--best-bpb", "1.1600")
    assert code == 0 and "on val_bpb; margin 0.005 nats = 0.00296" in out
    best = make_record(capsys, tmp_path, desc="Best", logs=score_edited_logs(tmp_path, [1.942, 1.943, 1.941]))
    code, out = run_cli(capsys, "validate", folder, "--best-record", best)
    assert code == 0 and "one-sided Welch t-test" in out and "vs best 1.94200000" in out and "on val_bpb" not in out


def score_edited_logs(tmp_path: Path, losses, bpb_per_nat: float = 1.1431 / 1.93) -> list[Path]:
    """The tiny logs with each seed's final score set to (loss, loss * bpb_per_nat)."""
    def edit(seed, ln):
        if not ln.startswith("final_score_exact"):
            return ln
        loss = losses[seed - 1]
        return re.sub(r"val_loss:\S+ val_bpb:\S+", f"val_loss:{loss:.8f} val_bpb:{loss * bpb_per_nat:.8f}", ln)
    return tiny_logs(tmp_path, edit)


def test_significance_across_tokenizers_runs_on_bpb(capsys, tmp_path):
    """Ours: sp1024-like (1.93 nats, 1.143 bpb). The best: sp8192-like, 2.32 nats but 1.06 bpb.
    In nats we look 0.39 better; in bpb, the only comparable unit, we are 0.08 worse."""
    folder = make_record(capsys, tmp_path)
    best = published_folder(tmp_path, "2026-04-27_SP8192_Best", {
        "submission.json": json.dumps({"name": "best", "val_bpb": 1.0599, "seed_results": {
            "42": {"val_loss": 2.31944212, "val_bpb": 1.05989454}, "0": {"val_loss": 2.3215, "val_bpb": 1.0608},
            "1234": {"val_loss": 2.3201, "val_bpb": 1.0602}}})})
    code, out = run_cli(capsys, "validate", folder, "--best-record", best)
    [sig] = [ln for ln in out.splitlines() if re.match(r"(PASS|FAIL) +significance", ln)]
    assert code == 1 and sig.startswith("FAIL       significance: mean 1.14311969 vs best 1.06029818"), sig
    assert "on val_bpb: the tokenizers differ" in sig and "margin 0.005 nats = 0.00228" in sig
    # a best record that gives no bpb: a refusal that says why, never a test in nats
    (best / "submission.json").write_text(json.dumps({"name": "best", "seed_results": {
        "42": {"val_loss": 2.319}, "0": {"val_loss": 2.321}}}))
    code, out = run_cli(capsys, "validate", folder, "--best-record", best)
    assert code == 1 and "FAIL       significance: cannot test (cannot tell whether 2026-04-27_SP8192_Best used our " \
        "tokenizer" in out
    # same tokenizer named in both configs: the test stays in nats
    ours = rt.side_of_runs(rt.find_logs(folder))
    assert ours.tokenizer is None and ours.ratio == pytest.approx(0.5923, abs=1e-4)
    a, b = rt.ScoreSide([], [], "VOCAB_SIZE=1024", 0.59), rt.ScoreSide([], [], "VOCAB_SIZE=8192", 0.59)
    assert a.same_tokenizer(b) is False and a.same_tokenizer(a) is True


# ----- diff -----

def test_diff_records_shows_config_metrics_and_script(capsys, tmp_path):
    a = make_record(capsys, tmp_path, desc="A")
    script_b = tmp_path / "b_train_gpt.py"
    script_b.write_text((OURS / "tiny_train_gpt.py").read_text().replace('knob(9, "transformer blocks")',
                                                                        'knob(11, "transformer blocks")'))
    sha_b = rt.sha256_bytes(script_b.read_bytes())
    src_a = (OURS / "tiny_train_gpt.py").read_text()
    sha_a = rt.sha256_bytes(src_a.encode())

    def edit(seed, ln):
        ln = ln.replace(sha_a, sha_b).replace('knob(9, "transformer blocks")', 'knob(11, "transformer blocks")')
        ln = "config:MATRIX_LR=0.03" if ln == "config:MATRIX_LR=0.025" else ln
        return re.sub(r"^(final_score_exact .* val_bpb:)1\.14", r"\g<1>1.13", ln)

    b = make_record(capsys, tmp_path, desc="B", logs=tiny_logs(tmp_path, edit), script=script_b)
    code, out = run_cli(capsys, "diff", a, b)
    assert code == 0 and "@@" not in out and "changed (1): Config +1/-1" in out and "--full-diff" in out
    code, out = run_cli(capsys, "diff", a, b, "--full-diff")
    assert "MATRIX_LR: 0.025 -> 0.03" in out and "SEED" not in out.split("== metric")[0]
    assert re.search(r"val_bpb \(mean\)\s+1\.14311969 -> 1\.13311969\s+\(-0\.01000000\)", out)
    assert "--- A/2026-05-01_A/train_gpt.py" in out and "+++ B/2026-05-01_B/train_gpt.py" in out
    assert '-    num_layers: int = knob(9, "transformer blocks")' in out
    assert '+    num_layers: int = knob(11, "transformer blocks")' in out


def test_diff_published_uses_script_defaults(capsys, tmp_path):
    code, out = run_cli(capsys, "diff", PUB / "smeargate_train.log", PUB / "int5mlp_seed42.log")
    assert code == 0
    assert out.count("script env-var defaults (ast") == 2
    config = out.split("== metric")[0]
    assert "NUM_LAYERS: 9 -> 10 (both script defaults)" in config and "only in B (3): " in config
    assert "TRAIN_SEQ_LEN=2048" in config and "<absent>" not in config
    assert "MLP_MULT" not in config  # 3 and 3.0 are the same value
    assert "DATA_PATH" not in config and "local-path key(s) hidden" in config
    assert "@@" not in out and "changed (2): Hyperparameters +7/-13, <module> +3/-2" in out
    code, out = run_cli(capsys, "diff", PUB / "top_phased_ttt_seed42.log", OURS / "tiny_s1.txt")
    assert "MATRIX_LR: 0.026 -> 0.025" in out and "does not embed its source" in out


def test_diff_config_from_readme_run_command_and_renamed_knobs(capsys, tmp_path):
    base = ('import os\n\nclass Hyperparameters:\n'
            '    data_path = os.environ.get("DATA_PATH", "./data/datasets/fineweb10B_sp1024")\n'
            '    num_layers = int(os.environ.get("NUM_LAYERS", 9))\n'
            '    {qat} = float(os.environ.get("{QAT}", 0.1))\n\n'
            'def main():\n    return {body}\n')
    a = published_folder(tmp_path, "2026-03-21_A", {
        "train_gpt.py": base.format(qat="qat_threshold", QAT="QAT_THRESHOLD", body=1),
        "README.md": "# A\n\n```bash\nNUM_LAYERS=11 QAT_THRESHOLD=0.15 \\\n  DATA_PATH=/home/me/data "
                     "torchrun --standalone --nproc_per_node=8 train_gpt.py\n```\n"})
    b = published_folder(tmp_path, "2026-03-22_B", {
        "train_gpt.py": base.format(qat="late_qat_threshold", QAT="LATE_QAT_THRESHOLD", body=2),
        "README.md": "# B\n"})
    code, out = run_cli(capsys, "diff", a, b)
    assert code == 0
    assert "config from the README's run command (3 variable(s)) over the script's env-var defaults" in out
    assert "config from script env-var defaults" in out
    config = out.split("== metric")[0]
    assert "NUM_LAYERS: 11 -> 9" in config and "(both script defaults)" not in config
    assert "QAT_THRESHOLD -> LATE_QAT_THRESHOLD (renamed?): 0.15 -> 0.1" in config
    assert "only in" not in config and "DATA_PATH" not in config and "(2 key(s) differ;" in config
    assert "changed (2): Hyperparameters +1/-1, main +1/-1" in out


# ----- leaderboard -----

def test_leaderboard_sorted_by_score(capsys, tmp_path):
    make_record(capsys, tmp_path, desc="Ours")  # 1.14311969 from logs
    published_folder(tmp_path, "2026-03-17_NaiveBaseline", {
        "train.log": PUB / "naive_baseline_train.log", "submission.json": PUB / "naive_baseline_submission.json"})
    published_folder(tmp_path, "2026-03-23_LeakyReLU_LegalTTT", {"train_seed1337.log": PUB / "legal_ttt_seed1337.log"})
    published_folder(tmp_path, "2026-03-19_JsonOnly", {"submission.json": json.dumps({"val_bpb": 1.1500, "name": "x"})})
    other = tmp_path / "records" / "track_non_record_16mb" / "2026-04-27_Top"
    other.mkdir(parents=True)
    shutil.copyfile(PUB / "top_phased_ttt_seed42.log", other / "train_seed42.log")
    code, out = run_cli(capsys, "leaderboard", "--root", tmp_path / "records")
    assert code == 0
    record, non_record = out.split("== track_non_record_16mb")
    assert record.startswith("== track_10min_16mb (4 record(s)) ==")
    assert leaderboard_order(record) == ["2026-03-23_LeakyReLU_LegalTTT", "2026-05-01_Ours", "2026-03-19_JsonOnly",
                                         "2026-03-17_NaiveBaseline"]
    assert leaderboard_order(non_record) == ["2026-04-27_Top"]
    # the naive baseline's json is what it reports (1.2244), flagged where its log disagrees
    assert re.search(r"1\.22437 .*2026-03-17_NaiveBaseline  \[logs' scored metric averages", record) is None
    assert "2026-03-17_NaiveBaseline" in record and "submission.json" in record
    ours = next(ln for ln in record.splitlines() if "2026-05-01_Ours" in ln)
    assert "A B" in ours and "Tiny test" in ours and "2026-05-01" in ours
    code, out = run_cli(capsys, "leaderboard", "--root", tmp_path / "records", "--track", "non_record_16mb")
    assert "2026-04-27_Top" in out and "Ours" not in out


def leaderboard_order(text: str) -> list[str]:
    return [ln.split("  [")[0].split()[-1] for ln in text.splitlines() if re.match(r"\s*\d+\s", ln)]


# ----- regressions shaped like the real records tree -----

def depthrec_folder(tmp_path: Path, **extra) -> Path:
    return published_folder(tmp_path, "2026-04-04_SP4096_DepthRecurrence_ParallelResid_MuonEqR", {
        **{f"train_seed{s}.log": PUB / f"depthrec_seed{s}.log" for s in (42, 314, 999)},
        "submission.json": PUB / "depthrec_submission.json", "README.md": "# excerpt\n",
        "train_gpt.py": "print('stand-in for the 24,584-byte script')\n", **extra})


def test_score_is_the_metric_submission_json_reports(capsys, tmp_path):
    # a seed's diagnostic TTT pass (1.336) printed after the sliding score the submitter reported
    assert rt.parse_log(PUB / "depthrec_seed42.log").score.name == "final_int6_ttt"  # no json: priority pick
    folder = depthrec_folder(tmp_path)
    rec = rt.load_record(folder)
    assert [r.score.name for r in rec.runs] == ["final_int6_sliding_window"] * 3
    assert "seed_results[314]" in rec.runs[0].notes["score"] and "priority pick" in rec.runs[0].notes["score"]
    code, out = run_cli(capsys, "leaderboard", "--root", tmp_path / "records")
    [row] = [ln for ln in out.splitlines() if "DepthRecurrence" in ln]
    assert row.split()[1] == "1.08972" and "aryanbhosale" in row and "2026-04-04" in row and "[" not in row
    code, out = run_cli(capsys, "validate", folder)
    assert not [ln for ln in lines_with(out, "FAIL") if "submission.json" in ln], out
    assert re.search(r"PASS       submission.json: \d+ values agree", out)


def test_byte_copies_and_reruns_count_once(capsys, tmp_path):
    folder = depthrec_folder(tmp_path, **{"train.log": PUB / "depthrec_seed42.log"})
    rerun = (PUB / "depthrec_seed314.log").read_text().replace("1.08982552", "1.08990001")
    (folder / "train_seed314_rerun.log").write_text(rerun)
    rec = rt.load_record(folder)
    assert sorted(r.path.name for r in rec.runs) == ["train_seed314.log", "train_seed42.log", "train_seed999.log"]
    assert any("train.log is a byte copy of train_seed42.log" in n for n in rec.notes)
    assert any("train_seed314_rerun.log repeats seed 314" in n for n in rec.notes)
    # the json reports the rerun: then the rerun is the seed's log
    sub = json.loads((PUB / "depthrec_submission.json").read_text())
    sub["seed_results"]["314"]["val_bpb"] = 1.08990001
    (folder / "submission.json").write_text(json.dumps(sub))
    rec = rt.load_record(folder)
    assert sorted(r.path.name for r in rec.runs) == ["train_seed314_rerun.log", "train_seed42.log", "train_seed999.log"]
    code, out = run_cli(capsys, "validate", folder)
    assert "INFO       logs: train.log is a byte copy" in out and "3 log(s)" in out


def test_logs_in_a_subfolder_are_found(capsys, tmp_path):
    folder = depthrec_folder(tmp_path)
    (folder / "logs").mkdir()
    for s in (42, 314, 999):
        (folder / f"train_seed{s}.log").rename(folder / "logs" / f"train_seed{s}.log")
    assert len(rt.find_logs(folder)) == 3
    code, out = run_cli(capsys, "leaderboard", "--root", tmp_path / "records")
    assert "no parsable log" not in out and "nothing parsable" not in out
    assert len(leaderboard_order(out)) == 1  # logs/ is part of the record, not a record of its own
    (folder / "submission.json").unlink()  # without a json too: the folder is the record
    code, out = run_cli(capsys, "leaderboard", "--root", tmp_path / "records")
    assert leaderboard_order(out) == [folder.name]


def test_leaderboard_flags_a_log_over_the_cap(capsys, tmp_path):
    folder = depthrec_folder(tmp_path)
    log = folder / "train_seed999.log"
    log.write_text(log.read_text().replace("int6+brotli: 15988473 bytes", "int6+brotli: 16059704 bytes"))
    code, out = run_cli(capsys, "leaderboard", "--root", tmp_path / "records")
    assert "over the cap: seed 999 16,059,704 bytes" in out


def test_nan_score_is_a_clear_fail_never_null(capsys, tmp_path):
    nan = tiny_logs(tmp_path, _set(r"^(final_score_exact .* val_bpb:)\S+", r"\g<1>nan", seeds=(2,)))
    r = rt.parse_log(nan[1])
    assert r.score is not None and math.isnan(r.score.val_bpb)  # a value, not "not in log"
    code, out = run_cli(capsys, "new", *nan, "--script", OURS / "tiny_train_gpt.py", "--name", "n", "--author", "a",
                        "--github-id", "g", "--description", "D", "--blurb", "b", "--records-root", tmp_path / "r")
    assert code == 2 and "the run diverged" in out and not (tmp_path / "r").exists()
    nan_text = nan[1].read_text()
    folder = make_record(capsys, tmp_path)
    sub = json.loads((folder / "submission.json").read_text())
    for value in (float("nan"), None):
        sub["val_bpb"] = value
        (folder / "submission.json").write_text(json.dumps(sub))
        code, out = run_cli(capsys, "validate", folder)
        assert code == 1 and "a score must be a finite number" in out, out
    (folder / "train_seed2.log").write_text(nan_text)
    code, out = run_cli(capsys, "validate", folder)
    assert code == 1 and "FAIL       score seed 2: val_loss 1.9296 val_bpb nan" in out


def test_validate_submission_json_that_is_a_list(capsys, tmp_path):
    folder = make_record(capsys, tmp_path)
    (folder / "submission.json").write_text(json.dumps([{"val_bpb": 1.14}]))
    code, out = run_cli(capsys, "validate", folder)
    assert code == 1 and "FAIL       submission.json holds a JSON list, not an object" in out
    code, out = run_cli(capsys, "leaderboard", "--root", tmp_path / "records")
    assert code == 0 and "holds a JSON list" in out


def test_validate_wording_and_derived_step_avg(capsys, tmp_path):
    # 04-27 style: no step_avg in the log, the tool derives it; the submitter's own value is not a FAIL
    folder = published_folder(tmp_path, "2026-04-27_Top", {
        "train_seed42.log": PUB / "top_phased_ttt_seed42.log", "train_gpt.py": "print('x')\n" * 20000,
        "README.md": "# excerpt\n",
        "submission.json": json.dumps({"name": "Top", "github_id": "x", "val_bpb": 1.05989454, "val_loss": 2.31944212,
                                       "step_avg_ms_mean": 121.7, "seed_results": {"42": {"step_avg_ms": 121.7}}})})
    code, out = run_cli(capsys, "validate", folder)
    assert not [ln for ln in lines_with(out, "FAIL") if "step_avg" in ln], out
    assert "not compared: step_avg_ms_mean, seed_results[42].step_avg_ms" in out
    # the compressed-code counting policy is a warning, not a failure
    # (and so is a record-track folder with one seed)
    [seeds, warn] = lines_with(out, "WARN")
    assert seeds.startswith("WARN       seeds: 1 (42) in a record-track folder")
    assert "31,999 bytes of compressed code" in warn and "the organisers accepted" in warn
    assert not lines_with(out, "FAIL"), out
    assert out.strip().splitlines()[-1].startswith("RESULT: UNVERIFIED (") and "0 failed, 2 warning(s)" in out


# ----- CLI -----

@pytest.mark.parametrize("command", [None, "new", "validate", "diff", "leaderboard", "pack", "compare"])
def test_help(capsys, command):
    with pytest.raises(SystemExit) as exc:
        rt.main(([command] if command else []) + ["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: records_tool.py") and (command is None or command in out.splitlines()[0])


def test_runs_as_a_program_and_agrees_helper():
    proc = subprocess.run([sys.executable, str(TOOL), "validate", "--help"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0 and "--best-loss" in proc.stdout
    assert rt.agrees(1.1556, 1.15555486) and not rt.agrees(1.1555, 1.15555486)
    assert rt.agrees(600, 599.974) and rt.agrees(15555017, 15555017) and not rt.agrees(15900000, 15965978)


def test_new_and_validate_count_the_bytes_of_the_script_the_folder_ships(capsys, tmp_path):
    """A folder shipping the readable train_gpt.py got the packed size (what the log projects) as
    bytes_code/bytes_total in submission.json, and validate passed it."""
    script = tmp_path / "train_gpt.py"
    source = rt.parse_log(REAL / "real_s1.txt").source
    script.write_text(source)
    packed = len(rt.pack_source(source))
    logs = []
    for s in (1, 2, 3):  # as the trainer logs a readable run: the counted code is the packed size
        log = tmp_path / f"real_s{s}.txt"
        log.write_text(re.sub(r"(?m)^code_bytes:(\d+) model_bytes:(\d+) total_bytes:(\d+)",
                              lambda m: f"code_bytes:{packed} model_bytes:{m[2]} total_bytes:{int(m[2]) + packed}",
                              (REAL / f"real_s{s}.txt").read_text()))
        logs.append(log)
    runs = [rt.parse_log(p) for p in logs]
    assert runs[0].code_bytes == packed != script.stat().st_size
    folder = make_record(capsys, tmp_path, logs=logs, script=script, desc="Shipped", extra=("--allow-partial-val",))
    sub = json.loads((folder / "submission.json").read_text())
    shipped = (folder / "train_gpt.py").stat().st_size
    assert sub["bytes_code"] == shipped and sub["bytes_total"] == max(r.model_bytes for r in runs) + shipped
    code, out = run_cli(capsys, "validate", folder)
    assert not [f for f in lines_with(out, "FAIL") if "bytes" in f], out
    sub["bytes_code"], sub["bytes_total"] = runs[0].code_bytes + 1, runs[0].total_bytes + 1  # not the shipped file's
    (folder / "submission.json").write_text(json.dumps(sub))
    code, out = run_cli(capsys, "validate", folder)
    assert code == 1 and any("bytes_code: json" in f for f in lines_with(out, "FAIL")), out


def test_diff_unpacks_packed_scripts(capsys, tmp_path):
    """A packed train_gpt.py (ours, or the records' two-line lzma/base85 wrapper) is compared by
    the source inside it, not as 3 lines of base85 against a readable file."""
    import base64
    import lzma
    src = (OURS / "tiny_train_gpt.py").read_text()
    changed = src.replace('knob(9, "transformer blocks")', 'knob(11, "transformer blocks")')
    assert changed != src
    a = published_folder(tmp_path, "2026-04-05_A", {"train_gpt.py": src})
    ours = tmp_path / "records" / "track_10min_16mb" / "2026-04-09_Ours"
    ours.mkdir(parents=True)
    (ours / "train_gpt.py").write_bytes(rt.pack_source(changed))  # packed, no readable copy beside it
    blob = base64.b85encode(lzma.compress(changed.encode())).decode()
    theirs = published_folder(tmp_path, "2026-04-09_Theirs", {
        "train_gpt.py": f"import lzma as L,base64 as B\nexec(L.decompress(B.b85decode('{blob}')))\n"})
    for b, how in ((ours, "(unpacked, minified)"), (theirs, "(unpacked)")):
        code, out = run_cli(capsys, "diff", a, b)
        assert code == 0, out
        assert f"train_gpt.py {how}" in out
        assert "changed (1): Config +1/-1" in out, out
    code, out = run_cli(capsys, "diff", ours, theirs)
    assert "the same program: one side is the packed (minified) form of the other's source" in out, out
    (ours / "train_gpt.py").write_bytes(rt.pack_source(src))
    code, out = run_cli(capsys, "diff", a, ours)
    assert "the same program" in out, out


def test_rescore_resolves_relative_logged_paths(capsys, tmp_path, trainer_runs, monkeypatch):
    """A log that recorded the README's relative paths (DATA_PATH=data/sample) re-scores from
    anywhere: the paths resolve against the repository, and the output says which it used; a
    path found nowhere is one FAIL line naming the variable and the fix."""
    run_dir, _, _ = trainer_runs
    [artifact] = [p for p in run_dir.glob("contract.*") if p.suffix not in (".txt", ".pt")]
    log = tmp_path / "rel.txt"
    text = (run_dir / "contract.txt").read_text()
    sample = str(ROOT / "data" / "sample")
    assert f"config:DATA_PATH={sample}\n" in text
    log.write_text(text.replace(f"config:DATA_PATH={sample}\n", "config:DATA_PATH=data/sample\n").replace(
        f"config:TOKENIZER_PATH={sample}/", "config:TOKENIZER_PATH=data/sample/"))
    folder = tmp_path / "rec" / "2026-05-01_Rel"
    code, out = run_cli(capsys, "new", log, "--script", ROOT / "train_gpt.py", "--name", "n", "--author", "a",
                        "--github-id", "g", "--description", "Rel", "--blurb", "b", "--allow-partial-val", "--out", folder)
    assert code == 0, out
    monkeypatch.chdir(tmp_path)
    for key in ("DATA_PATH", "TOKENIZER_PATH"):
        monkeypatch.delenv(key, raising=False)
    code, out = run_cli(capsys, "validate", folder, "--rescore", artifact)
    assert "PASS       rescore seed 7:" in out, out  # (the CPU, partial-split folder fails other checks)
    assert f"rescore data paths: DATA_PATH={sample} (train_seed7.log: data/sample)" in out
    assert f"TOKENIZER_PATH={sample}/sotu_1024_bpe.model" in out
    monkeypatch.setenv("TOKENIZER_PATH", "nowhere/tok.model")
    code, out = run_cli(capsys, "validate", folder, "--rescore", artifact)
    assert code == 1 and "TOKENIZER_PATH=nowhere/tok.model (from the environment) is not at" in out
    assert "set TOKENIZER_PATH=<path> in the environment" in out


def test_leaderboard_date_column_takes_iso_timestamps(capsys, tmp_path):
    for name, date in (("2026-03-19_Iso", "2026-03-19T12:34:56Z"), ("2026-03-20_Space", "2026-03-20 08:00:00+00:00"),
                       ("2026-03-21_Day", "2026-03-21")):
        published_folder(tmp_path, name, {"submission.json": json.dumps({"val_bpb": 1.2, "name": "x", "date": date})})
    code, out = run_cli(capsys, "leaderboard", "--root", tmp_path / "records")
    assert code == 0, out
    rows = {name: ln for ln in out.splitlines() for name in ("_Iso", "_Space", "_Day") if name in ln}
    assert len(rows) == 3 and len({ln.index("  x ") for ln in rows.values()}) == 1, out  # the columns stay aligned
    for name, day in (("_Iso", "2026-03-19"), ("_Space", "2026-03-20"), ("_Day", "2026-03-21")):
        assert f"  {day}  " in rows[name] and "T12" not in rows[name] and "08:00" not in rows[name], rows[name]


def test_validate_warns_on_fewer_than_three_seeds_in_the_record_track(capsys, tmp_path):
    folder = make_record(capsys, tmp_path, logs=tiny_logs(tmp_path)[:2])
    code, out = run_cli(capsys, "validate", folder)
    assert "WARN       seeds: 2 (1, 2) in a record-track folder; a record submission shows 3 seeds" in out
    assert "track_non_record_16mb" in out
    three = make_record(capsys, tmp_path, desc="Three")
    code, out = run_cli(capsys, "validate", three)
    assert "seeds:" not in out


def test_new_without_pack_counts_the_folder_file(capsys, tmp_path):
    """Runs count the packed script; a folder built without --pack holds the readable one, so its
    bytes_total is the model plus that file (not the log's total), and validate accepts it."""
    src = (OURS / "tiny_train_gpt.py").read_text()
    counted = len(rt.pack_source(src))
    assert counted != len(src.encode())

    def edit(seed, ln):  # the logs count the packed size, as train_gpt.py's runs do
        return (ln.replace("code_bytes:1062 model_bytes:15913048 total_bytes:15914110",
                           f"code_bytes:{counted} model_bytes:15913048 total_bytes:{15913048 + counted}")
                  .replace("code_bytes:1062", f"code_bytes:{counted}"))
    folder = make_record(capsys, tmp_path, logs=tiny_logs(tmp_path, edit))
    sub = json.loads((folder / "submission.json").read_text())
    file_bytes = (folder / "train_gpt.py").stat().st_size
    models = {str(s): rt.parse_log(folder / f"train_seed{s}.log").model_bytes for s in (1, 2, 3)}
    assert sub["bytes_total"] == max(models.values()) + file_bytes == sub["artifact_bytes_max"]
    assert sub["bytes_code"] == file_bytes
    assert {k: r["artifact_bytes"] for k, r in sub["seed_results"].items()} == {k: m + file_bytes for k, m in models.items()}
    code, out = run_cli(capsys, "validate", folder)
    assert "PASS       submission.json:" in out, out


def test_user_errors_are_one_line_exit_2(capsys, tmp_path, monkeypatch):
    """Each user error names the file or flag, on one line, exit 2, no traceback."""
    garbage = tmp_path / "g.txt"
    garbage.write_text("not a log\n")
    (tmp_path / "empty").mkdir()
    cases = [(["diff", garbage, garbage], "g.txt: the file is not a training log"),
             (["diff", tmp_path / "empty", OURS / "tiny_s1.txt"], "empty: the folder holds no train_gpt.py"),
             (["pack", OURS / "tiny_train_gpt.py", "--out", tmp_path / "g.txt" / "sub"], "g.txt"),
             (["validate", garbage], "is not a directory"),
             (["leaderboard", "--root", tmp_path / "nowhere"], "is not a directory")]
    for argv, needle in cases:
        code, out = run_cli(capsys, *argv)
        assert code == 2 and needle in out and len(out.strip().splitlines()) == 1 and "Traceback" not in out, (argv, out)
    proc = subprocess.run([sys.executable, str(TOOL), "new", OURS / "tiny_s1.txt"], capture_output=True, text=True)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "--name" in proc.stderr and "--help" in proc.stderr


def test_new_leaves_nothing_half_written(capsys, tmp_path, monkeypatch):
    import rtool.new
    def fail(*a, **k):
        raise OSError(28, "No space left on device", str(tmp_path / "curves.png"))
    monkeypatch.setattr(rtool.new, "plot_curves", fail)
    code, out = run_cli(capsys, "new", *tiny_logs(tmp_path), "--script", OURS / "tiny_train_gpt.py", "--name", "n",
                        "--author", "a", "--github-id", "g", "--description", "Half", "--date", "2026-05-01",
                        "--blurb", "b", "--records-root", tmp_path / "records")
    assert code == 2 and "No space left on device" in out and len(out.strip().splitlines()) == 1, out
    track = tmp_path / "records" / "track_10min_16mb"
    assert not list(track.iterdir()), list(track.iterdir())  # neither the folder nor the staging copy


def test_compare_plots_ours_and_published_logs(capsys, tmp_path):
    """compare (alias plot): one PNG and a table for any mix of our logs, record folders and the
    published records' logs (the 04-27 record logs `N/T train_loss: x train_time: 0.8m`)."""
    pytest.importorskip("matplotlib")
    folder = make_record(capsys, tmp_path)
    out = tmp_path / "cmp.png"
    code, text = run_cli(capsys, "compare", folder, PUB / "top_phased_ttt_seed42.log", "--out", out, "--title", "t")
    assert code == 0, text
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not list(tmp_path.glob(".*.partial.png"))
    rows = [ln for ln in text.splitlines() if ln.endswith(("final_int6_sliding_window", "quantized_ttt_phased"))
            or "train_seed" in ln]
    assert len(rows) == 4, text  # three seeds of the folder and the published log
    assert any("top_phased_ttt_seed42.log" in ln and "1.05989454" in ln for ln in rows), text
    top = rt.parse_log(PUB / "top_phased_ttt_seed42.log")
    assert top.time_points and all(ms % 6000 == 0 for _, ms in top.time_points)  # 0.1-minute resolution, in ms
    times = rt.step_times(top)
    assert times and all(t > 0 for _, t in times)  # intervals below the resolution are merged, never 0 ms/step
    code, text = run_cli(capsys, "plot", tmp_path / "missing.txt", "--out", out)
    assert code == 2 and "missing.txt does not exist" in text and len(text.strip().splitlines()) == 1
    code, text = run_cli(capsys, "compare", folder, "--out", tmp_path / "cmp.pdf")
    assert code == 2 and "must name a .png" in text
