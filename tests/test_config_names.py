"""Environment names: one report of every problem (exit 2, no traceback), "did you mean" for
names close to ours, explanations or aliases for published records' names, silence for names
far from ours, and RUN_ID/OUT_DIR/launcher checks."""
import dataclasses
import subprocess
import sys

import pytest

from conftest import REPO, TINY_ENV, clean_environ


@pytest.mark.parametrize("typo, meant", [
    ("ITERATION", "ITERATIONS"), ("MAX_WALLCLOCK_SECOND", "MAX_WALLCLOCK_SECONDS"), ("VOCAB_SIZ", "VOCAB_SIZE"),
    ("DATAPATH", "DATA_PATH"), ("num_layers", "NUM_LAYERS"), ("SEEED", "SEED"), ("TRAIN_BATCH", "TRAIN_BATCH_TOKENS"),
])
def test_names_close_to_ours_get_did_you_mean(tg, typo, meant):
    """Outside the old prefix families these were silently ignored."""
    with pytest.raises(tg.ConfigError, match=rf"unknown environment variable {typo} \(did you mean {meant}\b"):
        tg.Config.from_env({typo: "1"})


@pytest.mark.parametrize("name", ["NUM_GPUS", "MODEL_NAME", "PATH", "HOME", "CUDA_VISIBLE_DEVICES", "NCCL_DEBUG",
                                  "TORCH_LOGS", "WANDB_PROJECT", "LOCAL_WORLD_SIZE", "MASTER_PORT", "NCCL_NET",
                                  "PYTORCH_CUDA_ALLOC_CONF"])
def test_names_far_from_ours_are_not_our_business(tg, name):
    """NUM_GPUS and MODEL_NAME used to abort the run (they start with NUM_ and MODEL_)."""
    tg.Config.from_env({name: "1"})


@pytest.mark.parametrize("name, explains", [
    ("LATE_QAT", "QAT_MODE=late"),
    ("WEIGHT_DECAY", "ADAM_WD"), ("USE_SMEARGATE", "SMEAR_GATE=blend"), ("TTT_EPOCHS", "not supported"),
    ("QAT_ENABLED", "QAT_MODE=always"), ("BIGRAM_HASH_BUCKETS", "BIGRAM_VOCAB_SIZE"),
])
def test_record_names_are_explained(tg, name, explains):
    """These change the score in the records they come from; they were ignored (LATE_QAT,
    WEIGHT_DECAY, USE_SMEARGATE) or refused without a hint (TTT_EPOCHS)."""
    with pytest.raises(tg.ConfigError) as e:
        tg.Config.from_env({name: "1"})
    assert len(e.value.problems) == 1 and e.value.problems[0].startswith(f"{name} (a name from published records)")
    assert explains in e.value.problems[0]


def test_same_meaning_record_names_are_read_as_ours(tg):
    notes = []
    cfg = tg.Config.from_env({"MUON_WEIGHT_DECAY": "0.02", "GRAD_CLIP": "0.5", "BIGRAM_HASH_DIM": "64",
                              "QAT_THRESHOLD": "0.1"}, notes)
    assert (cfg.muon_wd, cfg.grad_clip_norm, cfg.bigram_dim, cfg.late_qat_threshold) == (0.02, 0.5, 64, 0.1)
    assert "GRAD_CLIP=0.5 read as GRAD_CLIP_NORM (published records' name)" in notes
    with pytest.raises(tg.ConfigError, match="MUON_WEIGHT_DECAY=0.02 and MUON_WD=0.03 are both set"):
        tg.Config.from_env({"MUON_WEIGHT_DECAY": "0.02", "MUON_WD": "0.03"})
    tg.Config.from_env({"MUON_WEIGHT_DECAY": "0.02", "MUON_WD": "0.02"})  # agreeing is fine


def test_record_table_is_consistent(tg):
    fields = {f.name.upper() for f in dataclasses.fields(tg.Config)}
    for name, entry in tg.RECORD_NAMES.items():
        assert name == name.upper() and entry, name
        if entry.startswith("="):
            assert entry[1:] in fields, f"{name} is an alias of {entry[1:]}, which is not a setting"
        assert name not in fields, f"{name} is a setting now: its table entry is never read"


