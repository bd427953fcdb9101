"""Nothing lost, nothing wrong: degenerate settings, schedule ends, EMA on short runs, crafted
artifacts, optimizer caches and quantizer edge cases (each test failed on the code before
its fix)."""
import json
import re
import struct

import numpy as np
import pytest
import torch

from test_model_and_muon import cpu, randomize, tiny_cfg


# --- degenerate or absurd settings are config errors, not torch tracebacks ---

@pytest.mark.parametrize("env, pattern", [
    ({"EMA_DECAY": "1.0"}, r"EMA_DECAY=1.0: must be < 1.0"),      # exported the untrained init
    ({"BETA1": "1"}, r"BETA1=1.0: must be < 1.0"),                # failed inside torch's AdamW
    ({"BETA2": "1.0"}, r"BETA2=1.0: must be < 1.0"),
    ({"MUON_MOMENTUM": "1"}, r"MUON_MOMENTUM=1.0: must be < 1.0"),
    ({"QAT_START_FRAC": "1"}, r"QAT_START_FRAC=1.0: must be < 1.0"),  # would fire after the last step
    ({"SEED": str(2**64)}, r"SEED=18446744073709551616: must be <= 4294967295"),  # C++ overflow in manual_seed
    ({"MLP_MULT": "1e12"}, r"the model would have about 5.77e\+18 parameters"),   # allocator crash
])
def test_degenerate_and_absurd_values_are_rejected(tg, env, pattern):
    with pytest.raises(ValueError, match=pattern):
        tg.Config.from_env(env)


# --- the warmdown and late QAT happen whichever end of training comes first ---

def test_warmdown_and_qat_follow_iterations_when_they_end_training_before_the_cap(tg):
    """A 600 s cap and 100 iterations at 1 ms/step: the run ends at step 100 after 0.1 s. The
    warmdown and late QAT used to follow the cap's clock only, so neither happened."""
    cfg = tg.Config.from_env({"ITERATIONS": "100", "WARMDOWN_ITERS": "20", "MAX_WALLCLOCK_SECONDS": "600",
                              "QAT_START_FRAC": "0.9"})
    assert tg.lr_scale(cfg, 0, 0.0) == 1.0  # the first step: no step time measured yet
    assert tg.lr_scale(cfg, 50, 50.0) == 1.0
    assert tg.lr_scale(cfg, 90, 90.0) == pytest.approx(0.5)
    assert tg.lr_scale(cfg, 100, 100.0) == 0.0
    assert tg.progress(cfg, 90, 90.0) == pytest.approx(0.9)
    # The cap binding first is unchanged: 100 ms/step against a 10 s cap, 9000 iterations.
    timed = tg.Config.from_env({"MAX_WALLCLOCK_SECONDS": "10", "WARMDOWN_ITERS": "20", "GPTQ_RESERVE_SECONDS": "0"})
    assert tg.lr_scale(timed, 90, 9000) == pytest.approx(0.5) and tg.progress(timed, 90, 9000) == pytest.approx(0.9)


# --- EMA: no share of the init on a short run, today's average on a long one ---

def ema_run(tg, decay, values, bias_corrected=True):
    cfg = tiny_cfg(tg, EMA_DECAY=decay)
    model = tg.build_model(cfg, cpu(tg))
    p = model.skip_weights
    with torch.no_grad():
        p.fill_(10.0)  # the "init"
    av = tg.WeightAverager(model, cfg)
    for step, v in enumerate(values, 1):
        with torch.no_grad():
            p.fill_(float(v))
        av.update(step, 1.0)
    av.swap_in()
    return p.detach()[0, 0].item()


def test_short_run_ema_exports_no_init(tg):
    """5 updates at decay 0.9 with the weights at 1.0: the uncorrected EMA exported
    0.9^5 = 59% of the init value 10 (6.3); the bias-corrected one exports 1.0."""
    assert ema_run(tg, 0.9, [1.0] * 5) == pytest.approx(1.0, abs=1e-6)


def test_long_run_ema_equals_the_uncorrected_average(tg):
    """At full length the correction is 1 - decay^n ~ 1: the same average as the plain EMA
    started from the init (computed here in float64)."""
    values = [float(np.sin(i / 50.0)) for i in range(1, 2001)]
    plain = 10.0
    for v in values:
        plain = 0.99 * plain + 0.01 * v
    assert ema_run(tg, 0.99, values) == pytest.approx(plain, abs=1e-5)


# --- a crafted artifact header is a ValueError, never a TypeError/KeyError/IndexError ---

@pytest.fixture(scope="module")
def artifact_blob(tg):
    cfg = tiny_cfg(tg, NUM_LAYERS=1, BIGRAM_VOCAB_SIZE=0, QUANT_METHOD="rtn")  # the header is the subject, not GPTQ
    model = randomize(tg.build_model(cfg, cpu(tg)))
    roles = {n: p.role for n, p in model.named_parameters()}
    return tg.encode_artifact(tg.quantize_state(model.state_dict(), roles, cfg), "bitpack")[0]


