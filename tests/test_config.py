"""Config: parsing, validation errors that name the variable, typo detection, --help."""
import re
import subprocess
import sys

import pytest

from conftest import REPO


def test_defaults_are_valid(tg):
    cfg = tg.Config.from_env({})
    # The 04-09-class SP8192 configuration (the 1.081 record's model and optimizer, the 1.0611
    # record's SmearGate and document-masked attention), on the SP8192 data paths, exported as
    # measured to fit: GPTQ + SDClip k=14 int6 matrices, int8 embedding k=20.
    expected = dict(num_layers=11, model_dim=512, num_heads=8, num_kv_heads=4, mlp_mult=4.0, mlp_act="leaky_relu2",
                    train_seq_len=2048, train_batch_tokens=786432, vocab_size=8192, bigram_vocab_size=0, smear_gate="additive", attn_doc_mask=True,
                    xsa_last_n=11, qk_gain_init=5.0, rope_dims=16, ln_scale=True, num_loops=2, loop_start=3, loop_end=5,
                    enable_looping_at=0.35, parallel_start_layer=7, skip_gates_enabled=True, sparse_attn_gate_enabled=True,
                    muon_row_normalize=True, muon_wd=0.095, adam_wd=0.02, embed_wd=0.085, matrix_lr=0.022, scalar_lr=0.02,
                    tied_embed_lr=0.03, muon_momentum=0.97, muon_momentum_warmup_start=0.92, muon_momentum_warmup_steps=1500,
                    ema_enabled=True, ema_decay=0.9965, swa_enabled=False, qat_mode="off", warmdown_frac=0.72, warmdown_iters=0,
                    iterations=20000, eval_stride=64, grad_clip_norm=0.3, ortho_init=True, max_wallclock_seconds=600.0,
                    quant_method="gptq", quant_clip="sdclip", quant_bits_attn=6, quant_bits_mlp=6, quant_bits_embed=8, attn_clip_sigmas=14.0, mlp_clip_sigmas=14.0, embed_clip_sigmas=20.0,
                    train_loader="shuffled", data_path="./data/datasets/fineweb10B_sp8192", tokenizer_path="./data/tokenizers/fineweb_8192_bpe.model")
    assert {k: getattr(cfg, k) for k in expected} == expected


def test_env_values_are_typed(tg):
    cfg = tg.Config.from_env({"NUM_LAYERS": "11", "MLP_MULT": "3.0", "TIE_EMBEDDINGS": "0", "RUN_ID": "x"})
    assert cfg.num_layers == 11 and cfg.mlp_mult == 3.0 and cfg.tie_embeddings is False and cfg.run_id == "x"


@pytest.mark.parametrize("env, pattern", [
    ({"NUM_LAYERS": "ten"}, r"NUM_LAYERS='ten': expected int"),
    ({"NUM_LAYERS": "0"}, r"NUM_LAYERS=0: must be >= 1"),
    ({"MATRIX_LR": "-1"}, r"MATRIX_LR=-1.0: must be >= 0"),
    ({"MATRIX_LR": "nan"}, r"MATRIX_LR=nan: must be finite"),
    ({"MUON_MOMENTUM": "1.5"}, r"MUON_MOMENTUM=1.5: must be < 1"),
    ({"TIE_EMBEDDINGS": "yes"}, r"TIE_EMBEDDINGS='yes': expected 0 or 1"),
    ({"COMPILE": "maybe"}, r"COMPILE='maybe': must be one of auto, 0, 1"),
    ({"NUM_HEADS": "3", "ROPE_DIMS": "0"}, r"MODEL_DIM=512 must be divisible by NUM_HEADS=3"),
    ({"NUM_KV_HEADS": "3"}, r"NUM_HEADS=8 must be divisible by NUM_KV_HEADS=3"),
    ({"TRAIN_BATCH_TOKENS": "1000"}, r"TRAIN_BATCH_TOKENS=1000 must be a multiple of 8\*TRAIN_SEQ_LEN"),
    ({"VAL_MAX_TOKENS": "10"}, r"VAL_MAX_TOKENS=10 must exceed TRAIN_SEQ_LEN"),
    ({"MUON_MOMENTUN": "0.9"}, r"unknown environment variable MUON_MOMENTUN \(did you mean MUON_MOMENTUM\?\)"),
    ({"QAT_ENABLE": "1"}, r"unknown environment variable QAT_ENABLE"),
    ({"GLOBAL_TTT_LRR": "1"}, r"unknown environment variable GLOBAL_TTT_LRR \(did you mean GLOBAL_TTT_LR\?\)"),
    ({"PHASED_TTT_NUM_PHASE": "2"}, r"unknown environment variable PHASED_TTT_NUM_PHASE \(did you mean PHASED_TTT_NUM_PHASES"),
    ({"SMEAR_GATE": "on"}, r"SMEAR_GATE='on': must be one of off, blend, additive"),
    ({"MLP_ACT": "gelu"}, r"MLP_ACT='gelu': must be one of relu2, leaky_relu2"),
    ({"QUANT_BITS_MLP": "3"}, r"QUANT_BITS_MLP=3: must be one of 4, 5, 6, 7, 8, 16"),
    ({"ROPE_DIMS": "15"}, r"ROPE_DIMS=15 must be even"),
    ({"ROPE_DIMS": "128"}, r"ROPE_DIMS=128 must be even and at most the head dim 64"),
    ({"XSA_LAST_N": "12"}, r"XSA_LAST_N=12 exceeds NUM_LAYERS=11"),
    ({"SWA_ENABLED": "1"}, r"EMA_ENABLED=1 and SWA_ENABLED=1 are exclusive"),
    ({"EMA_RESET_ON_QAT": "1", "QAT_MODE": "always"}, r"EMA_RESET_ON_QAT=1 needs EMA_ENABLED=1 and QAT_MODE=late"),
    ({"BIGRAM_VOCAB_SIZE": "1"}, r"BIGRAM_VOCAB_SIZE=1 leaves no hash bucket"),
    ({"QUANT_BITS_HEAD": "6"}, r"QUANT_BITS_HEAD applies only with TIE_EMBEDDINGS=0"),
    ({"EVAL_STRIDE": "4096"}, r"EVAL_STRIDE=4096 exceeds the window length 2048"),
    ({"TTT_TARGETS": "q,w"}, r"TTT_TARGETS='q,w': unknown target 'w'"),
    ({"TTT_CHUNK_SIZE": "4096"}, r"TTT_CHUNK_SIZE=4096 exceeds TTT_EVAL_SEQ_LEN=2048"),
    ({"PRUNE_FRAC": "0.9"}, r"PRUNE_FRAC=0.9: must be <= 0.5"),
])
def test_invalid_values_name_the_variable(tg, env, pattern):
    with pytest.raises(ValueError, match=pattern):
        tg.Config.from_env(env)