def test_a_record_name_that_becomes_a_field_is_read_as_that_field(tg):
    """Adding a knob named like a record's variable needs no edit of the table."""
    assert "LATE_QAT" in tg.RECORD_NAMES

    @dataclasses.dataclass(frozen=True)
    class Extended(tg.Config):
        late_qat: bool = tg.knob(False, "test-only knob", group="average")

    assert Extended.from_env({"LATE_QAT": "1"}).late_qat is True


def test_every_problem_is_reported_at_once(tg):
    env = {"ITERATION": "5", "NUM_LAYERS": "ten", "EMA_DECAY": "2", "TTT_EPOCHS": "3", "NUM_KV_HEADS": "3",
           "RUN_ID": "../x"}
    with pytest.raises(tg.ConfigError) as e:
        tg.Config.from_env(env)
    text = str(e.value)
    for part in ("ITERATION (did you mean ITERATIONS", "NUM_LAYERS='ten': expected int", "EMA_DECAY=2.0: must be < 1.0",
                 "TTT_EPOCHS (a name from published records)", "NUM_HEADS=8 must be divisible by NUM_KV_HEADS=3",
                 "RUN_ID='../x' must be a plain name"):
        assert part in text, part
    assert len(e.value.problems) == 6


@pytest.mark.parametrize("env, pattern", [
    ({"RUN_ID": "../../x"}, r"RUN_ID='../../x' must be a plain name"),
    ({"RUN_ID": "/tmp/abs"}, r"RUN_ID='/tmp/abs' must be a plain name"),
    ({"RUN_ID": ".hidden"}, r"RUN_ID='.hidden' must be a plain name"),
    ({"OUT_DIR": ""}, r"OUT_DIR is empty"),
])
def test_outputs_stay_inside_out_dir(tg, env, pattern):
    with pytest.raises(tg.ConfigError, match=pattern):
        tg.Config.from_env(env)
    tg.Config.from_env({"RUN_ID": "sp1024_v2-seed_42"})


@pytest.mark.parametrize("env, pattern", [
    ({"RANK": "0"}, r"RANK set without WORLD_SIZE, LOCAL_RANK: launch with torchrun"),
    ({"RANK": "0", "WORLD_SIZE": "3", "LOCAL_RANK": "0"}, r"WORLD_SIZE=3 must divide 8"),
    ({"RANK": "x", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}, r"expected integers"),
    ({"RANK": "2", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}, r"RANK=2 and LOCAL_RANK=0 must be in \[0, WORLD_SIZE=2\)"),
])
def test_launcher_variables_are_checked(tg, env, pattern):
    """RANK without WORLD_SIZE used to be a KeyError."""
    import re
    assert any(re.search(pattern, p) for p in tg.launcher_problems(env))