def crafted(tg, blob, edit):
    hlen = struct.unpack("<I", blob[4:8])[0]
    header = json.loads(tg.decompress(blob[8:8 + hlen]))
    header = edit(header)
    h = tg.compress(json.dumps(header).encode())
    return tg.ARTIFACT_MAGIC + struct.pack("<I", len(h)) + h + blob[8 + hlen:]


def set_in(path, value):
    def edit(h):
        target = h
        for k in path[:-1]:
            target = target[k]
        target[path[-1]] = value
        return h
    return edit


@pytest.mark.parametrize("edit", [
    lambda h: [h],                                    # TypeError: list indices
    set_in(["frames"], "x"),                          # TypeError in the frame loop
    set_in(["frames", 0, "size"], "12"),              # TypeError: int + str
    lambda h: (h["tensors"][0].pop("bits"), h)[1],    # KeyError
    set_in(["tensors", 0, "frame"], 99),              # IndexError
    set_in(["tensors", 0, "shape"], ["a"]),           # TypeError in np.prod
    set_in(["tensors", 0, "shape"], [2**40, 2**40]),  # np.prod wraps around
    lambda h: (next(e for e in h["tensors"] if "scales" in e).update(scales=5), h)[1],  # TypeError: cannot unpack
], ids=["list", "frames-str", "size-str", "no-bits", "frame-index", "shape-str", "shape-huge", "range-int"])
def test_crafted_headers_raise_value_error(tg, artifact_blob, edit):
    tg.decode_artifact(crafted(tg, artifact_blob, lambda h: h), "x.art")  # the unedited header decodes
    with pytest.raises(ValueError, match=r"^x\.art: "):
        tg.decode_artifact(crafted(tg, artifact_blob, edit), "x.art")


# --- review findings: Muon caches, 8-bit packing, all-zero rows ---

def test_muon_caches_survive_a_state_dict_restore(tg):
    """The warmup restore (load_state_dict) replaces the param-group dicts; caches keyed by
    id(group) kept the old flat buffer alive next to a new one."""
    params = [torch.nn.Parameter(torch.randn(16, 8)) for _ in range(2)]
    opt = tg.Muon(params, lr=0.01, momentum=0.9, backend_steps=2, weight_decay=0.0, ctx=cpu(tg))
    for _ in range(2):
        for p in params:
            p.grad = torch.randn_like(p)
        opt.step()
        opt.load_state_dict(opt.state_dict())
    assert len(opt.flat) == 1 and len(opt.layouts) == 1


def test_bitpack_codes_are_offset_without_int8_overflow(tg, monkeypatch):
    """At 8 bits, codes + 127 overflowed int8 (127 + 127 -> -2) before the cast to unsigned;
    the packer must receive codes in [0, 2^bits)."""
    seen = []
    plain = tg.pack_bits

    def checked(u, bits):
        seen.append((int(u.min()), int(u.max()), bits))
        return plain(u, bits)

    monkeypatch.setattr(tg, "pack_bits", checked)
    w = torch.linspace(-1, 1, 256).reshape(2, 128)
    q, s = tg.quantize_rows(w, 8, "amax")
    qt = tg.Quantized("embed", 8, (2, 128), codes=q, scales=s)
    raw, entries = tg.pack_role([("w", qt)], "bitpack")
    assert seen == [(0, 254, 8)]
    blob, _ = tg.encode_artifact({"w": qt}, "bitpack")
    assert torch.equal(tg.decode_artifact(blob)["w"], q.float() * s.float()[:, None])


def test_all_zero_row_gets_a_usable_scale(tg):
    """An all-zero row had scale fp16(1e-8) = 0 and codes round(0/0) = NaN before the int8 cast."""
    w = torch.randn(3, 16)
    w[1] = 0
    for clip in ("amax", "search"):
        q, s = tg.quantize_rows(w, 6, clip)
        assert s[1] > 0 and torch.isfinite(s).all() and (q[1] == 0).all()
        assert torch.equal(tg.fake_quant(w, 6, clip)[1], torch.zeros(16))


# --- whole runs: nothing trained is lost, nothing wrong is printed ---

import errno  # noqa: E402
import io  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

from conftest import REPO, SAMPLE, TINY_ENV, clean_environ, run_script  # noqa: E402


def in_process_env(monkeypatch, tmp_path, **overrides):
    for k, v in (TINY_ENV | {"OUT_DIR": str(tmp_path), "RUN_ID": "run", "EVAL_STRIDE": "0"} | overrides).items():
        monkeypatch.setenv(k, v)
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)


def write_shard(path, tokens):
    header = np.zeros(256, dtype="<i4")
    header[:3] = (20240520, 1, len(tokens))
    path.write_bytes(header.tobytes() + np.asarray(tokens, dtype="<u2").tobytes())


def sample_copy(tmp_path):
    data = tmp_path / "data"
    shutil.copytree(SAMPLE, data)
    return data


def test_raw_weights_are_saved_before_the_final_evaluation(tg, tmp_path, monkeypatch):
    """Any failure of the final in-loop eval (an out-of-range token, out of memory) used to
    lose the trained weights: they were saved after it."""
    in_process_env(monkeypatch, tmp_path, ITERATIONS="3")

    def failing_eval(*args, **kwargs):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(tg, "evaluate", failing_eval)
    with pytest.raises(RuntimeError, match="simulated"):
        tg.main([])
    state = torch.load(tmp_path / "run.raw.pt", weights_only=True)
    model = tg.build_model(tg.Config.from_env(), cpu(tg))
    model.load_state_dict(state, strict=True)
    assert "error:RuntimeError: CUDA out of memory (simulated)" in (tmp_path / "run.txt").read_text()


