"""configs/*.env replay published records: each parses as a complete, valid configuration
(`env $(cat configs/X.env) torchrun ... train_gpt.py`) and builds the record's model, whose
parameter count is pinned to the record's."""
from pathlib import Path

import pytest
import torch

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PRESETS = {
    # 2026-03-21_11L_XSA4_EMA_PartialRoPE_LateQAT_1.1248: its logs print model_params:26829913
    "record_0321_1.1248.env": 26_829_913,
    # 2026-04-05_SP8192_GPTQ-Embeddings_SDClip_Loop45x2 (1.0856): 11L d512 MLP4 SP8192 tied, skip
    # weights and gates sized for the 15-slot looped sequence (7 each): 35,943,512, the count the
    # SP8192 loop records of that week print for this architecture
    "record_0405_1.0856.env": 35_943_512,
    # 2026-04-27 1.0611 (SmearGate BOS fix, LQER, sparse gate, Polar-Express Muon, phased TTT): its
    # logs print model_params:35945671
    "record_0427_1.0611.env": 35_945_671,
}
RECORD_0611_LOG = Path(__file__).resolve().parents[2] / "shared" / "reference" / "records" / "2026-04-27_1.0611" / "train_seed42.log"
# The 1.0611 run's logged hyperparameters that are not Config fields of the same name: how the
# preset expresses each (checked where a knob carries it), or why none is needed.
RECORD_0611_OTHER = {
    "smear_gate_enabled": ("SMEAR_GATE", "additive"),
    "val_batch_tokens": ("VAL_BATCH_SIZE", "524288"),
    "rope_yarn": ("ROPE_TRAIN_SEQ_LEN", "0"),  # its NTK rescale is off (ROPE_YARN=0): rope_train_seq_len 2048 is inert
    "rope_train_seq_len": ("ROPE_TRAIN_SEQ_LEN", "0"),
    "ttt_k_lora": ("TTT_TARGETS", "q,k,v,o,mlp,head"),
    "ttt_mlp_lora": ("TTT_TARGETS", "q,k,v,o,mlp,head"),
    "ttt_o_lora": ("TTT_TARGETS", "q,k,v,o,mlp,head"),
    "datasets_dir": ("DATA_PATH", "./data/datasets/fineweb10B_sp8192_lossless_caps_caseops_v1_reserved"),
    "tokenizer_path": ("TOKENIZER_PATH", "./data/tokenizers/fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model"),
    "train_files": ("TRAIN_GLOB", "fineweb_train_*.bin"),
    "val_files": ("VAL_GLOB", "fineweb_val_*.bin"),
    "val_bytes_files": ("VAL_BYTES_GLOB", ""),  # default: VAL_GLOB with _val_ -> _val_bytes_, the record's name
    "lqer_asym_enabled": "LQER here is always the asymmetric int2 A / grouped int4 B form",
    "gated_attn_quant_gate": "the sparse gate's weight (role gate) is always stored int8 per row",
    "gated_attn_enabled": "off in the record (dense gated attention)",
    "gated_attn_init_std": "unused with gated attention off",
    "fused_ce_enabled": ("FUSED_CE", "1"),
    "ttt_optimizer": "adam: the TTT adapters' optimizer here is AdamW",
    "ttt_eval_batches": "empty: every TTT batch is scored",
    "val_doc_fraction": "1.0: the whole validation set is scored",
    "compressor": ("EXPORT_COMPRESSOR", "pergroup"),
    "global_ttt_respect_doc_boundaries": ("ATTN_DOC_MASK", "1"),  # the global phases attend within documents
    "run_id": "the run's name", "seed": "the command line's", "data_dir": "a path", "artifact_dir": "a path",
    "logfile": "a path", "model_path": "a path", "quantized_model_path": "a path", "distributed": "the launcher's",
    "rank": "the launcher's", "local_rank": "the launcher's", "world_size": "the launcher's",
    "is_main_process": "the launcher's", "grad_accum_steps": "8 / world size, as here",
}