def test_the_script_prints_one_report_and_exits_2(tmp_path):
    env = clean_environ() | TINY_ENV | {"OUT_DIR": str(tmp_path), "ITERATION": "5", "NUM_LAYERS": "ten",
                                        "LATE_QAT": "1", "RANK": "0"}
    proc = subprocess.run([sys.executable, str(REPO / "train_gpt.py")], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "4 configuration problems, nothing was run" in proc.stderr
    for part in ("ITERATION (did you mean ITERATIONS?)", "NUM_LAYERS='ten'", "LATE_QAT (a name from published records)",
                 "RANK set without WORLD_SIZE"):
        assert part in proc.stderr, part
    assert not list(tmp_path.iterdir())  # nothing written


def test_an_existing_run_id_is_refused_unless_overwrite_is_asked(tmp_path):
    """Reusing a RUN_ID appended a second run to the first one's log and replaced its weights."""
    (tmp_path / "run.txt").write_text("the earlier run's log\n")
    (tmp_path / "run.raw.pt").write_bytes(b"earlier weights")
    (tmp_path / "run.stdout.txt").write_text("a tool's own file: not the trainer's\n")
    env = clean_environ() | TINY_ENV | {"OUT_DIR": str(tmp_path), "RUN_ID": "run"}
    cmd = [sys.executable, str(REPO / "train_gpt.py")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "RUN_ID=run already has files in" in proc.stderr and "run.raw.pt, run.txt" in proc.stderr
    assert "OVERWRITE_RUN=1" in proc.stderr
    assert (tmp_path / "run.txt").read_text() == "the earlier run's log\n"
    assert (tmp_path / "run.raw.pt").read_bytes() == b"earlier weights"
    # Asked to overwrite: the old files go first (this run then stops at its missing data).
    proc = subprocess.run(cmd, env=env | {"OVERWRITE_RUN": "1", "DATA_PATH": str(tmp_path / "none")},
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode != 0 and "is not a directory" in proc.stderr
    log = (tmp_path / "run.txt").read_text()
    assert "the earlier run's log" not in log and "overwrite_run: deleted the earlier run's" in log
    assert not (tmp_path / "run.raw.pt").exists() and (tmp_path / "run.stdout.txt").exists()


# The variables of the published commands of the 1.0611 (2026-04-27) and 1.0565 (2026-05-01) records.
RECORD_0427 = dict(DATA_DIR="./data", VOCAB_SIZE="8192", DATA_PATH="d", TOKENIZER_PATH="t.model", CASEOPS_ENABLED="1",
                   ITERATIONS="20000", MAX_WALLCLOCK_SECONDS="600", PHASED_TTT_ENABLED="1", PHASED_TTT_PREFIX_DOCS="2500",
                   PHASED_TTT_NUM_PHASES="3", EMBED_BITS="7", MATRIX_LR="0.026", MIN_LR="0.1", MLP_CLIP_SIGMAS="11.5",
                   ATTN_CLIP_SIGMAS="13.0", EMBED_CLIP_SIGMAS="14.0", GRAD_CLIP_NORM="0.3", TTT_CHUNK_SIZE="48",
                   WARMUP_STEPS="20", MUON_BACKEND_STEPS="5", GLOBAL_TTT_MOMENTUM="0.9", WARMDOWN_FRAC="0.85",
                   BETA2="0.99", TTT_BETA2="0.99", TTT_WEIGHT_DECAY="0.5", TTT_LORA_RANK="80",
                   SPARSE_ATTN_GATE_SCALE="0.5", GPTQ_RESERVE_SECONDS="0.5", GPTQ_CALIBRATION_BATCHES="16",
                   VAL_LOSS_EVERY="0", GATED_ATTN_QUANT_GATE="1", SPARSE_ATTN_GATE_ENABLED="1", GATE_WINDOW="12",
                   SMEAR_GATE_ENABLED="1", LQER_ENABLED="1", LQER_ASYM_ENABLED="1", LQER_RANK="4", LQER_FACTOR_BITS="4",
                   LQER_ASYM_GROUP="64", LQER_TOP_K="3", FUSED_CE_ENABLED="1", COMPRESSOR="pergroup", NCCL_NET="Socket",
                   SEED="42")
RECORD_0501 = dict(PYTORCH_CUDA_ALLOC_CONF="expandable_segments:True", NCCL_NET="Socket", DATA_DIR="./data",
                   DATA_PATH="d", TOKENIZER_PATH="t.model", CASEOPS_ENABLED="1", VOCAB_SIZE="8192", ASYM_LOGIT_RESCALE="1",
                   NGRAM_TILT_ENABLED="1", NGRAM_HINT_PRECOMPUTE_OUTSIDE="0", TOKEN_ORDER="16", TOKEN_THRESHOLD="0.800",
                   TOKEN_BOOST="2.625", WITHIN_TAU="99.0", WITHIN_BOOST="0.0", WORD_TAU="99.0", WORD_BOOST="0.0",
                   AGREE_ADD_BOOST="0.0", SMEAR_GATE_BOS_FIX="0", TTT_LORA_EMA_DECAY="0.0", TTT_UPDATE_EVERY="1",
                   PHASED_TTT_PREFIX_DOCS="2500", PHASED_TTT_NUM_PHASES="1", EVAL_SEQ_LEN="2560", TTT_EVAL_SEQ_LEN="2560",
                   COMPRESSOR="pergroup", MATRIX_CLIP_SIGMAS="12.85", ATTN_CLIP_SIGMAS="13.0", MLP_CLIP_SIGMAS="11.5",
                   EMBED_BITS="7", EMBED_CLIP_SIGMAS="14.0", MATRIX_LR="0.028", MIN_LR="0.1", WARMDOWN_FRAC="0.85",
                   BETA2="0.99", FUSED_CE_ENABLED="1", SPARSE_ATTN_GATE_ENABLED="1", SPARSE_ATTN_GATE_SCALE="0.5",
                   SMEAR_GATE_ENABLED="1", GATE_WINDOW="12", LQER_ENABLED="1", LQER_RANK="4", LQER_TOP_K="3",
                   LQER_FACTOR_BITS="4", LQER_ASYM_ENABLED="1", LQER_ASYM_GROUP="32", TTT_WARM_START_A="1",
                   TTT_LORA_RANK="80", TTT_BETA2="0.99", TTT_WEIGHT_DECAY="2.0", TTT_LORA_LR="8e-5",
                   GPTQ_RESERVE_SECONDS="0.5", GPTQ_CALIBRATION_BATCHES="32", TTT_K_LORA="0", TTT_O_LORA="1",
                   TTT_MLP_LORA="1", EMA_DECAY="0.9965", SEED="42")


@pytest.mark.parametrize("command", [RECORD_0427, RECORD_0501], ids=["1.0611", "1.0565"])
def test_every_name_of_the_records_commands_is_read_or_refused(tg, command):
    """Pasting a record's command: each variable is a setting, an alias or an accepted name noted
    in the log, or it is refused with a reason naming it. Only the launcher's and the libraries'
    own variables pass unremarked."""
    fields = {tg.Config.env_name(f) for f in dataclasses.fields(tg.Config)}
    notes, problems = [], []
    try:
        tg.Config.from_env(command, notes)
    except tg.ConfigError as e:
        problems = e.problems
    for name in command:
        if name in fields or name in tg.LAUNCHER_NAMES:
            continue
        said = [line for line in notes + problems if line.startswith(name) or f" {name} " in f" {line} "]
        assert said, f"{name} is silently ignored"
    joined = "\n".join(problems)
    assert "always zstd" not in joined and "COMPRESSOR" not in joined.replace("EXPORT_COMPRESSOR", "")
    for name in ("LQER_ASYM_ENABLED", "GATED_ATTN_QUANT_GATE", "FUSED_CE_ENABLED", "TTT_UPDATE_EVERY", "TTT_LORA_EMA_DECAY"):
        if name in command:
            assert any(n.startswith(f"{name}={command[name]} accepted: ") for n in notes), name


def test_compressor_is_our_export_compressor(tg):
    notes = []
    assert tg.Config.from_env({"COMPRESSOR": "lzma"}, notes).export_compressor == "lzma"
    assert "COMPRESSOR=lzma read as EXPORT_COMPRESSOR (published records' name)" in notes
    assert tg.Config.from_env({"COMPRESSOR": "pergroup"}).export_compressor == "pergroup"  # the 1.0611 record's
    for name in ("USE_ZSTD", "ZSTD_LEVEL"):
        with pytest.raises(tg.ConfigError) as e:
            tg.Config.from_env({name: "1"})
        assert "EXPORT_COMPRESSOR" in e.value.problems[0] and "always zstd-22" not in e.value.problems[0]
    assert "always zstd-22" not in tg.config_help()


@pytest.mark.parametrize("name, bad", [("GATED_ATTN_QUANT_GATE", "0"), ("LQER_ASYM_ENABLED", "0"),
                                       ("TTT_UPDATE_EVERY", "4"), ("TTT_LORA_EMA_DECAY", "0.99"),
                                       ("SMEAR_GATE_BOS_FIX", "0"), ("FUSED_CE_ENABLED", "2")])
def test_record_names_fixed_to_our_behaviour_refuse_other_values(tg, name, bad):
    with pytest.raises(tg.ConfigError) as e:
        tg.Config.from_env({name: bad})
    assert len(e.value.problems) == 1 and e.value.problems[0].startswith(f"{name}={bad}: ")


@pytest.mark.parametrize("name", ["LQER_SOMETHING", "GATED_ATTN_NEW", "TTT_SOMETHING_ELSE", "SMEAR_GATE_WINDOW",
                                  "GLOBAL_TTT_FOO", "ZSTD_WINDOW", "COMPRESSION_LEVEL"])
def test_unknown_names_of_the_records_families_are_refused(tg, name):
    with pytest.raises(tg.ConfigError) as e:
        tg.Config.from_env({name: "1"})
    assert name in e.value.problems[0]