def bad_val_token(data):
    tokens = tg_load(data / "sotu_val_000000.bin")
    tokens[1000] = 1024
    write_shard(data / "sotu_val_000000.bin", tokens)
    return {}, r"sotu_val_000000.bin: token id 1024 >= VOCAB_SIZE=1024"


def truncated_later_train_shard(data):
    p = data / "sotu_train_000001.bin"
    p.write_bytes(p.read_bytes()[:-10])
    return {}, r"sotu_train_000001.bin: header says \d+ tokens .* \(truncated or corrupt\)"


def train_glob_matches_val(data):
    return {"TRAIN_GLOB": "sotu_*.bin"}, r"training shard .*sotu_val_000000.bin is also a validation shard"


def val_copied_into_train(data):
    shutil.copy(data / "sotu_val_000000.bin", data / "sotu_train_000009.bin")
    return {}, r"training shard .*sotu_train_000009.bin holds exactly the tokens of validation shard"


def tokenizer_not_the_manifests(data):
    manifest = json.loads((data / "manifest.json").read_text())
    manifest["files"]["sotu_1024_bpe.model"]["sha256"] = "0" * 64
    (data / "manifest.json").write_text(json.dumps(manifest))
    return {}, r"is not the tokenizer the shards were made with"


def tg_load(path):
    return np.fromfile(path, dtype="<u2", offset=1024).astype(np.int64)


@pytest.mark.parametrize("make", [bad_val_token, truncated_later_train_shard, train_glob_matches_val,
                                  val_copied_into_train, tokenizer_not_the_manifests])
def test_data_preflight_fails_before_step_one(tg, tmp_path, monkeypatch, capsys, make):
    """Each of these trained (or crashed late, or scored on trained-on data) with the old code.
    They are user errors: the config report's kind on stderr, exit 2, no traceback."""
    data = sample_copy(tmp_path)
    extra, pattern = make(data)
    in_process_env(monkeypatch, tmp_path, DATA_PATH=str(data), TOKENIZER_PATH=str(data / "sotu_1024_bpe.model"), **extra)
    assert tg.main([]) == 2
    err = capsys.readouterr().err
    assert re.search(pattern, err) and "problem with the run's inputs, nothing was run" in err and "Traceback" not in err
    log = (tmp_path / "run.txt").read_text()
    assert "error:InputError: data preflight: " in log and "step:1/" not in log and not (tmp_path / "run.raw.pt").exists()


def test_all_empty_training_shards_are_an_error_not_a_hang(tmp_path):
    data = sample_copy(tmp_path)
    for p in data.glob("sotu_train_*.bin"):
        write_shard(p, [])
    env = clean_environ() | TINY_ENV | {"OUT_DIR": str(tmp_path), "RUN_ID": "run", "DATA_PATH": str(data)}
    proc = subprocess.run([sys.executable, str(REPO / "train_gpt.py")], env=env, capture_output=True, text=True,
                          timeout=240, cwd=tmp_path)
    assert proc.returncode != 0 and "the 2 training shards hold 0 tokens" in proc.stderr


def test_a_non_finite_loss_stops_training_and_keeps_the_weights(tg, tmp_path, monkeypatch):
    """A NaN loss used to train to the end and exit 0 with val_bpb:nan."""
    in_process_env(monkeypatch, tmp_path, ITERATIONS="12")
    plain_step = tg.Trainer.step

    def poisoned_step(self, step, scale):
        if step == 4:  # the 5th step's forward sees a NaN weight
            with torch.no_grad():
                self.model.skip_weights.fill_(float("nan"))
        return plain_step(self, step, scale)

    monkeypatch.setattr(tg.Trainer, "step", poisoned_step)
    assert tg.main([]) == 1
    log = (tmp_path / "run.txt").read_text().split("=" * 100)[1]  # the events, after the embedded source
    assert "error:RunStopped: non-finite training loss (nan) at step 5; training stopped" in log
    assert "raw_model:" in log and "(training stopped at step 5)" in log
    assert "final_score_exact" not in log and "val_bpb:nan" not in log
    assert (tmp_path / "run.raw.pt").is_file()


def test_a_full_disk_leaves_no_partial_file_and_names_path_and_cause(tg, tmp_path, monkeypatch):
    """A half-written .raw.pt used to stay under its final name, with an error naming neither
    the path nor the cause."""
    model = tg.build_model(tiny_cfg(tg), cpu(tg))
    path = tmp_path / "run.raw.pt"
    tg.save_state(model, path, lambda msg: None, "raw_model")
    before = path.read_bytes()

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(tg.os, "fsync", full)
    with torch.no_grad():
        model.skip_weights.add_(1.0)
    with pytest.raises(OSError, match=rf"could not write {path}: No space left on device"):
        tg.save_state(model, path, lambda msg: None, "raw_model")
    assert path.read_bytes() == before  # the complete older file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.raw.pt"]  # no temporary left behind
    with pytest.raises(OSError, match=rf"could not write {tmp_path / 'x.art'}: No space left on device"):
        tg.export_artifact(model.state_dict(), {n: p.role for n, p in model.named_parameters()},
                           tiny_cfg(tg, QUANT_METHOD="rtn"), tmp_path / "x.art", lambda msg: None)
    assert not (tmp_path / "x.art").exists()