def test_unrelated_variables_are_ignored(tg):
    tg.Config.from_env({"HOME": "/root", "OMP_NUM_THREADS": "1", "MASTER_ADDR": "x", "RANK": "0"})


def test_help_lists_every_variable(tg):
    out = subprocess.run([sys.executable, str(REPO / "train_gpt.py"), "--help"], capture_output=True, text=True, check=True).stdout
    import dataclasses
    for f in dataclasses.fields(tg.Config):
        assert re.search(rf"^\s+{f.name.upper()}\s+\S", out, re.M), f.name.upper()
    assert "torchrun" in out


def test_positional_arguments_are_rejected():
    proc = subprocess.run([sys.executable, str(REPO / "train_gpt.py"), "NUM_LAYERS=3"], capture_output=True, text=True)
    assert proc.returncode != 0 and "environment variables" in proc.stderr


def test_every_config_field_is_used(tg):
    """A knob that no code reads silently does nothing: each field must be read somewhere."""
    import dataclasses
    src = (REPO / "train_gpt.py").read_text()
    for f in dataclasses.fields(tg.Config):  # attribute reads (`cfg.x`), not the field definitions
        assert re.search(rf"\.{f.name}\b", src), f"Config.{f.name} is never read"


def test_toc_matches_banners():
    src = (REPO / "train_gpt.py").read_text()
    banners = re.findall(r"^# ===== (\d+)\. ([A-Z+]+) =====$", src, re.M)
    doc = src.split('"""')[1]
    toc = re.findall(r"(\d+) ([A-Z+]+)", doc.split("Sections")[1])
    assert banners == toc and len(banners) >= 10


def test_compile_auto_follows_the_device_and_the_cpu_compiler(tg, monkeypatch, tmp_path):
    """COMPILE=auto compiles on CUDA, and on CPU only when inductor has a C++ compiler; the log
    line says which and why. 0 and 1 are obeyed whatever the machine."""
    import torch
    cpu, cuda = tg.Dist(0, 1, 0, torch.device("cpu")), tg.Dist(0, 1, 0, torch.device("cuda"))
    auto, off, on = (tg.Config.from_env({"COMPILE": v}) for v in ("auto", "0", "1"))
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no compiler on PATH
    assert tg.cpu_compiler() is None
    assert not tg.use_compile(auto, cpu) and tg.use_compile(auto, cuda) and tg.use_compile(on, cpu)
    assert tg.compile_note(auto, cpu).startswith("compile:0 (auto: CPU without a C++ compiler")
    fake = tmp_path / "g++"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    assert tg.cpu_compiler() == "g++" and tg.use_compile(auto, cpu)
    assert tg.compile_note(auto, cpu) == "compile:1 (auto: CPU, inductor kernels built with g++)"
    assert not tg.use_compile(off, cuda) and tg.compile_note(off, cpu) == "compile:0 (COMPILE=0)"