def read_env(path: Path) -> dict:
    env = {}
    for line in path.read_text().splitlines():
        assert line and "=" in line and " " not in line and not line.startswith("#"), \
            f"{path.name}: `env $(cat ...)` needs plain KEY=VALUE lines, got {line!r}"
        k, v = line.split("=", 1)
        assert k not in env, f"{path.name}: {k} set twice"
        env[k] = v
    return env


def test_every_preset_is_pinned():
    assert sorted(p.name for p in CONFIGS.glob("*.env")) == sorted([*PRESETS, "cpu_sample.env"])


def test_cpu_sample_preset_parses_and_trains(tg, tmp_path):
    """The README's quick start, configs/cpu_sample.env: plain KEY=VALUE lines that `env $(cat ...)`
    passes, a valid configuration of the default architecture fitted to 4 blocks (eager: on 2
    cores the compile warmup alone outlasts the whole eager run), and it trains and scores from
    the repository root. A few steps here: the test checks that it runs, it times nothing."""
    from conftest import REPO, clean_environ
    import subprocess
    import sys
    env = read_env(CONFIGS / "cpu_sample.env")
    cfg = tg.Config.from_env(env)
    assert cfg.num_layers == 4 and cfg.compile == "0" and cfg.train_log_every <= 10 and not cfg.max_wallclock_seconds
    assert (REPO / cfg.data_path).is_dir() and (REPO / cfg.tokenizer_path).is_file()  # relative to the repository
    short = {"ITERATIONS": "3", "WARMDOWN_ITERS": "1", "MUON_MOMENTUM_WARMUP_STEPS": "1", "VAL_MAX_TOKENS": "4096",
             "OUT_DIR": str(tmp_path), "RUN_ID": "sample", "OMP_NUM_THREADS": "1"}  # nothing compared: one thread
    proc = subprocess.run([sys.executable, "train_gpt.py"], cwd=REPO, env=clean_environ() | env | short,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    log = (tmp_path / "sample.txt").read_text()
    assert "compile:0 (COMPILE=0)" in log and "step:1/3 train_loss:" in log and "warmup_step:2/2 " in log
    assert "final_score_exact metric:final_int6-int8_brotli11_sliding_window val_loss:" in log


@pytest.mark.parametrize("name, count", list(PRESETS.items()))
def test_preset_builds_the_record_model(tg, name, count):
    cfg = tg.Config.from_env(read_env(CONFIGS / name))
    with torch.device("meta"):
        model = tg.GPT(cfg, max_len=cfg.train_seq_len)
    assert tg.count_params(model) == count


def test_record_0405_preset_loops_like_the_record(tg):
    cfg = tg.Config.from_env(read_env(CONFIGS / "record_0405_1.0856.env"))
    assert tg.virtual_layers(cfg, True) == [0, 1, 2, 3, 4, 5, 4, 5, 4, 5, 6, 7, 8, 9, 10]
    assert cfg.warmdown_iters == 0 and cfg.warmdown_frac == 0.667


def test_presets_do_not_depend_on_the_defaults(tg):
    """A preset replays its record whatever this script's defaults are: it sets every knob of
    the data, model, optimizer, schedule, averaging, quantization and eval groups (only the run's
    name, output directory and seed are left to the command line), so a change of defaults, like
    the switch from the 1.1248 configuration to the SP8192 one, cannot change a replay."""
    import dataclasses
    free = {"RUN_ID", "OUT_DIR", "OVERWRITE_RUN", "SEED"}
    needed = {tg.Config.env_name(f) for f in dataclasses.fields(tg.Config)
              if f.metadata.get("group") in {"data", "model", "optim", "schedule", "average", "quant", "eval"}} - free
    for name in PRESETS:
        missing = sorted(needed - set(read_env(CONFIGS / name)))
        assert not missing, f"{name} leaves {missing} to the defaults"


@pytest.mark.skipif(not RECORD_0611_LOG.is_file(), reason="the reference records are not next to the repo")
def test_record_0611_preset_is_the_logged_run(tg):
    """Every hyperparameter the 1.0611 run logged (its train_seed42.log dump) is either our
    field of the same name with the same value in the preset, or listed in RECORD_0611_OTHER with
    the preset's knob and value that express it (or why none is needed)."""
    import dataclasses
    import re
    dump = RECORD_0611_LOG.read_text().split("Hyperparameters:\n")[1].split("train_shards")[0]
    logged = dict(re.findall(r"^  (\w+): (.*)$", dump, re.M))
    env = read_env(CONFIGS / "record_0427_1.0611.env")
    cfg = tg.Config.from_env(env)
    fields = {f.name for f in dataclasses.fields(tg.Config)}
    for name, value in logged.items():
        if name in RECORD_0611_OTHER:
            how = RECORD_0611_OTHER[name]
            if isinstance(how, tuple):
                assert env[how[0]] == how[1], (name, how)
            continue
        assert name in fields, f"the record logs {name}={value}: map it to a knob or list it in RECORD_0611_OTHER"
        ours = getattr(cfg, name)
        if isinstance(ours, bool):
            assert ours == (value == "True"), (name, value, ours)
        elif isinstance(ours, str):
            assert ours == value, (name, value, ours)
        else:
            assert ours == type(ours)(float(value)), (name, value, ours)
    # What the record does without a variable: clip each rank's gradient, keep tok_emb in bf16,
    # Polar-Express Newton-Schulz, documents packed into one row per micro-batch, masked attention.
    assert (cfg.grad_clip_scope, cfg.embed_dtype, cfg.muon_ns_coeffs) == ("rank", "bf16", "polar_express")
    assert not cfg.gptq_calibration_doc_mask  # its calibration forward has no cu_seqlens: plain causal rows
    assert (cfg.train_loader, cfg.attn_doc_mask, cfg.ttt_enabled) == ("docpack", True, True)


def dry_run_total(tg, name: str) -> int:
    """What `env $(cat configs/NAME) DRY_RUN=1 python train_gpt.py` checks against the cap:
    the projected model bytes plus the counted (packed) code."""
    cfg = tg.Config.from_env(read_env(CONFIGS / name))
    with torch.device("meta"):
        model = tg.GPT(cfg, max_len=max(cfg.train_row_len, cfg.window_len, cfg.ttt_eval_seq_len))
    return tg.project_artifact(model, cfg)[0] + tg.code_sizes()[1]


@pytest.mark.parametrize("name", [
    "record_0321_1.1248.env", "record_0405_1.0856.env",
    "record_0427_1.0611.env",  # fits only with its record's EXPORT_COMPRESSOR=pergroup (brotli projects 163 KB over)
])
def test_every_preset_fits_its_dry_run(tg, name):
    # a new record preset joins this list (cpu_sample.env, the quick start, is trained by its own test)
    assert sorted(p.name for p in CONFIGS.glob("*.env") if p.name != "cpu_sample.env") == sorted(PRESETS)
    total = dry_run_total(tg, name)
    assert total < tg.ARTIFACT_CAP_BYTES, f"{name} projects {total:,} bytes"


def test_projection_tail_tool_prints_the_dry_run_projection(tg, capsys):
    """bench/projection_tail.py at the trainer's PROJECTION_ROW_MAX prints what DRY_RUN projects."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("projection_tail", CONFIGS.parent / "bench" / "projection_tail.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    row_max = tg.PROJECTION_ROW_MAX
    try:
        assert tool.main(["--values", str(row_max)]) == 0
    finally:
        tool.tg.PROJECTION_ROW_MAX = row_max
    line = capsys.readouterr().out.splitlines()[-1].split()
    cfg = tg.Config.from_env(read_env(CONFIGS / "record_0321_1.1248.env"))
    with torch.device("meta"):
        model = tg.GPT(cfg, max_len=cfg.train_seq_len)
    assert int(line[1]) == tg.project_artifact(model, cfg)[0]