def test_ctrl_c_on_timeout_torchrun_saves_loadable_weights(tg, tmp_path):
    """Ctrl-C on `timeout N torchrun ...`: the terminal's SIGINT reaches timeout, torchrun and both
    ranks, and torchrun then sends SIGTERM to the ranks. The second signal used to abort mid-step:
    no .raw.pt, all training lost. Now both signals are flags: both ranks stop after the same
    step, rank 0 saves the live and the averaged weights, the log ends with one error line and
    the exit status is non-zero."""
    env = clean_environ() | TINY_ENV | {"OUT_DIR": str(tmp_path), "RUN_ID": "run", "ITERATIONS": "100000",
                                        "WARMDOWN_ITERS": "0", "TRAIN_LOG_EVERY": "1", "OMP_NUM_THREADS": "1"}
    cmd = ["timeout", "300", sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(REPO / "train_gpt.py")]
    # A session of its own: the process group a terminal's Ctrl-C signals.
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    log = tmp_path / "run.txt"
    deadline = time.time() + 400
    while time.time() < deadline and not (log.exists() and "step:3/100000 train_loss" in log.read_text()):
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    text = log.read_text().split("=" * 100)[1]  # the events, after the embedded source
    assert proc.returncode != 0, out[-3000:]
    # the ranks get the terminal's SIGINT and torchrun's SIGTERM in either order: whichever came
    # first names the stop; the second must not abort the weight saves
    assert re.search(r"error:RunStopped: interrupted by SIG(INT|TERM) after step", text), text[-3000:]
    assert text.count("error:") == 1 and 'train_gpt.py", line' not in out  # torchrun prints its own traceback
    assert "raw_model:" in text and "averaged_model:" in text and "(training stopped at step" in text
    cfg = tg.Config.from_env({k: v for k, v in TINY_ENV.items()})
    for name in ("run.raw.pt", "run.avg.pt"):
        tg.build_model(cfg, cpu(tg)).load_state_dict(torch.load(tmp_path / name, weights_only=True), strict=True)
    assert not list(tmp_path.glob(".*.tmp"))


def test_signal_handler_flags_while_weights_are_unsaved_and_stops_at_once_otherwise(tg):
    """SIGINT (Ctrl-C) and SIGTERM share one handler. During training the first two signals are
    flags (Ctrl-C on torchrun delivers two), a third raises at once; while the trained weights are
    written every signal waits; outside these modes a signal raises Interrupted at once."""
    before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN in a background job

    def deliver(s):
        os.kill(os.getpid(), s)
        time.sleep(0.05)

    signals = tg.StopSignals().install()
    try:
        signals.mode = "training"
        deliver(signal.SIGINT)
        deliver(signal.SIGTERM)
        assert (signals.signum, signals.count) == (signal.SIGINT, 2)
        with pytest.raises(tg.Interrupted, match="interrupted by SIGTERM"):
            deliver(signal.SIGTERM)
        signals.mode = "saving"
        for _ in range(3):
            deliver(signal.SIGTERM)
        assert signals.count == 5
        signals.mode, signals.signum, signals.count = None, 0, 0
        with pytest.raises(tg.Interrupted, match="interrupted by SIGINT"):
            deliver(signal.SIGINT)
    finally:
        signals.restore()
    assert signal.getsignal(signal.SIGINT) is before


# --- the second hostile test: signals, changing data, ranks, outputs, disks, inputs ---

QUICK = {"EVAL_STRIDE": "0", "QUANT_METHOD": "rtn", "WARMUP_STEPS": "0", "VAL_MAX_TOKENS": "2048"}


def events(path):
    """A run's log after the embedded source."""
    return path.read_text().split("=" * 100)[1]


def loads_into_the_model(tg, path):
    cfg = tg.Config.from_env(dict(TINY_ENV))
    tg.build_model(cfg, cpu(tg)).load_state_dict(torch.load(path, weights_only=True), strict=True)
    return True


def test_atomic_write_removes_its_temporary_file_on_a_signal(tg, tmp_path, monkeypatch):
    """A SIGTERM while .raw.pt was written left a complete hidden .tmp file: the clean-up ran
    only on OSError, and a signal is a BaseException."""
    path = tmp_path / "run.raw.pt"
    tg.atomic_write(path, b"older complete file")

    def signalled(fd):
        raise tg.Interrupted(signal.SIGTERM)

    monkeypatch.setattr(tg.os, "fsync", signalled)
    with pytest.raises(tg.Interrupted):
        tg.atomic_write(path, b"new weights")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.raw.pt"] and path.read_bytes() == b"older complete file"


def test_a_signal_after_training_finds_the_averaged_weights_saved(tg, tmp_path, monkeypatch):
    """SIGTERM during the final validation (or the GPTQ calibration) lost the EMA weights, which
    are what gets exported: they were saved after both. Now they are on disk when training ends."""
    in_process_env(monkeypatch, tmp_path, ITERATIONS="3", **QUICK)
    monkeypatch.setattr(tg.Trainer, "validate", lambda self, *a: os.kill(os.getpid(), signal.SIGTERM) or time.sleep(1))
    assert tg.main([]) == 128 + signal.SIGTERM
    log = events(tmp_path / "run.txt")
    assert log.index("averaged_model:") < log.index("error:Interrupted: interrupted by SIGTERM")
    assert loads_into_the_model(tg, tmp_path / "run.avg.pt") and loads_into_the_model(tg, tmp_path / "run.raw.pt")


def test_a_signal_while_the_weights_are_written_waits_for_them(tg, tmp_path, monkeypatch):
    """SIGTERM while .raw.pt was written left no .raw.pt and a complete hidden .tmp file. Now
    signals wait while the trained weights are written: both files complete, then the stop."""
    in_process_env(monkeypatch, tmp_path, ITERATIONS="2", **QUICK)
    plain = tg.atomic_write

    def signalled_write(path, data):
        if path.name == "run.raw.pt":
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.2)  # the handler runs here, mid-save
        return plain(path, data)

    monkeypatch.setattr(tg, "atomic_write", signalled_write)
    assert tg.main([]) == 128 + signal.SIGTERM
    log = events(tmp_path / "run.txt")
    assert "error:RunStopped: interrupted by SIGTERM after training ended" in log
    assert loads_into_the_model(tg, tmp_path / "run.raw.pt") and loads_into_the_model(tg, tmp_path / "run.avg.pt")
    assert not list(tmp_path.glob(".*.tmp"))


TRUNCATE_DRIVER = """
import os, sys
sys.path.insert(0, {repo!r})
import train_gpt as tg
plain = tg.Trainer.step

def step(self, i, scale):
    if i == 1:  # what `cp` over a shard does to a running job: the file shrinks under it
        os.truncate({shard!r}, os.path.getsize({shard!r}) // 2)
    return plain(self, i, scale)

tg.Trainer.step = step
sys.exit(tg.main([]))
"""


def short_train_shards(tmp_path):
    data = sample_copy(tmp_path)
    tokens = tg_load(data / "sotu_train_000000.bin")
    write_shard(data / "sotu_train_000000.bin", tokens[:12000])  # the stream reaches shard 1 at step 3
    write_shard(data / "sotu_train_000001.bin", tokens[12000:24000])
    return data, data / "sotu_train_000001.bin"


def assert_stopped_on_the_changed_shard(tg, tmp_path, shard):
    log = events(tmp_path / "run.txt")
    assert re.search(rf"error:RunStopped: training failed after step \d+: ValueError: shard {shard} changed during the run", log), log[-1500:]
    assert loads_into_the_model(tg, tmp_path / "run.raw.pt") and loads_into_the_model(tg, tmp_path / "run.avg.pt")


def test_a_shard_truncated_under_a_shuffled_run_is_an_error_with_the_weights_saved(tg, tmp_path):
    """The shuffled loader's memory map died of SIGBUS (exit 135, no error line, no weights).
    A subprocess: on the old code the SIGBUS kills the process."""
    data, shard = short_train_shards(tmp_path)
    driver = tmp_path / "driver.py"
    driver.write_text(TRUNCATE_DRIVER.format(repo=str(REPO), shard=str(shard)))
    proc = run_script(tmp_path, {"DATA_PATH": str(data), "ITERATIONS": "40", "TRAIN_LOADER": "shuffled"} | QUICK,
                      script=driver, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert_stopped_on_the_changed_shard(tg, tmp_path, shard)


def test_a_shard_truncated_under_a_stream_run_is_an_error_with_the_weights_saved(tg, tmp_path, monkeypatch):
    """The stream loader raised a traceback without saving the weights trained so far."""
    data, shard = short_train_shards(tmp_path)
    in_process_env(monkeypatch, tmp_path, DATA_PATH=str(data), ITERATIONS="40", TRAIN_LOADER="stream", **QUICK)
    plain = tg.Trainer.step

    def step(self, i, scale):
        if i == 1:
            os.truncate(shard, os.path.getsize(shard) // 2)
        return plain(self, i, scale)

    monkeypatch.setattr(tg.Trainer, "step", step)
    assert tg.main([]) == 1
    assert_stopped_on_the_changed_shard(tg, tmp_path, shard)


def torchrun(tmp_path, driver_text, extra, timeout=300):
    driver = tmp_path / "driver.py"
    driver.write_text(driver_text.format(repo=str(REPO)))
    return run_script(tmp_path, extra, nproc=2, script=driver, check=False, timeout=timeout)


MISMATCH_DRIVER = """
import os, sys
if os.environ["RANK"] == "1":
    os.environ["VAL_MAX_TOKENS"] = "4096"  # one rank started with another setting
sys.path.insert(0, {repo!r})
import train_gpt as tg
sys.exit(tg.main([]))
"""


def test_ranks_with_different_settings_stop_before_step_one(tmp_path):
    """A rank with another VAL_MAX_TOKENS trained and scored without a word (val_bpb 3.6754
    instead of 3.5063, exit 0)."""
    proc = torchrun(tmp_path, MISMATCH_DRIVER, {})
    assert proc.returncode != 0
    assert "rank 1 runs with VAL_MAX_TOKENS=4096, rank 0 with VAL_MAX_TOKENS=16384" in proc.stderr
    assert not (tmp_path / "run.txt").exists()


DEAD_PEER_DRIVER = """
import os, signal, sys
sys.path.insert(0, {repo!r})
import train_gpt as tg
plain = tg.Trainer.step

def step(self, i, scale):
    if i == 3 and self.ctx.rank == 1:
        os.kill(os.getpid(), signal.SIGKILL)  # a peer dies mid-training (out of memory, a node lost)
    return plain(self, i, scale)

tg.Trainer.step = step
sys.exit(tg.main([]))
"""


def test_a_dead_peer_leaves_rank_zero_saving_its_weights(tg, tmp_path):
    """Rank 0 held complete weights after a peer was killed and did not save them."""
    proc = torchrun(tmp_path, DEAD_PEER_DRIVER, {"ITERATIONS": "1000"} | QUICK)
    log = events(tmp_path / "run.txt")
    assert proc.returncode != 0
    assert re.search(r"error:RunStopped: (training failed after step 3|interrupted by SIGTERM after step 3)", log), log[-2000:]
    assert "raw_model:" in log and loads_into_the_model(tg, tmp_path / "run.raw.pt")


@pytest.fixture
def small_disk(tmp_path):
    """make(kib): a directory on a tmpfs of that size (a real full disk), or None where mount is
    not permitted; unmounted afterwards."""
    mounts = []

    def make(kib, options=""):
        d = tmp_path / f"disk{len(mounts)}"
        d.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k{options}", "tmpfs", str(d)], capture_output=True)
        if r.returncode:
            return None
        mounts.append(d)
        return d

    yield make
    for d in mounts:
        subprocess.run(["umount", str(d)], capture_output=True)


@pytest.mark.parametrize("raw_fits", [True, False], ids=["avg-does-not-fit", "no-weights-fit"])
def test_a_full_disk_at_the_weight_saves_still_produces_the_artifact(tg, tmp_path, monkeypatch, small_disk, raw_fits):
    """A full disk at the averaged-weights save aborted with no artifact, although the artifact
    would have fitted; with .raw.pt not fitting either, all training was lost. A real tmpfs
    fills up: the saves that do not fit are error lines, the (much smaller) artifact is written
    and scored, and the run exits 1 naming what was not saved."""
    buf = io.BytesIO()
    torch.save(tg.build_model(tg.Config.from_env(dict(TINY_ENV)), cpu(tg)).state_dict(), buf)
    weights, log_bytes = len(buf.getvalue()), (REPO / "train_gpt.py").stat().st_size + 40_000
    # the log and the artifact (about a tenth of the weights) fit, and .raw.pt too, or not
    kib = (log_bytes + weights // 4 + (weights if raw_fits else 0)) // 1024
    out = small_disk(kib)
    if out is None:
        pytest.skip("mount -t tmpfs is not permitted here")
    in_process_env(monkeypatch, out, ITERATIONS="3", **QUICK)
    assert tg.main([]) == 1
    log = events(out / "run.txt")
    label = "int6-int8_brotli11"
    assert f"final_{label}_roundtrip_exact" in log and (out / f"run.{label}").is_file()
    assert f"error:averaged_model not saved (could not write {out / 'run.avg.pt'}: No space left on device)" in log
    assert (out / "run.raw.pt").is_file() == raw_fits and ("error:raw_model not saved" in log) != raw_fits
    assert re.search(r"error:RunStopped: .*averaged_model not saved .*; the artifact \S+ was written and scored", log)
    assert not list(out.glob(".*.tmp"))


def test_overwrite_clean_up_covers_every_compressors_artifact(tg, tmp_path):
    """The clean-up matched only _zstd names: a brotli or lzma artifact of the earlier run
    survived next to a new failed run."""
    names = ["run.txt", "run.raw.pt", "run.avg.pt", "run.int6-int8_zstd22", "run.int6-int8_brotli11",
             "run.int6-int8_lzma9", "run.int6-int8_pergroup", "run.fp16_brotli11"]
    for n in names + ["run.stdout.txt", "other.int6_brotli11", "run2.txt", "notes.md"]:
        (tmp_path / n).write_text("x")
    assert [p.name for p in tg.run_outputs(tmp_path, "run")] == sorted(names)


def test_eval_only_never_deletes_the_artifact_it_scores(tg, tmp_path, monkeypatch, capsys, tiny_artifact):
    """EVAL_ONLY with OVERWRITE_RUN=1 and the artifact's own RUN_ID deleted the artifact."""
    art = tmp_path / tiny_artifact[0].name
    shutil.copy(tiny_artifact[0], art)
    in_process_env(monkeypatch, tmp_path, EVAL_ONLY=str(art), OVERWRITE_RUN="1", **QUICK)
    assert tg.main([]) == 2
    assert art.read_bytes() == tiny_artifact[0].read_bytes()
    assert f"EVAL_ONLY={art} is a file of RUN_ID=run, which this run would delete (OVERWRITE_RUN=1)" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["read-only OUT_DIR", "missing TOKENIZER_PATH"])
def test_user_errors_are_one_report_exit_2_no_traceback(tg, tmp_path, monkeypatch, capsys, small_disk, case):
    """A read-only OUT_DIR and a missing TOKENIZER_PATH printed a clear message, then a full
    traceback, exit 1, unlike configuration errors (exit 2)."""
    if case == "read-only OUT_DIR":
        out = tmp_path / "ro"
        out.mkdir()
        out.chmod(0o555)
        if os.access(out, os.W_OK):  # root ignores modes: a read-only mount
            out = small_disk(64, ",ro")
            if out is None:
                pytest.skip("no way to make a read-only directory here")
        in_process_env(monkeypatch, out)
        want = f"OUT_DIR={out}"
    else:
        in_process_env(monkeypatch, tmp_path, TOKENIZER_PATH=str(tmp_path / "nope.model"))
        want = f"TOKENIZER_PATH={tmp_path / 'nope.model'} does not exist"
    assert tg.main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("train_gpt.py: 1 ") and want in err and "Traceback" not in err


@pytest.fixture(scope="module")
def tiny_artifact(tg, tmp_path_factory):
    """A 2-step run's artifact and its log (trained once for the EVAL_ONLY tests)."""
    out = tmp_path_factory.mktemp("trained")
    mp = pytest.MonkeyPatch()
    in_process_env(mp, out, ITERATIONS="2", MLP_ACT="leaky_relu2", LOGIT_SOFTCAP="30", **QUICK)
    try:
        assert tg.main([]) == 0
    finally:
        mp.undo()
    return out / "run.int6-int8_brotli11", (out / "run.txt").read_text()


def eval_only_env(tg, monkeypatch, tmp_path, art, **model):
    in_process_env(monkeypatch, tmp_path, EVAL_ONLY=str(art), RUN_ID="again", **QUICK)
    for name in tg.model_settings(tg.Config()):
        monkeypatch.delenv(name, raising=False)
    for k, v in model.items():
        monkeypatch.setenv(k, v)


def test_the_recorded_model_settings_are_the_model_knobs(tg):
    """model_settings picks the knobs by position (the packed copy has no knob groups): the same
    set as the readable file's MODEL group, less the attention kernel, plus the vocabulary and the
    training context."""
    group = {tg.Config.env_name(f) for f in tg.dataclasses.fields(tg.Config) if f.metadata["group"] == "model"}
    assert set(tg.model_settings(tg.Config())) == group - {"ATTN_BACKEND"} | {"VOCAB_SIZE", "TRAIN_SEQ_LEN"}


def test_eval_only_needs_no_model_variables(tg, tmp_path, monkeypatch, tiny_artifact):
    """The model comes from the artifact's header: without NUM_LAYERS, MODEL_DIM, ... the re-score
    equals the training run's (it used to fail in load_state_dict with a raw traceback)."""
    art, trained = tiny_artifact
    eval_only_env(tg, monkeypatch, tmp_path, art)
    assert tg.main([]) == 0
    again = (tmp_path / "again.txt").read_text()
    want = re.search(r"^final_score_exact metric:.*", trained, re.M).group(0)
    assert want in again and "config:NUM_LAYERS=2" in again and "EVAL_ONLY: " in again


def test_the_packed_copy_rescores_the_readable_runs_artifact(tg, tmp_path, tiny_artifact):
    """The artifact's code hash is of the text the packed copy runs (the minified source), so a
    record folder's packed train_gpt.py re-scores an artifact its readable source trained, with
    no model variables, to the same digits."""
    art, trained = tiny_artifact
    packed = tmp_path / "train_gpt.py"
    packed.write_bytes(tg.pack_source((REPO / "train_gpt.py").read_text()))
    env = {k: v for k, v in (TINY_ENV | QUICK).items() if k not in tg.model_settings(tg.Config())}
    env = clean_environ() | env | {"EVAL_ONLY": str(art), "OUT_DIR": str(tmp_path), "RUN_ID": "again", "OMP_NUM_THREADS": "2"}
    proc = subprocess.run([sys.executable, str(packed)], env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert re.search(r"^final_score_exact metric:.*", trained, re.M).group(0) in (tmp_path / "again.txt").read_text()


def test_eval_only_may_change_the_eval_time_model_settings(tg, tmp_path, monkeypatch, tiny_artifact):
    """Document masking is an eval protocol (the cross-evals score a masked-trained model
    unmasked): a difference is a logged note, not a refusal."""
    art, _ = tiny_artifact
    eval_only_env(tg, monkeypatch, tmp_path, art, ATTN_DOC_MASK="0")
    assert tg.main([]) == 0
    again = (tmp_path / "again.txt").read_text()
    assert "config:ATTN_DOC_MASK=False" in again and "ATTN_DOC_MASK=False differs from the artifact's ATTN_DOC_MASK=True" in again


@pytest.mark.parametrize("model, wants", [
    ({"MLP_ACT": "relu2", "LOGIT_SOFTCAP": "20"},  # no tensor shape changes: exit 0 and another score
     ["MLP_ACT='relu2' is set, but the artifact {art} was trained with MLP_ACT='leaky_relu2'",
      "LOGIT_SOFTCAP=20.0 is set, but the artifact {art} was trained with LOGIT_SOFTCAP=30.0"]),
    ({"NUM_LAYERS": "3"}, ["NUM_LAYERS=3 is set, but the artifact {art} was trained with NUM_LAYERS=2"]),
    ({"CODE": "other"}, ["was written by a train_gpt.py whose source has sha256"]),
], ids=["no-shape-change", "shape-change", "other-code"])
def test_eval_only_refuses_a_model_that_is_not_the_artifacts(tg, tmp_path, monkeypatch, capsys, tiny_artifact, model, wants):
    art, _ = tiny_artifact
    if model.pop("CODE", None):
        monkeypatch.setattr(tg, "source_sha256", lambda: "0" * 64)
    eval_only_env(tg, monkeypatch, tmp_path, art, **model)
    assert tg.main([]) == 2
    err = capsys.readouterr().err
    assert all(w.format(art=art) in err for w in wants) and "Traceback" not in err, err
    assert not (tmp_path / "again.txt").exists()  # stopped before anything was loaded or written


def zero_sidecar(tg, data, tokens):
    return np.zeros(len(tokens), dtype=np.int64), "every entry is 0"


def other_shards_sidecar(tg, data, tokens):
    sp = tg.spm.SentencePieceProcessor(model_file=str(data / "sotu_1024_bpe.model"))
    lut = tg.lut_target_bytes(torch.from_numpy(tokens), tg.build_byte_lut(sp, 1024)).numpy()
    other = np.roll(lut, 1000)
    other[tokens == sp.bos_id()] = 0  # aligned at the document starts: only the byte counts are wrong
    return other, "tokens count more bytes than their piece spells"


@pytest.mark.parametrize("make", [zero_sidecar, other_shards_sidecar])
def test_an_implausible_byte_sidecar_fails_before_training(tg, tmp_path, monkeypatch, capsys, make):
    """An all-zero sidecar passed every check, trained the whole run, then the first eval died
    dividing by zero bytes (and the EMA weights were lost); a sidecar of other text with the
    right length was scored."""
    data = sample_copy(tmp_path)
    tokens = tg_load(data / "sotu_val_000000.bin")
    side, want = make(tg, data, tokens)
    write_shard(data / "sotu_val_bytes_000000.bin", side)
    in_process_env(monkeypatch, tmp_path, DATA_PATH=str(data), TOKENIZER_PATH=str(data / "sotu_1024_bpe.model"))
    assert tg.main([]) == 2
    err = capsys.readouterr().err
    assert f"byte sidecar {data / 'sotu_val_bytes_*.bin'}: " in err and want in err
    assert "step:1/" not in (tmp_path / "run.txt").read_text()


def test_the_sidecar_check_passes_the_tokenizers_own_bytes(tg):
    sp = tg.spm.SentencePieceProcessor(model_file=str(SAMPLE / "sotu_1024_bpe.model"))
    tokens = torch.from_numpy(tg_load(SAMPLE / "sotu_val_000000.bin"))
    lut = tg.lut_target_bytes(tokens, tg.build_byte_lut(sp, 1024))
    assert tg.sidecar_problems(lut, lut, "x") == [] and tg.tokenizer_problems(sp, tokens, "x") == []


def test_a_tokenizer_that_did_not_make_the_shards_fails_without_a_manifest(tg, tmp_path, monkeypatch, capsys):
    """Without a manifest any tokenizer of the right size was accepted and scored. Val ids mapped
    to other pieces stand for shards made with another tokenizer of the same vocabulary size."""
    data = sample_copy(tmp_path)
    (data / "manifest.json").unlink()
    tokens = tg_load(data / "sotu_val_000000.bin")
    other = np.where(tokens == 1, 1, (tokens * 7 + 3) % 1024)
    other[other == 1] = 2
    write_shard(data / "sotu_val_000000.bin", np.where(tokens == 1, 1, other))
    in_process_env(monkeypatch, tmp_path, DATA_PATH=str(data), TOKENIZER_PATH=str(data / "sotu_1024_bpe.model"))
    assert tg.main([]) == 2
    assert "the shards were not made with this tokenizer" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["caseops without sidecar", "RUN_ID with files"])
def test_dry_run_fails_where_the_run_would_refuse(tg, tmp_path, monkeypatch, capsys, case):
    """DRY_RUN said PASS for CaseOps data without a byte sidecar and for a RUN_ID whose files exist."""
    extra = {"CASEOPS_ENABLED": "1"} if case == "caseops without sidecar" else {}
    if case == "RUN_ID with files":
        (tmp_path / "run.txt").write_text("an earlier run")
    in_process_env(monkeypatch, tmp_path, DRY_RUN="1", **extra)
    assert tg.main([]) == 1
    out = capsys.readouterr().out
    want = ("check data_preflight: FAIL CASEOPS_ENABLED=1 but no byte sidecar matches" if extra
            else "check run_files: FAIL RUN_ID=run already has files in")
    assert want in out and "dry_run_result: FAIL (1 failed)" in out
