"""Parameter Golf trainer: one file that trains, exports, reloads and scores a small GPT.

Launch (8xH100):  torchrun --standalone --nproc_per_node=8 train_gpt.py
Single process:   python train_gpt.py            (CPU or one GPU; RANK unset)
Every knob is an environment variable; `python train_gpt.py --help` lists them all with
their defaults and meanings. The run writes logs/<RUN_ID>.txt (the log is the record: it
holds this source, versions, the resolved config and one key:value line per event).

The defaults are the 04-09-class SP8192 configuration: the model and optimizer settings published
with the 1.081 record (11 layers, MLP 4x LeakyReLU^2, XSA everywhere, blocks 3-5 looped twice from 35% of
training, parallel residuals from layer 7, gated skips, MuonEq-R) with the 1.0611 record's sparse
attention gate, input-dependent SmearGate and document-masked attention, 35,945,671 parameters,
exported by GPTQ + SDClip (int6/int8) to fit the cap; not a record's settings. configs/record_0427_1.0611.env is
the 1.0611 run (bench/parity.py checks it against that record's script); the 1.1248 and 1.0856 presets set
those records' published variables (their scripts were not compared).

Sections (grep -n '^# =====' prints this table of contents):
  1 CONFIG  2 DISTRIBUTED+LOGGING  3 DATA  4 BPB  5 MODEL  6 MUON  7 QUANT+EXPORT  8 EVAL
  9 TRAIN  10 MAIN
"""
from __future__ import annotations

import copy
import gc
import dataclasses
import fnmatch
import glob
import hashlib
import ast
import bisect
import builtins
import io
import tokenize
import itertools
import json
import keyword
import math
import os
import platform
import re
import signal
import string
import struct
import subprocess
import sys
import time
import traceback
import uuid
from collections import deque
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import sentencepiece as spm
import torch
import torch.distributed as dist
import torch.nn.functional as F
import lzma
import shutil
import zlib  # crc32 of every artifact frame
import zstandard  # required: the artifact header is zstd-22; there is deliberately no zlib fallback
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel as DDP

ARTIFACT_CAP_BYTES = 16_000_000  # decimal bytes: code + compressed model (challenge rule)
MAX_PARAMS = 1e9  # config check: far past anything the artifact can hold, well before an allocator failure


# ===== 1. CONFIG =====
# One typed dataclass; each field is an environment variable named like the field in upper
# case. Field metadata carries the help text and the validation rule, so --help, parsing
# and validation all read the same table.

def knob(default, help: str, *, lo=None, hi=None, lt=None, choices=None, group: str = "misc"):
    """lo <= value <= hi; lt: value < lt, for bounds where the limit itself is degenerate
    (a decay or momentum of 1.0 never moves)."""
    return field(default=default, metadata=dict(help=help, lo=lo, hi=hi, lt=lt, choices=choices, group=group))


BITS = (4, 5, 6, 7, 8, 16)  # 16 = stored as fp16, not quantized


@dataclass(frozen=True)
class Config:
    # --- data and run ---
    data_path: str = knob("./data/datasets/fineweb10B_sp8192", "directory holding the token shards", group="data")
    train_glob: str = knob("fineweb_train_*.bin", "glob (relative to DATA_PATH) of training shards", group="data")
    val_glob: str = knob("fineweb_val_*.bin", "glob (relative to DATA_PATH) of validation shards", group="data")
    tokenizer_path: str = knob("./data/tokenizers/fineweb_8192_bpe.model", "SentencePiece model used for the BPB byte count", group="data")
    vocab_size: int = knob(8192, "vocabulary size; must equal the tokenizer's", lo=2, group="data")
    run_id: str = knob("", "name of the run's log and outputs (default: a fresh uuid)", group="data")
    out_dir: str = knob("logs", "directory for the log, raw weights and artifact (rank 0 writes)", group="data")
    seed: int = knob(1337, "random seed (init, and the data order of TRAIN_LOADER=shuffled, the default)", lo=0, hi=2**32 - 1, group="data")
    train_loader: str = knob("shuffled", "training data order: stream (the shards in order, contiguous spans), shuffled "
                             "(seq-len windows at a random phase per shard, in a random order over all shards, from SEED) or "
                             "docpack (the VarLen records: stream spans as one flat row per micro-batch, attention inside "
                             "documents cut every TRAIN_SEQ_LEN tokens; needs ATTN_DOC_MASK=1)",
                             choices=("stream", "shuffled", "docpack"), group="data")
    overwrite_run: bool = knob(False, "start even if RUN_ID's files exist in OUT_DIR, deleting them first (default: refuse)", group="data")
    # --- BPB bytes: byte sidecar (CaseOps) ---
    caseops_enabled: bool = knob(False, "val shards are CaseOps (lossless-caps) tokens: BPB bytes must come from the byte sidecar, which is then required", group="data")
    val_bytes_glob: str = knob("", "glob (relative to DATA_PATH) of the val byte sidecar, one uint16 byte count per val token; used whenever it matches (default: VAL_GLOB with _val_ -> _val_bytes_)", group="data")
    # --- schedule ---
    iterations: int = knob(20000, "maximum number of training steps", lo=0, group="schedule")
    max_wallclock_seconds: float = knob(600.0, "training-time cap in seconds (0 = no cap, iteration-based warmdown)", lo=0.0, group="schedule")
    warmdown_iters: int = knob(0, "length of the final linear LR decay, in steps (converted to time when capped)", lo=0, group="schedule")
    warmdown_frac: float = knob(0.72, "length of the final linear LR decay as a fraction of training (time when capped, else steps); "
                                "0 = use WARMDOWN_ITERS; setting both is an error", lo=0.0, hi=1.0, group="schedule")
    warmup_steps: int = knob(20, "compile-priming steps whose weights/optimizer/data state are then restored", lo=0, group="schedule")
    train_batch_tokens: int = knob(786432, "global tokens per optimizer step (identical for any world size dividing 8)", lo=1, group="schedule")
    train_seq_len: int = knob(2048, "training sequence length (with TRAIN_SEQ_SCHEDULE: the largest one)", lo=2, group="schedule")
    train_seq_schedule: str = knob("", "context growth, 'L@p,...': train at length L until training progress p, stages in order of p "
                                   "(the last runs to the end), e.g. 1024@0.1,2048@0.7,3072@1.0; every shape is compiled in the "
                                   "warmup; empty = TRAIN_SEQ_LEN throughout", group="schedule")
    train_seq_schedule_mode: str = knob("wallclock", "progress of TRAIN_SEQ_SCHEDULE: wallclock (training time over the cap; steps "
                                        "over ITERATIONS without a cap) or step (steps over ITERATIONS)", choices=("wallclock", "step"), group="schedule")
    seq_change_warmup_steps: int = knob(0, "after a switch of the training length, the LR scale ramps from 1/N to 1 over N steps", lo=0, group="schedule")
    train_log_every: int = knob(200, "print a step line every N steps (0 = never)", lo=0, group="schedule")
    val_loss_every: int = knob(0, "validate every N steps (0 = only at the end)", lo=0, group="schedule")
    val_batch_size: int = knob(524288, "validation tokens per 8 forward batches, as in the official scripts: one forward holds VAL_BATCH_SIZE/8 tokens whatever the world size", lo=1, group="schedule")
    val_max_tokens: int = knob(0, "score only the first N validation tokens (0 = all; quick local runs only)", lo=0, group="schedule")
    # --- model ---
    num_layers: int = knob(11, "transformer blocks", lo=1, group="model")
    model_dim: int = knob(512, "residual width", lo=8, group="model")
    num_heads: int = knob(8, "query heads", lo=1, group="model")
    num_kv_heads: int = knob(4, "key/value heads (GQA); must divide NUM_HEADS", lo=1, group="model")
    mlp_mult: float = knob(4.0, "MLP hidden width as a multiple of MODEL_DIM", lo=0.0, group="model")
    mlp_act: str = knob("leaky_relu2", "MLP activation: relu2 = relu(x)^2, leaky_relu2 = leaky_relu(x, LEAKY_RELU_SQ_SLOPE)^2", choices=("relu2", "leaky_relu2"), group="model")
    leaky_relu_sq_slope: float = knob(0.5, "negative slope of MLP_ACT=leaky_relu2 (a later record: 0.3)", lo=0.0, group="model")
    tie_embeddings: bool = knob(True, "share the token embedding with the output head", group="model")
    tied_embed_init_std: float = knob(0.005, "std of the token-embedding init", lo=0.0, group="model")
    embed_init: str = knob("normal", "token-embedding init: normal, or spectral (power-law singular values)", choices=("normal", "spectral"), group="model")
    ortho_init: bool = knob(True, "orthogonal init of non-zero-init matrices; the bigram projection also scaled by 1/sqrt(2L)", group="model")
    resid_mix_init: str = knob("identity", "resid_mix init: identity (x only), or phase (early layers lean on x0)", choices=("identity", "phase"), group="model")
    rope_base: float = knob(10000.0, "RoPE base frequency", lo=1.0, group="model")
    rope_dims: int = knob(16, "rotate only the first R dims of each head (0 = all)", lo=0, group="model")
    ln_scale: bool = knob(True, "scale block i's pre-norm outputs by 1/sqrt(i+1)", group="model")
    logit_softcap: float = knob(30.0, "logits = C*tanh(z/C) (0 disables)", lo=0.0, group="model")
    asym_logit_rescale: bool = knob(False, "separate caps for positive and negative logits, both starting at LOGIT_SOFTCAP: frozen in "
                                    "training, trained only by TTT's global phases (2 stored scalars)", group="model")
    fused_ce: bool = knob(True, "training loss without fp32 logits of the whole micro-batch: a Triton softcap+cross-entropy kernel "
                          "over bf16 logits on CUDA, row chunks recomputed in backward elsewhere (0 = the plain fp32 path)", group="model")
    qk_gain_init: float = knob(5.0, "initial per-head query gain after QK RMS-norm", group="model")
    xsa_last_n: int = knob(11, "exclusive self-attention on the last N blocks (0 = off)", lo=0, group="model")
    smear_gate: str = knob("additive", "previous-token smear: off, blend (per-dim gate after the norm), additive (input-dependent, before the norm)", choices=("off", "blend", "additive"), group="model")
    bigram_vocab_size: int = knob(0, "BigramHash buckets, the last reserved for 'no previous token' (0 = off)", lo=0, group="model")
    bigram_dim: int = knob(128, "BigramHash table width (projected to MODEL_DIM)", lo=1, group="model")
    backout: bool = knob(False, "subtract a learned multiple of the middle block's output before the final norm", group="model")
    backout_init: float = knob(0.2, "initial backout coefficient", group="model")
    # --- depth recurrence, parallel residuals, gates (the 1.08-class records) ---
    num_loops: int = knob(2, "depth recurrence: blocks LOOP_START..LOOP_END run this many extra times once looping is on (0 = off)", lo=0, group="model")
    loop_start: int = knob(3, "first block of the looped segment", lo=0, group="model")
    loop_end: int = knob(5, "last block of the looped segment (inclusive)", lo=0, group="model")
    enable_looping_at: float = knob(0.35, "training progress (time or steps) from which the loop runs; eval and TTT always loop", lo=0.0, hi=1.0, group="model")
    skip_gates_enabled: bool = knob(True, "U-Net skips merged by a learned sigmoid gate: x = lerp(w*skip, x, sigmoid(g)), g zero-init", group="model")
    parallel_start_layer: int = knob(7, "two-lane parallel residuals from the first decoder block whose physical index is >= this (0 = off)", lo=0, group="model")
    parallel_final_lane: str = knob("mean", "what leaves the two lanes: mean of both, the attn lane or the mlp lane", choices=("mean", "attn", "mlp"), group="model")
    attn_out_gate_enabled: bool = knob(False, "per-head attention output gate 2*sigmoid(W u[:GATE_WINDOW]), W zero-init (identity at init)", group="model")
    attn_out_gate_src: str = knob("proj", "input u of the output gate: proj (the attention input) or q (the raw query projection)", choices=("proj", "q"), group="model")
    sparse_attn_gate_enabled: bool = knob(True, "per-head sparse attention gate sigmoid(SCALE * W u[:GATE_WINDOW]); W exported int8 per row", group="model")
    sparse_attn_gate_init_std: float = knob(0.0, "init std of the sparse gate weight (0 = zeros: every gate starts at 0.5)", lo=0.0, group="model")
    sparse_attn_gate_scale: float = knob(1.0, "logit scale of the sparse attention gate", group="model")
    gate_window: int = knob(12, "leading dims of the gate input the attention gates read", lo=1, group="model")
    rope_train_seq_len: int = knob(0, "NTK RoPE rescale: a forward longer than this uses base*(T/this)^(R/(R-2)), R the rotary dims "
                                   "(the 1.1248 record: 1024, so base ~22,082 at 2048); 0 = off", lo=0, group="model")
    attn_doc_mask: bool = knob(True, "document-masked attention: each token attends only to earlier tokens of its own document "
                               "(documents start at BOS; SDPA with a block-diagonal causal mask, FA3 varlen on fa3)", group="model")
    attn_backend: str = knob("auto", "attention kernel: fa3 (flash_attn_interface; an error if it does not import), flex "
                             "(torch's FlexAttention: document masks skip empty blocks; CUDA only), sdpa, or auto (on CUDA: fa3 "
                             "when it imports, else flex for document-masked attention, else sdpa; sdpa on CPU); the one used is logged",
                             choices=("auto", "fa3", "flex", "sdpa"), group="model")
    # --- optimizer ---
    matrix_lr: float = knob(0.022, "Muon LR for block matrices", lo=0.0, group="optim")
    scalar_lr: float = knob(0.02, "AdamW LR for vectors and scalar controls", lo=0.0, group="optim")
    tied_embed_lr: float = knob(0.03, "AdamW LR for the tied embedding and the bigram table", lo=0.0, group="optim")
    embed_lr: float = knob(0.6, "AdamW LR for the untied input embedding and the bigram table", lo=0.0, group="optim")
    head_lr: float = knob(0.008, "AdamW LR for the untied output head", lo=0.0, group="optim")
    muon_momentum: float = knob(0.97, "Muon momentum after warmup", lo=0.0, lt=1.0, group="optim")
    muon_momentum_warmup_start: float = knob(0.92, "Muon momentum at step 0", lo=0.0, lt=1.0, group="optim")
    muon_momentum_warmup_steps: int = knob(1500, "steps of linear momentum warmup", lo=0, group="optim")
    muon_backend_steps: int = knob(5, "Newton-Schulz iterations", lo=1, group="optim")
    muon_wd: float = knob(0.095, "Muon decoupled weight decay (W *= 1 - lr*wd)", lo=0.0, group="optim")
    adam_wd: float = knob(0.02, "AdamW weight decay on embeddings and scalars", lo=0.0, group="optim")
    beta1: float = knob(0.9, "AdamW beta1", lo=0.0, lt=1.0, group="optim")
    beta2: float = knob(0.95, "AdamW beta2", lo=0.0, lt=1.0, group="optim")
    adam_eps: float = knob(1e-8, "AdamW epsilon", lo=0.0, group="optim")
    grad_clip_norm: float = knob(0.3, "grad-norm clip (0 = off) of the gradient named by GRAD_CLIP_SCOPE", lo=0.0, group="optim")
    grad_clip_scope: str = knob("global", "what GRAD_CLIP_NORM bounds: global (the step's averaged gradient: the same for any world "
                                "size) or rank (each rank's own gradient before the all-reduce, as the 1.08-class records clip)",
                                choices=("global", "rank"), group="optim")
    embed_dtype: str = knob("fp32", "storage of the token embedding in training: fp32 (a master copy, like every parameter) or "
                            "bf16 (the table, its AdamW state and updates in bf16, as the 1.08-class records keep it)",
                            choices=("fp32", "bf16"), group="optim")
    # --- optimizer: the 1.08-class records' additions ---
    muon_row_normalize: bool = knob(True, "MuonEq-R: scale each row of the Nesterov update to unit norm before Newton-Schulz", group="optim")
    muon_ns_coeffs: str = knob("quintic", "Newton-Schulz coefficients: quintic (one fixed tuple every step) or polar_express (a tuple per step, at most 5 steps)", choices=("quintic", "polar_express"), group="optim")
    embed_wd: float = knob(0.085, "AdamW weight decay of the token embedding (ADAM_WD covers the other AdamW groups)", lo=0.0, group="optim")
    min_lr: float = knob(0.0, "floor of the LR multiplier during the warmdown (the records' MIN_LR)", lo=0.0, hi=1.0, group="optim")
    # --- weight averaging and QAT ---
    ema_enabled: bool = knob(True, "keep an fp32 EMA of the weights; it is what gets exported", group="average")
    ema_decay: float = knob(0.9965, "EMA decay per update (bias-corrected: a short run does not export its init)", lo=0.0, lt=1.0, group="average")
    ema_every: int = knob(1, "update the EMA every N steps", lo=1, group="average")
    ema_reset_on_qat: bool = knob(False, "restart the EMA from the live weights when late QAT fires", group="average")
    swa_enabled: bool = knob(False, "average snapshots once the LR scale falls below SWA_START_FRAC (exclusive with EMA)", group="average")
    swa_start_frac: float = knob(0.4, "SWA collects while lr_scale < this (a fraction of the warmdown)", lo=0.0, hi=1.0, group="average")
    swa_every: int = knob(50, "SWA snapshot every N steps", lo=1, group="average")
    qat_mode: str = knob("off", "fake-quant training: off, always, or late (from QAT_START_FRAC of training on)", choices=("off", "always", "late"), group="average")
    qat_start_frac: float = knob(0.9, "late QAT fires when training progress (the larger of time and steps) reaches this fraction", lo=0.0, lt=1.0, group="average")
    late_qat_threshold: float = knob(0.0, "late QAT fires instead when the LR scale drops below this (the 1.1248 record: 0.1); 0 = use QAT_START_FRAC",
                                     lo=0.0, hi=1.0, group="average")
    # --- quantization and export ---
    quant_bits_attn: int = knob(6, "bits of attention matrices (16 = fp16)", choices=BITS, group="quant")
    quant_bits_mlp: int = knob(6, "bits of MLP matrices (16 = fp16)", choices=BITS, group="quant")
    quant_bits_proj: int = knob(6, "bits of the BigramHash projection (16 = fp16)", choices=BITS, group="quant")
    quant_bits_bigram: int = knob(6, "bits of the BigramHash table (16 = fp16)", choices=BITS, group="quant")
    quant_bits_embed: int = knob(8, "bits of the token embedding (16 = fp16)", choices=BITS, group="quant")
    quant_bits_head: int = knob(8, "bits of the untied output head (16 = fp16)", choices=BITS, group="quant")
    quant_clip: str = knob("sdclip", "per-row clip: amax, search (GPTQ-lite: best of a few clip ratios per row), or sdclip "
                           "(k*std(row), k from the *_CLIP_SIGMAS knobs)", choices=("amax", "search", "sdclip"), group="quant")
    prune_frac: float = knob(0.0, "zero the smallest |w| fraction of every quantized matrix before export", lo=0.0, hi=0.5, group="quant")
    export_packing: str = knob("auto", "code storage: int8 containers, bitpack, or auto (the smaller after zstd)", choices=("auto", "int8", "bitpack"), group="quant")
    # --- GPTQ, SDClip, LQER (the records' names and meanings) ---
    quant_method: str = knob("gptq", "how codes are chosen: rtn (round each weight to the nearest level) or gptq (full-Hessian GPTQ on "
                             "calibration activations; tensors that are only looked up, like the bigram table, stay rtn)", choices=("rtn", "gptq"), group="quant")
    gptq_calibration_batches: int = knob(16, "training micro-batches (TRAIN_BATCH_TOKENS/8 tokens each, split over the ranks like a "
                                         "step's) whose activations build the GPTQ Hessians; a multiple of the world size", lo=1, group="quant")
    gptq_reserve_seconds: float = knob(8.0, "with QUANT_METHOD=gptq and a wallclock cap, training stops this many seconds early so "
                                       "calibration (which reads training data) ends inside the cap", lo=0.0, group="quant")
    gptq_damp: float = knob(0.01, "GPTQ damping added to diag(H), as a fraction of its mean", lo=0.0, group="quant")
    gptq_block_size: int = knob(128, "GPTQ column-block width (error propagation inside a block, one lazy update after it)", lo=1, group="quant")
    gptq_act_order: bool = knob(True, "GPTQ quantizes columns in order of decreasing diag(H)", group="quant")
    gptq_calibration_doc_mask: bool = knob(True, "the calibration forward masks documents as ATTN_DOC_MASK does; 0 = plain causal "
                                           "attention over each calibration row, as the 1.08-class records calibrate", group="quant")
    awq_lite_enabled: bool = knob(False, "AWQ-lite (GPTQ only): the AWQ_LITE_GROUP_TOP_K most salient column groups of all GPTQ matrices "
                                  "(saliency of a column: activation RMS x mean |w|, summed over AWQ_LITE_GROUP_SIZE consecutive "
                                  "columns) are rounded at AWQ_LITE_BITS on their own row scales inside the solve", group="quant")
    awq_lite_bits: int = knob(8, "bits of AWQ-lite's protected groups", lo=3, hi=8, group="quant")
    awq_lite_group_top_k: int = knob(1, "AWQ-lite's protected groups, over the whole model", lo=1, group="quant")
    awq_lite_group_size: int = knob(64, "columns per AWQ-lite group", lo=1, group="quant")
    matrix_bits: int = knob(0, "bits of the attention and MLP matrices: overrides QUANT_BITS_ATTN and QUANT_BITS_MLP when non-zero", choices=(0,) + BITS, group="quant")
    embed_bits: int = knob(0, "bits of the token embedding: overrides QUANT_BITS_EMBED when non-zero", choices=(0,) + BITS, group="quant")
    matrix_clip_sigmas: float = knob(12.85, "SDClip k (clip = k*std(row)) of matrices without their own k (bigram projection and table), "
                                     "and of attn/mlp when ATTN_/MLP_CLIP_SIGMAS is 0", lo=0.0, group="quant")
    attn_clip_sigmas: float = knob(14.0, "SDClip k of attention matrices (0 = MATRIX_CLIP_SIGMAS)", lo=0.0, group="quant")
    mlp_clip_sigmas: float = knob(14.0, "SDClip k of MLP matrices (0 = MATRIX_CLIP_SIGMAS)", lo=0.0, group="quant")
    embed_clip_sigmas: float = knob(20.0, "SDClip k of the token embedding and the untied head", lo=0.0, group="quant")
    hessian_clip_lambda: float = knob(0.0, "Hessian-aware SDClip (GPTQ only): row clip scaled by 1 + lambda*(row importance - 1), 0 = off", lo=0.0, group="quant")
    lqer_enabled: bool = knob(False, "LQER: store a low-rank correction of W - W_quant for the LQER_TOP_K tensors with the largest error", group="quant")
    lqer_rank: int = knob(4, "rank of the LQER correction", lo=1, group="quant")
    lqer_top_k: int = knob(3, "number of tensors (largest ||W - W_quant||_F) that get a correction", lo=1, group="quant")
    lqer_asym_group: int = knob(64, "group size of the LQER B factor's scales", lo=1, group="quant")
    lqer_factor_bits: int = knob(4, "bits of the LQER B factor (the A factor is int2, one scale per tensor)", lo=2, hi=8, group="quant")
    export_compressor: str = knob("brotli", "compressor of the artifact's frames: brotli (quality 11, needs the brotli package), zstd (level 22) "
                                  "or lzma (preset 9); the header is always zstd; pergroup: each quantized role's frame (rows L1-sorted, codes "
                                  "column-major) through the lrzip binary's ZPAQ (-z -L 9), the rest brotli", choices=("brotli", "zstd", "lzma", "pergroup"), group="quant")
    # --- evaluation ---
    eval_stride: int = knob(64, "sliding-window stride for the final score (0 = non-overlapping windows)", lo=0, group="eval")
    eval_seq_len: int = knob(0, "sliding-window length (0 = TRAIN_SEQ_LEN)", lo=0, group="eval")
    eval_batch_seqs: int = knob(32, "windows per forward batch (per rank) in the sliding eval", lo=1, group="eval")
    eval_budget_seconds: float = knob(600.0, "the eval-time budget that projected and measured eval times are checked against", lo=0.0, group="eval")
    ttt_enabled: bool = knob(False, "score-first test-time training (per-document LoRA, optional global phases) as the final score", group="eval")
    ttt_lora_rank: int = knob(80, "LoRA rank of the per-document TTT adapters", lo=1, group="eval")
    ttt_lora_lr: float = knob(1e-4, "AdamW LR of the TTT adapters", lo=0.0, group="eval")
    ttt_targets: str = knob("q,k,v,o,mlp,head", "comma list of adapters: q, k, v, up, down, head (LoRA on that weight); o, mlp "
                             "(the record's: from the attention / MLP input, added to its output)", group="eval")
    ttt_chunk_size: int = knob(48, "tokens scored per TTT chunk (an update follows each chunk but a document's last)", lo=1, group="eval")
    ttt_eval_seq_len: int = knob(2048, "context window (in-document) of TTT scoring", lo=2, group="eval")
    ttt_grad_steps: int = knob(1, "adapter updates per scored chunk", lo=1, group="eval")
    # --- per-document TTT (the 1.0611 record's names and settings) ---
    ttt_batch_size: int = knob(64, "documents adapted at once (one adapter each), batched by length", lo=1, group="eval")
    ttt_lora_alpha: float = knob(144.0, "adapter output scaled by TTT_LORA_ALPHA/TTT_LORA_RANK (0 = unscaled B*A)", lo=0.0, group="eval")
    ttt_lora_per_slot: bool = knob(True, "with depth recurrence, one adapter per virtual layer slot (the 1.0611 record: 17), "
                                   "not one per physical block shared by its passes", group="eval")
    ttt_warm_start_a: bool = knob(True, "a new batch re-zeroes only B: each adapter slot keeps its learned A (within a phase)", group="eval")
    ttt_beta1: float = knob(0.0, "AdamW beta1 of the TTT adapters", lo=0.0, hi=1.0, group="eval")
    ttt_beta2: float = knob(0.99, "AdamW beta2 of the TTT adapters", lo=0.0, hi=1.0, group="eval")
    ttt_weight_decay: float = knob(0.5, "AdamW decoupled weight decay of the TTT adapters", lo=0.0, group="eval")
    # --- token n-gram tilt (the 1.0565 record's names; token channel only) ---
    ngram_tilt_enabled: bool = knob(False, "tilt the final score (sliding and TTT) toward a causal token n-gram hint; "
                                    "its precompute runs inside the eval clock", group="eval")
    token_order: int = knob(16, "n-gram order of the tilt: its hint reads the last TOKEN_ORDER-1 tokens", lo=1, hi=33, group="eval")
    token_threshold: float = knob(0.8, "a hint fires when its share of its context's past occurrences is >= this", lo=0.0, hi=1.0, group="eval")
    token_boost: float = knob(2.625, "logit boost of a fired hint (the softmax then renormalises)", lo=0.0, group="eval")
    ttt_with_sliding: bool = knob(False, "with TTT_ENABLED=1 also run the sliding-window eval (a diagnostic whose time counts against the budget)", group="eval")
    # --- phased TTT: global SGD on the base weights over already-scored documents ---
    phased_ttt_num_phases: int = knob(3, "global-SGD phases over the first PHASED_TTT_PREFIX_DOCS documents (0 = per-document LoRA only)", lo=0, group="eval")
    phased_ttt_prefix_docs: int = knob(2500, "documents (longest first, the record's order) scored before the last phase", lo=1, group="eval")
    global_ttt_lr: float = knob(1e-3, "SGD LR of a global phase (a cosine over its chunks)", lo=0.0, group="eval")
    global_ttt_momentum: float = knob(0.9, "SGD momentum of a global phase (restarts every phase)", lo=0.0, hi=1.0, group="eval")
    global_ttt_warmup_chunks: int = knob(0, "first chunks of a phase whose LR rises linearly from GLOBAL_TTT_WARMUP_START_LR "
                                         "to GLOBAL_TTT_LR before the cosine (0 = no warmup)", lo=0, group="eval")
    global_ttt_warmup_start_lr: float = knob(0.0, "LR of a phase's first global-SGD step when GLOBAL_TTT_WARMUP_CHUNKS > 0",
                                             lo=0.0, group="eval")
    global_ttt_chunk_tokens: int = knob(32768, "tokens per global-SGD chunk, summed over ranks (a phase's last chunk is not trained)", lo=1, group="eval")
    global_ttt_batch_seqs: int = knob(32, "most TRAIN_SEQ_LEN sequences a rank trains per global-SGD step (more per chunk: more steps)", lo=1, group="eval")
    ttt_phase_extra_batches: int = knob(-1, "batches scored after a phase's documents are and before it runs (-1 = WORLD_SIZE-1: "
                                        "the record's, whose other ranks each finish the batch they hold)", lo=-1, group="eval")
    global_ttt_epochs: int = knob(1, "passes of a global phase over its documents", lo=1, group="eval")
    global_ttt_grad_clip: float = knob(1.0, "grad-norm clip of a global step (0 = off)", lo=0.0, group="eval")
    # --- speed path ---
    compile: str = knob("auto", "torch.compile the model: auto (CUDA; CPU too when a C++ compiler for inductor is on PATH), 1, 0",
                        choices=("auto", "0", "1"), group="speed")
    autocast: str = knob("bf16", "precision of forward passes on CPU and CUDA: bf16 autocast (fp32 master weights and optimizer state), or off (fp32 throughout)", choices=("bf16", "off"), group="speed")
    # --- workflow: re-score an artifact, check a configuration ---
    eval_only: str = knob("", "path of an artifact to score with the current eval settings, without training (the model "
                          "settings come from the artifact's header; a model variable set to another value is refused)", group="workflow")
    dry_run: bool = knob(False, "check the configuration and exit in seconds: parameters per role, projected artifact "
                         "bytes, data and tokenizer checks, whether ITERATIONS or the wallclock ends training", group="workflow")
    dry_run_step_ms: float = knob(0.0, "8xH100 step time (ms) for DRY_RUN's step budget (0 = scale the 1.0611 record's "
                                  "published 96/144 ms/step before/after its loop switch by FLOPs per step)", lo=0.0, group="workflow")
    dry_run_memory: bool = knob(False, "DRY_RUN also projects peak GPU memory per rank: traces the compiled training step "
                                "(fake tensors, about a minute on CPU) for the activations it keeps, plus weights, "
                                "gradients and optimizer state", group="workflow")

    TTT_TARGETS = ("q", "k", "v", "o", "mlp", "up", "down", "head")

    @staticmethod
    def env_name(f: dataclasses.Field) -> str:
        return f.name.upper()

    @classmethod
    def from_env(cls, environ: dict | None = None, notes: list[str] | None = None) -> "Config":
        """Parse and validate every knob. All problems are collected and raised together as one
        ConfigError; `notes` receives a line per published-record alias that was applied."""
        environ = dict(os.environ if environ is None else environ)
        fields = {cls.env_name(f): f for f in dataclasses.fields(cls)}
        problems, raw_values = [], {}
        for key in sorted(environ):
            if key in fields:
                raw_values[key] = environ[key]
                continue
            if key in RECORD_FIXED_NAMES:
                bad = record_fixed_problem(key, environ[key])
                if bad:
                    problems.append(bad)
                elif notes is not None:
                    notes.append(f"{key}={environ[key]} accepted: {RECORD_FIXED_NAMES[key]}")
                continue
            kind, target = check_env_name(key, set(fields))
            if kind == "alias":
                if target in environ and environ[target] != environ[key]:
                    problems.append(f"{key}={environ[key]} and {target}={environ[target]} are both set: {key} is "
                                    f"published records' name for {target}; set only {target}")
                else:
                    raw_values[target] = environ[key]
                    if notes is not None:
                        notes.append(f"{key}={environ[key]} read as {target} (published records' name)")
            elif kind == "problem":
                problems.append(target)
        # The warmdown is WARMDOWN_FRAC (the default) or WARMDOWN_ITERS: setting ITERS alone (the
        # March records' command lines) switches the default fraction off; setting both non-zero is an error.
        if "WARMDOWN_ITERS" in raw_values and "WARMDOWN_FRAC" not in raw_values:
            raw_values["WARMDOWN_FRAC"] = "0"
        values = {}
        for name, f in fields.items():
            values[f.name] = f.default
            if name in raw_values:
                try:
                    v = _parse(name, raw_values[name], f.type)
                except ValueError as e:
                    problems.append(str(e))
                    continue
                bad = field_problem(name, v, f.metadata)
                if bad:
                    problems.append(bad)
                else:
                    values[f.name] = v
        # Cross-field rules run on the values that passed their own checks (a rejected value
        # falls back to its default here), so one bad value cannot hide another problem.
        try:
            cls(**values).validate()
        except ConfigError as e:
            problems += e.problems
        except ValueError as e:
            problems.append(str(e))
        if problems:
            raise ConfigError(problems)
        return cls(**values)

    def validate(self) -> None:
        """Raise ConfigError listing every violated bound and cross-field rule."""
        problems = [p for f in dataclasses.fields(self)
                    if (p := field_problem(self.env_name(f), getattr(self, f.name), f.metadata))]
        if problems:  # the rules below assume every field is within its own bounds
            raise ConfigError(problems)
        hd = self.model_dim // self.num_heads
        rules = [
            (self.model_dim % self.num_heads == 0, f"MODEL_DIM={self.model_dim} must be divisible by NUM_HEADS={self.num_heads}"),
            (self.num_heads % self.num_kv_heads == 0, f"NUM_HEADS={self.num_heads} must be divisible by NUM_KV_HEADS={self.num_kv_heads}"),
            (hd % 2 == 0, f"head dim MODEL_DIM/NUM_HEADS={hd} must be even for RoPE"),
            (self.rope_dims % 2 == 0 and self.rope_dims <= hd, f"ROPE_DIMS={self.rope_dims} must be even and at most the head dim {hd}"),
            (not self.train_seq_schedule or max(L for _, L in self.seq_plan) == self.train_seq_len,
             f"TRAIN_SEQ_LEN={self.train_seq_len} must be the largest length of TRAIN_SEQ_SCHEDULE={self.train_seq_schedule} "
             "(evaluation, GPTQ and the model's tables use it)"),
            (not self.train_seq_schedule or not self.packed, "TRAIN_SEQ_SCHEDULE needs rows of one length: not with TRAIN_LOADER=docpack"),
            (not self.train_seq_schedule or all(self.train_batch_tokens % (8 * L) == 0 for _, L in self.seq_plan),
             f"TRAIN_BATCH_TOKENS={self.train_batch_tokens}/8 must be a multiple of every length of TRAIN_SEQ_SCHEDULE={self.train_seq_schedule}"),
            (self.train_batch_tokens % (8 * self.train_seq_len) == 0,
             f"TRAIN_BATCH_TOKENS={self.train_batch_tokens} must be a multiple of 8*TRAIN_SEQ_LEN={8 * self.train_seq_len} "
             "(the global batch is split into 8 equal micro-batches)"),
            (self.mlp_hidden >= 1, f"MLP_MULT={self.mlp_mult}: MLP hidden width would be {self.mlp_hidden}"),
            (self.approx_params <= MAX_PARAMS, f"the model would have about {self.approx_params:.3g} parameters (MODEL_DIM, "
             f"MLP_MULT, NUM_LAYERS, VOCAB_SIZE, BIGRAM_*); the limit is {MAX_PARAMS:.0g}, already "
             f"{MAX_PARAMS / (8 * ARTIFACT_CAP_BYTES):.0f}x what the artifact cap holds at 1 bit per weight"),
            (not self.val_max_tokens or self.val_max_tokens > max(self.train_seq_len, self.window_len),
             f"VAL_MAX_TOKENS={self.val_max_tokens} must exceed TRAIN_SEQ_LEN and EVAL_SEQ_LEN"),
            (not self.asym_logit_rescale or self.logit_softcap > 0, "ASYM_LOGIT_RESCALE=1 rescales the softcap: set LOGIT_SOFTCAP > 0"),
            (self.xsa_last_n <= self.num_layers, f"XSA_LAST_N={self.xsa_last_n} exceeds NUM_LAYERS={self.num_layers}"),
            (self.bigram_vocab_size != 1, "BIGRAM_VOCAB_SIZE=1 leaves no hash bucket besides the reserved one (use 0 to disable)"),
            (not (self.ema_enabled and self.swa_enabled), "EMA_ENABLED=1 and SWA_ENABLED=1 are exclusive: pick one weight average"),
            (not self.ema_reset_on_qat or (self.ema_enabled and self.qat_mode == "late"), "EMA_RESET_ON_QAT=1 needs EMA_ENABLED=1 and QAT_MODE=late"),
            (self.eval_stride <= self.window_len, f"EVAL_STRIDE={self.eval_stride} exceeds the window length {self.window_len}"),
            (not self.ngram_tilt_enabled or self.eval_stride or self.ttt_enabled,
             "NGRAM_TILT_ENABLED=1 tilts the sliding-window or TTT score: set EVAL_STRIDE > 0 or TTT_ENABLED=1"),
            (self.ttt_chunk_size <= self.ttt_eval_seq_len, f"TTT_CHUNK_SIZE={self.ttt_chunk_size} exceeds TTT_EVAL_SEQ_LEN={self.ttt_eval_seq_len}"),
            (self.quant_bits_head == 8 or not self.tie_embeddings, "QUANT_BITS_HEAD applies only with TIE_EMBEDDINGS=0 (tied: QUANT_BITS_EMBED)"),
            (not (self.warmdown_frac > 0 and self.warmdown_iters > 0), "WARMDOWN_FRAC and WARMDOWN_ITERS are exclusive: set one"),
            (not self.num_loops or self.loop_start <= self.loop_end < self.num_layers,
             f"LOOP_START={self.loop_start}..LOOP_END={self.loop_end} must be a block range inside NUM_LAYERS={self.num_layers}"),
            (self.parallel_start_layer < self.num_layers, f"PARALLEL_START_LAYER={self.parallel_start_layer} must be below NUM_LAYERS={self.num_layers} (0 = off)"),
            (not (self.attn_out_gate_enabled and self.sparse_attn_gate_enabled),
             "ATTN_OUT_GATE_ENABLED=1 and SPARSE_ATTN_GATE_ENABLED=1 are exclusive: pick one attention gate"),
            (self.gate_window <= min(self.model_dim, hd), f"GATE_WINDOW={self.gate_window} exceeds the head dim {hd}"),
            (not self.rope_train_seq_len or (self.rope_dims or hd) > 2, "ROPE_TRAIN_SEQ_LEN needs more than 2 rotary dims"),
            (self.train_loader != "docpack" or self.attn_doc_mask,
             "TRAIN_LOADER=docpack needs ATTN_DOC_MASK=1: a packed row is one long stream, attention must stay inside its documents"),
            (not self.late_qat_threshold or self.late_qat_threshold > self.min_lr,
             f"LATE_QAT_THRESHOLD={self.late_qat_threshold} must exceed MIN_LR={self.min_lr} or late QAT never fires"),
            (self.muon_ns_coeffs != "polar_express" or self.muon_backend_steps <= len(POLAR_EXPRESS),
             f"MUON_NS_COEFFS=polar_express has {len(POLAR_EXPRESS)} coefficient tuples; MUON_BACKEND_STEPS={self.muon_backend_steps} is more"),
            (not (self.dry_run and self.eval_only), "DRY_RUN=1 and EVAL_ONLY are exclusive: a dry run scores nothing"),
            (not self.run_id or re.fullmatch(RUN_ID_PATTERN, self.run_id),
             f"RUN_ID={self.run_id!r} must be a plain name (letters, digits and _ + @ -, not starting with -): "
             "it names the run's files inside OUT_DIR"),
            (self.out_dir.strip() != "", "OUT_DIR is empty: name the directory for the log and outputs (default logs)"),
            (self.quant_method != "gptq" or not self.max_wallclock_seconds or self.gptq_reserve_seconds < self.max_wallclock_seconds,
             f"GPTQ_RESERVE_SECONDS={self.gptq_reserve_seconds} leaves no training time under MAX_WALLCLOCK_SECONDS={self.max_wallclock_seconds}"),
            (self.quant_clip != "sdclip" or (self.matrix_clip_sigmas > 0 and self.embed_clip_sigmas > 0),
             "QUANT_CLIP=sdclip needs MATRIX_CLIP_SIGMAS > 0 and EMBED_CLIP_SIGMAS > 0"),
            (not self.awq_lite_enabled or self.quant_method == "gptq", "AWQ_LITE_ENABLED=1 works inside GPTQ: set QUANT_METHOD=gptq"),
            (not self.hessian_clip_lambda or (self.quant_method == "gptq" and self.quant_clip == "sdclip"),
             "HESSIAN_CLIP_LAMBDA needs QUANT_METHOD=gptq and QUANT_CLIP=sdclip (it reads diag(H))"),
        ]
        problems = [msg for ok, msg in rules if not ok]
        bad = [t for t in self.ttt_target_list if t not in self.TTT_TARGETS] or (not self.ttt_target_list and ["(empty)"])
        if bad:
            problems.append(f"TTT_TARGETS={self.ttt_targets!r}: unknown target {bad[0]!r}; choose from {', '.join(self.TTT_TARGETS)}")
        if problems:
            raise ConfigError(problems)

    @property
    def seq_plan(self) -> list[tuple[float, int]]:
        """TRAIN_SEQ_SCHEDULE as (end progress, length) stages, the last ending at 1."""
        stages = []
        for part in filter(None, (p.strip() for p in self.train_seq_schedule.split(","))):
            try:
                length, end = part.split("@")
                stages.append((float(end), int(length)))
            except ValueError:
                raise ValueError(f"TRAIN_SEQ_SCHEDULE={self.train_seq_schedule!r}: stage {part!r} is not LENGTH@PROGRESS") from None
            if not (0 < stages[-1][0] <= 1 and stages[-1][1] >= 2):
                raise ValueError(f"TRAIN_SEQ_SCHEDULE stage {part!r}: the length must be >= 2 and the progress in (0, 1]")
        stages = sorted(stages) or [(1.0, self.train_seq_len)]
        return stages[:-1] + [(1.0, stages[-1][1])]

    @property
    def mlp_hidden(self) -> int:
        return int(self.mlp_mult * self.model_dim)

    @property
    def approx_params(self) -> int:
        """Parameter count of the matrices and tables (vectors are negligible): checked before
        anything is allocated, so an absurd size is a config error, not an allocator crash."""
        d, hd = self.model_dim, self.model_dim // self.num_heads
        per_layer = 2 * d * d + 2 * d * self.num_kv_heads * hd + 2 * d * self.mlp_hidden
        tables = self.vocab_size * d * (1 if self.tie_embeddings else 2) + self.bigram_vocab_size * self.bigram_dim
        return self.num_layers * per_layer + tables + (self.bigram_dim * d if self.bigram_vocab_size else 0)

    @property
    def window_len(self) -> int:
        return self.eval_seq_len or self.train_seq_len

    @property
    def packed(self) -> bool:
        """Training rows are packed flat streams (TRAIN_LOADER=docpack), not TRAIN_SEQ_LEN rows."""
        return self.train_loader == "docpack"

    @property
    def train_row_len(self) -> int:
        """Tokens per training row: a whole micro-batch (TRAIN_BATCH_TOKENS/8) when packed."""
        return self.train_batch_tokens // 8 if self.packed else self.train_seq_len

    @property
    def max_len(self) -> int:
        """The longest row any forward sees (RoPE tables): a training row, an eval window, or a
        global TTT step's packed row on one rank (ATTN_DOC_MASK=1)."""
        sgd = min(self.global_ttt_batch_seqs, self.global_ttt_chunk_tokens // self.train_seq_len) * self.train_seq_len
        return max(self.train_row_len, self.window_len, self.ttt_eval_seq_len,
                   sgd if self.phased_ttt_num_phases and self.attn_doc_mask else 0)

    @property
    def ttt_target_list(self) -> list[str]:
        return [t.strip() for t in self.ttt_targets.split(",") if t.strip()]

    @property
    def train_cap_seconds(self) -> float:
        """Training-loop time limit: the cap, less the GPTQ calibration reserve (0 = no cap)."""
        if not self.max_wallclock_seconds:
            return 0.0
        return self.max_wallclock_seconds - (self.gptq_reserve_seconds if self.quant_method == "gptq" else 0.0)

    def bits(self, role: str) -> int:
        """Bits per role. The records' MATRIX_BITS / EMBED_BITS, when set, win over the per-role
        QUANT_BITS_ATTN/MLP and QUANT_BITS_EMBED (one meaning: the bits those tensors are stored at)."""
        return {"attn": self.matrix_bits or self.quant_bits_attn, "mlp": self.matrix_bits or self.quant_bits_mlp,
                "proj": self.quant_bits_proj, "bigram": self.quant_bits_bigram, "embed": self.embed_bits or self.quant_bits_embed,
                "head": self.quant_bits_head, "scalar": 16, "softcap": 16, "gate": 8}[role]

    def clip_sigmas(self, role: str) -> float:
        """SDClip k per role, named as in the records (the untied head is a vocabulary table like the embedding)."""
        return {"attn": self.attn_clip_sigmas or self.matrix_clip_sigmas, "mlp": self.mlp_clip_sigmas or self.matrix_clip_sigmas,
                "embed": self.embed_clip_sigmas, "head": self.embed_clip_sigmas}.get(role, self.matrix_clip_sigmas)

    def items(self) -> list[tuple[str, object]]:
        return sorted((self.env_name(f), getattr(self, f.name)) for f in dataclasses.fields(self))


# A run's files are OUT_DIR/<RUN_ID>.<what>; with no '.' in a run id, "<RUN_ID>.*" is exactly
# one run's files (a run "a" can never claim the files of a run "a.b").
RUN_ID_PATTERN = r"[A-Za-z0-9_+@][A-Za-z0-9_+@-]*"


class ConfigError(ValueError):
    """Every problem of a configuration, found at once; main prints them as one report."""
    kind = "configuration problem"

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class InputError(ConfigError):
    """A problem with the run's inputs (tokenizer, shards, sidecar, OUT_DIR, the artifact to
    score), found before anything is trained: reported like a configuration problem, exit 2."""
    kind = "problem with the run's inputs"


def field_problem(name: str, v, m: dict) -> str | None:
    """What is wrong with one knob's value on its own (choices, finiteness, bounds), or None."""
    if m["choices"] is not None and v not in m["choices"]:
        return f"{name}={v!r}: must be one of {', '.join(map(str, m['choices']))}"
    if isinstance(v, float) and not math.isfinite(v):
        return f"{name}={v}: must be finite"
    if m["lo"] is not None and v < m["lo"]:
        return f"{name}={v}: must be >= {m['lo']}"
    if m["hi"] is not None and v > m["hi"]:
        return f"{name}={v}: must be <= {m['hi']}"
    if m.get("lt") is not None and not v < m["lt"]:
        return f"{name}={v}: must be < {m['lt']} (at {m['lt']} it is degenerate)"
    return None


# Names that published records' run commands use and this script does not. The table is
# consulted only for names that are not Config fields, so a name that becomes a field later
# is simply read as that field. "=NAME" means the same setting in the same units: the value
# is read as our NAME (and logged). Anything else is why the name is refused: a different
# meaning or unit, or a technique this script does not have. A refusal is an error, not a
# warning: such a name changes the score in the record it comes from, ignoring it would not.
RECORD_NAMES = {
    # optimizer
    "MUON_WEIGHT_DECAY": "=MUON_WD",
    "ADAM_WEIGHT_DECAY": "=ADAM_WD",
    "WEIGHT_DECAY": "in the records it is AdamW's decay (embeddings and scalars); here set ADAM_WD, and MUON_WD for Muon",
    "GRAD_CLIP": "=GRAD_CLIP_NORM",
    "BLOCK_LARS_TRUST": "not supported",
    # schedule
    "WARMDOWN": "the warmdown length in steps is WARMDOWN_ITERS",
    "FORCE_STOP_STEP": "use ITERATIONS (the maximum number of steps)",
    # QAT and averaging
    "LATE_QAT": "set QAT_MODE=late (LATE_QAT=1; the trigger is LATE_QAT_THRESHOLD or QAT_START_FRAC) or QAT_MODE=off (0)",
    "QAT_THRESHOLD": "=LATE_QAT_THRESHOLD",
    "QAT_ENABLED": "QAT from the first step is QAT_MODE=always (late QAT: QAT_MODE=late)",
    "QAT_INT6": "QAT simulates the export bits of each role: set QUANT_BITS_ATTN=6 QUANT_BITS_MLP=6",
    "LAWA_ENABLED": "not supported: weight averaging is EMA_ENABLED or SWA_ENABLED",
    # model
    "USE_SMEARGATE": "set SMEAR_GATE=blend (USE_SMEARGATE=1) or SMEAR_GATE=off (0)",
    "SMEAR_GATE_ENABLED": "the records' input-dependent gate is SMEAR_GATE=additive (off: SMEAR_GATE=off)",
    "BIGRAM_HASH_BUCKETS": "here BIGRAM_VOCAB_SIZE counts the buckets including one reserved for 'no previous token'",
    "BIGRAM_HASH_DIM": "=BIGRAM_DIM",
    "VE_ENABLED": "not supported (shared value embedding)",
    "VE_DIM": "not supported (shared value embedding)",
    "VE_LAYERS": "not supported (shared value embedding)",
    "VALUE_RESIDUAL": "not supported",
    "GATED_ATTENTION": "not supported",
    "GATED_ATTN_ENABLED": "not supported",
    "PARALLEL_RESIDUAL_START": "the first block of the parallel residual lanes is PARALLEL_START_LAYER",
    "ROPE_YARN": "not supported",
    "EVAL_NTK_ALPHA": "not supported",
    "MTP_NUM_HEADS": "not supported (multi-token prediction)",
    # quantization and export
    "FP16_EMBED_EXPORT": "keep the embedding in fp16 with QUANT_BITS_EMBED=16",
    "INT6_LAYER_START": "not supported: bits are set per role (QUANT_BITS_ATTN, QUANT_BITS_MLP, ...), not per layer",
    "INT6_LAYER_END": "not supported: bits are set per role (QUANT_BITS_ATTN, QUANT_BITS_MLP, ...), not per layer",
    "FP16_KEEP_NAME_PATTERNS": "not supported: tensors are routed by role; QUANT_BITS_<ROLE>=16 keeps a role in fp16",
    "CONTROL_TENSOR_NAME_PATTERNS": "not supported: tensors are routed by role, set where each parameter is created",
    "USE_ZSTD": "the artifact's frames are compressed by EXPORT_COMPRESSOR: brotli (the default), zstd (level 22) or lzma",
    "ZSTD_LEVEL": "zstd, when EXPORT_COMPRESSOR=zstd, always runs at level 22 (the artifact header too)",
    "COMPRESSOR": "=EXPORT_COMPRESSOR",
    # evaluation and test-time training
    "VAL_BATCH_TOKENS": "=VAL_BATCH_SIZE",
    "EVAL_BATCH_SIZE": "windows per forward batch and rank is EVAL_BATCH_SEQS",
    "SW_EVAL_BATCH": "windows per forward batch and rank is EVAL_BATCH_SEQS",
    "TTT_EPOCHS": "not supported: TTT here is score-first per-document LoRA (TTT_ENABLED) with TTT_GRAD_STEPS updates per "
                  "chunk; full-model SGD runs only in the global phases (PHASED_TTT_NUM_PHASES, GLOBAL_TTT_EPOCHS)",
    "TTT_LR": "the LoRA adapters' AdamW LR is TTT_LORA_LR; the global phases' SGD LR is GLOBAL_TTT_LR",
    "TTT_MOMENTUM": "the TTT adapters use AdamW (TTT_BETA1, TTT_BETA2); the global phases' momentum is GLOBAL_TTT_MOMENTUM",
    "TTT_FREEZE_BLOCKS": "not supported: TTT adapts LoRA on the weights in TTT_TARGETS; global phases train all weights",
    "TTT_CHUNK_TOKENS": "TTT_CHUNK_SIZE is tokens per scored chunk of one document; a global phase's step is GLOBAL_TTT_CHUNK_TOKENS",
    "TTT_BATCH_SEQS": "documents adapted at once: TTT_BATCH_SIZE",
    "TTT_GRAD_CLIP": "the global phases' clip is GLOBAL_TTT_GRAD_CLIP (the adapters are not clipped)",
    "TTT_STEPS": "=TTT_GRAD_STEPS",
    "TTT_OPTIMIZER": "not supported: the TTT adapters use AdamW",
    "TTT_K_LORA": "choose the adapters with TTT_TARGETS (the record's 1/1/1: q,k,v,o,mlp,head; without k: q,v,o,mlp,head)",
    "TTT_O_LORA": "choose the adapters with TTT_TARGETS (o: the record's, from the attention input; e.g. q,k,v,o,head)",
    "TTT_MLP_LORA": "choose the adapters with TTT_TARGETS (mlp: the record's, from the MLP input; e.g. q,k,v,mlp,head)",
    "PHASED_TTT_ENABLED": "the records' scripts do not read it either (their TTT_ENABLED defaults to 1); here TTT is "
                          "TTT_ENABLED=1 (default 0) and its phases PHASED_TTT_NUM_PHASES",
    "GLOBAL_TTT_RESPECT_DOC_BOUNDARIES": "the global phases attend within documents (cut every TRAIN_SEQ_LEN tokens) exactly when "
                                         "ATTN_DOC_MASK=1, the record's default; set ATTN_DOC_MASK",
    "TTT_EVAL_ONLY": "score an existing artifact with EVAL_ONLY=<path> (TTT_ENABLED=1 for TTT)",
    "PREQUANT_ONLY": "not supported: every run exports and scores its artifact",
    # data and run
    "DATA_DIR": "DATA_PATH is the directory holding the shards themselves",
    "ARTIFACT_DIR": "outputs go to OUT_DIR",
    "BOS_ID": "the BOS id is read from the tokenizer (TOKENIZER_PATH)",
}
# Records' names accepted only with the value that is this script's behaviour (anything else is
# refused by record_fixed_problem). The 1.0565 record's n-gram helper also has within-word and
# word-start channels: they gate on the token being scored (illegal) and are not built; its
# command switches them off (a TAU above 1 never fires), which leaves their other names inert.
_OFF = "the record's within-word/word-start n-gram channels stay off"
RECORD_FIXED_NAMES = {**dict.fromkeys(("WITHIN_TAU", "WORD_TAU", "WITHIN_BOOST", "WORD_BOOST", "WORD_ORDER", "WORD_NORMALIZE",
                                       "AGREE_ADD_BOOST"), _OFF),
                      "NGRAM_HINT_PRECOMPUTE_OUTSIDE": "the tilt's precompute reads validation tokens, so it runs "
                                                       "inside the eval clock",
                      "LQER_ASYM_ENABLED": "LQER is always the asymmetric pack (int2 A, grouped B: LQER_ASYM_GROUP)",
                      "GATED_ATTN_QUANT_GATE": "the sparse attention gate is always exported int8 per row",
                      "SMEAR_GATE_BOS_FIX": "the smear gate never mixes a document's first token with the one before",
                      "TTT_LORA_EMA_DECAY": "the TTT adapters keep no EMA",
                      "TTT_UPDATE_EVERY": "the TTT adapters step after every chunk",
                      "FUSED_CE_ENABLED": "the loss is PyTorch's cross-entropy, the values the records' fused kernel "
                                          "computes (the kernel only changes speed)"}
# The value each of those names must have (the records' meaning of this script's behaviour).
RECORD_FIXED_VALUES = {"LQER_ASYM_ENABLED": "1", "GATED_ATTN_QUANT_GATE": "1", "SMEAR_GATE_BOS_FIX": "1",
                       "TTT_UPDATE_EVERY": "1", "NGRAM_HINT_PRECOMPUTE_OUTSIDE": "0"}
# Unknown names of the records' families are refused even when no setting here is close.
RECORD_FAMILIES = ("LQER_", "GATED_", "TTT_", "GLOBAL_TTT_", "PHASED_TTT_", "SMEAR_", "SPARSE_ATTN_", "NGRAM_", "GPTQ_",
                   "QAT_", "EMA_", "SWA_", "MUON_", "XSA_", "BIGRAM_", "ZSTD_", "COMPRESS", "LOOP_", "PARALLEL_")


def record_fixed_problem(key: str, raw: str) -> str | None:
    if key == "LQER_ASYM_ENABLED" and raw != "1":
        return f"{key}={raw}: only the asymmetric LQER pack is built (set 1, or LQER_ENABLED=0 for no LQER)"
    if key == "FUSED_CE_ENABLED":
        return None if raw in ("0", "1") else f"{key}={raw}: expected 0 or 1"
    if key == "TTT_LORA_EMA_DECAY":
        try:
            return None if float(raw) == 0 else f"{key}={raw}: {RECORD_FIXED_NAMES[key]} (only 0 is accepted)"
        except ValueError:
            return f"{key}={raw}: expected a number"
    if key in RECORD_FIXED_VALUES and raw != RECORD_FIXED_VALUES[key]:
        return f"{key}={raw}: {RECORD_FIXED_NAMES[key]} (only {RECORD_FIXED_VALUES[key]} is accepted)"
    if key.endswith("_TAU"):
        try:
            off = float(raw) > 1
        except ValueError:
            off = False
        return None if off else (f"{key}={raw}: the record's within-word and word-start n-gram channels read the token "
                                 "being scored (illegal) and are not built; only a value above 1 (never fires) is accepted")
    return None  # the other names only tune the channels that stay off


# torchrun's and the C libraries' own names: never a typo of ours.
LAUNCHER_NAMES = {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE", "ROLE_RANK",
                  "ROLE_NAME", "ROLE_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                  "NCCL_NET", "PYTORCH_CUDA_ALLOC_CONF"}


def within_edits(a: str, b: str, k: int) -> int | None:
    """The edit distance of a and b (insertions, deletions, substitutions and adjacent
    transpositions) if it is at most k, else None. Banded and stopping early, so checking a
    whole environment against every setting is instant."""
    if abs(len(a) - len(b)) > k:
        return None
    far = k + 1
    prev2, prev = None, [min(j, far) for j in range(len(b) + 1)]
    for i in range(1, len(a) + 1):
        cur = [far] * (len(b) + 1)
        cur[0] = min(i, far)
        lo, hi = max(1, i - k), min(len(b), i + k)
        for j in range(lo, hi + 1):
            v = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1]))
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                v = min(v, prev2[j - 2] + 1)
            cur[j] = min(v, far)
        if min(cur[lo - 1:hi + 1]) > k:
            return None
        prev2, prev = prev, cur
    return prev[-1] if prev[-1] <= k else None


def close_names(key: str, known: set[str]) -> list[str]:
    """Known names that `key` is plausibly a misspelling of: the same name in another case, a
    name one or two edits away (one for names of up to 5 letters), the same name without its
    underscores (DATAPATH), or a truncation at a word boundary (GRAD_CLIP, MAX_WALLCLOCK).
    Names further away (NUM_GPUS, MODEL_NAME, PATH) are someone else's and not reported."""
    up = key.upper()
    scored = []
    for name in known:
        d = within_edits(up, name, 1 if len(name) <= 5 else 2)
        if d is None and (up.replace("_", "") == name.replace("_", "") or ("_" in up and name.startswith(up + "_"))):
            d = 3
        if d is not None:
            scored.append((d, name))
    return [n for _, n in sorted(scored)[:3]]


def check_env_name(key: str, fields: set[str]) -> tuple[str, str | None]:
    """How from_env treats a set variable that is not a field: ("alias", FIELD),
    ("problem", message) or ("ignore", None)."""
    entry = RECORD_NAMES.get(key)
    if entry is not None and entry.startswith("=") and entry[1:] in fields:
        return "alias", entry[1:]
    if entry is not None:
        return "problem", f"{key} (a name from published records) is not read here: {entry}"
    if key in LAUNCHER_NAMES:
        return "ignore", None
    hints = close_names(key, fields | set(RECORD_NAMES))
    if not hints and key.startswith(RECORD_FAMILIES):
        return "problem", (f"unknown environment variable {key}: not a setting here, though its family is the "
                           "published records' (see --help for the names read, and the records' names refused)")
    if not hints:
        return "ignore", None
    if key.upper() in fields:
        return "problem", f"unknown environment variable {key} (did you mean {key.upper()}? names are upper case)"
    msg = f"unknown environment variable {key} (did you mean {' or '.join(hints)}?)"
    if hints[0] in RECORD_NAMES and hints[0] not in fields:
        entry = RECORD_NAMES[hints[0]]
        msg += f"; {hints[0]} is a published records' name: " + (f"read as {entry[1:]}" if entry.startswith("=") else entry)
    return "problem", msg


def _parse(name: str, raw: str, typ) -> object:
    typ = {"str": str, "int": int, "float": float, "bool": bool}.get(typ, typ)
    try:
        if typ is bool:
            if raw not in ("0", "1"):
                raise ValueError
            return raw == "1"
        return typ(raw)
    except ValueError:
        kind = "0 or 1" if typ is bool else typ.__name__
        raise ValueError(f"{name}={raw!r}: expected {kind}") from None


def config_report(problems: list[str], kind: str = ConfigError.kind) -> str:
    n = len(problems)
    kind = kind.replace("problem", "problems", 1) if n > 1 else kind
    return "\n".join([f"train_gpt.py: {n} {kind}, nothing was run:"]
                     + [f"  - {p}" for p in problems] + ["See `python train_gpt.py --help` for every setting."])


def config_help() -> str:
    lines = ["Environment variables of train_gpt.py (name, default, meaning):"]
    if "PACKED_SOURCE" in globals():  # the packed copy drops docstrings and knob help (section 10)
        lines.append("(packed copy: the meanings are left out to save counted bytes; run train_gpt_human.py --help)")
    group = None
    for f in dataclasses.fields(Config):
        if f.metadata["group"] != group:
            group = f.metadata["group"]
            lines.append(f"\n[{group}]")
        default = int(f.default) if isinstance(f.default, bool) else f.default
        lines.append(f"  {Config.env_name(f):<28} {str(default)!r:<40} {f.metadata['help']}")
    lines.append("\nSet by torchrun: RANK, WORLD_SIZE, LOCAL_RANK (single process when RANK is unset).")
    fields = {Config.env_name(f) for f in dataclasses.fields(Config)}
    lines.append("\nNames from published records' commands (read as ours, or refused with the reason):")
    for name, entry in sorted(RECORD_NAMES.items()):
        if name not in fields:
            lines.append(f"  {name:<28} {'read as ' + entry[1:] if entry.startswith('=') else entry}")
    return "\n".join(lines)


# ===== 2. DISTRIBUTED+LOGGING =====

@dataclass
class Dist:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    control: object = None  # gloo group for host-side decisions on CUDA runs (None: the default group)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def launcher_problems(environ: dict) -> list[str]:
    """What is wrong with torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK): all or none."""
    names = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
    present = [n for n in names if n in environ]
    if not present:
        return []
    if len(present) < len(names):
        missing = [n for n in names if n not in environ]
        return [f"{', '.join(present)} set without {', '.join(missing)}: launch with torchrun, or unset "
                f"{', '.join(present)} for a single process"]
    try:
        rank, world, local = (int(environ[n]) for n in names)
    except ValueError:
        return [f"RANK={environ['RANK']!r} WORLD_SIZE={environ['WORLD_SIZE']!r} LOCAL_RANK={environ['LOCAL_RANK']!r}: "
                "expected integers"]
    if world < 1 or 8 % world:
        return [f"WORLD_SIZE={world} must divide 8 (the global batch is 8 micro-batches)"]
    if not (0 <= rank < world and 0 <= local < world):
        return [f"RANK={rank} and LOCAL_RANK={local} must be in [0, WORLD_SIZE={world})"]
    return []


def setup_distributed() -> Dist:
    """Single process when RANK is unset; otherwise NCCL on CUDA and gloo on CPU."""
    if launcher_problems(os.environ):
        raise ConfigError(launcher_problems(os.environ))
    if "RANK" not in os.environ:
        device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
        if device.type == "cuda":
            torch.cuda.set_device(device)
        return Dist(0, 1, 0, device)
    rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
    if torch.cuda.is_available():
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
        return Dist(rank, world, local, device, control=dist.new_group(backend="gloo"))
    device = torch.device("cpu")
    dist.init_process_group("gloo")
    return Dist(rank, world, local, device)


def all_reduce_(t: Tensor, ctx: Dist, op=dist.ReduceOp.SUM, group=None) -> Tensor:
    if ctx.enabled:
        dist.all_reduce(t, op=op, group=group)
    return t


def host_max(value: float, ctx: Dist) -> float:
    """The largest of the ranks' values of a host-side number. On CUDA runs it goes through
    the gloo control group on CPU tensors: an NCCL all-reduce read back with .item() would
    make the host wait for the GPU to finish every step."""
    return host_max_all([value], ctx)[0]


def host_max_all(values: list[float], ctx: Dist) -> list[float]:
    """host_max of several numbers in one collective."""
    return all_reduce_(torch.tensor(values, dtype=torch.float64), ctx, dist.ReduceOp.MAX, ctx.control).tolist()


def barrier(ctx: Dist) -> None:
    if ctx.enabled:
        dist.barrier()


class Logger:
    """Rank 0 appends every line to logs/<RUN_ID>.txt and flushes it at once (nothing lost
    on a crash); console=False keeps bulky blocks (the source) out of the terminal."""

    def __init__(self, path: Path | None):
        self.path = path
        try:
            self.file = open(path, "a", encoding="utf-8") if path is not None else None
        except OSError as e:
            raise OSError(e.errno, f"could not open the log {path}: {e.strerror or e}") from None
        self.console_only, self.failure = False, None

    def __call__(self, msg: str, console: bool = True) -> None:
        if self.file is None:
            return
        if console or self.console_only:
            print(msg, flush=True)
        if self.console_only:
            return
        try:
            self.file.write(msg + "\n")
            self.file.flush()
        except OSError as e:  # e.g. a full disk: the run goes on (its weights and artifact matter more
            # than the log), every later line reaches the console, and main exits non-zero at the end
            self.console_only = True
            self.failure = f"could not write the log {self.path}: {e.strerror or e}; its later lines are only on the console"
            print(f"error:{self.failure}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.file is not None:
            try:
                self.file.close()
            except OSError:
                pass  # already reported by the write that failed


class Progress:
    """A line every ~10% of a long loop that prints nothing else (compiling warmup, eval
    prewarm, the sliding eval): done/total, elapsed seconds and the projected total from the
    rate so far. Host clock, no device sync: on CUDA the host may run a batch ahead."""

    def __init__(self, log, what: str, total: int, every: float = 0.1):
        self.log, self.what, self.total, self.every = log, what, max(total, 1), every
        self.t0, self.next = time.perf_counter(), every

    def __call__(self, done: int, note: str = "") -> None:
        if self.log is None or done / self.total < self.next - 1e-9:
            return
        while done / self.total >= self.next - 1e-9:
            self.next += self.every
        e = time.perf_counter() - self.t0
        self.log(f"{self.what}_progress:{done}/{self.total} elapsed:{e:.1f}s projected_total:{e * self.total / max(done, 1):.1f}s"
                 + (f" {note}" if note else ""))


def environment_lines(ctx: Dist) -> list[str]:
    cuda = torch.version.cuda or "none"
    lines = [f"python:{platform.python_version()} torch:{torch.__version__} cuda:{cuda}"]
    if ctx.device.type == "cuda":
        lines.append(f"device:{torch.cuda.get_device_name(ctx.device)} count:{ctx.world_size}")
        try:
            smi = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=20).stdout
            lines.append(smi.rstrip())
        except (OSError, subprocess.SubprocessError) as e:
            lines.append(f"nvidia-smi unavailable: {e}")
    else:
        lines.append(f"device:cpu count:{ctx.world_size} threads:{torch.get_num_threads()}")
    return lines


# ===== 3. DATA =====
# Challenge shard format: 256 x int32 header (magic 20240520, version 1, n_tokens, 0...),
# then n_tokens x uint16 little-endian.

SHARD_MAGIC, SHARD_VERSION, HEADER_INTS = 20240520, 1, 256


def load_shard(path: str | Path) -> Tensor:
    n = shard_length(path)
    tokens = np.fromfile(path, dtype="<u2", count=n, offset=HEADER_INTS * 4)
    return torch.from_numpy(tokens.astype(np.int32))


def open_shard(path: str | Path) -> np.ndarray:
    """The shard's tokens as a read-only uint16 memory map (checked like load_shard), for the
    preflight's one pass before training; the training loaders read through ShardReader."""
    return np.memmap(path, dtype="<u2", mode="r", offset=HEADER_INTS * 4, shape=(shard_length(path),))


def file_stamp(st: os.stat_result) -> tuple[int, int]:
    return st.st_size, st.st_mtime_ns


def changed_message(path: str, was: tuple[int, int], now: tuple[int, int]) -> str:
    return (f"shard {path} changed during the run ({was[0]} bytes -> {now[0]} bytes"
            f"{', rewritten' if now[1] != was[1] else ''}): data under a running job must not be replaced "
            "(copy new shards to another directory)")


class ShardReader:
    """A training shard held open for the shuffled loader. It reads with os.pread, never through a
    memory map: a shard truncated under a running job (what `cp` over it does) killed a mapped
    reader with SIGBUS, no error line and no weights saved. Every batch re-checks the size and
    modification time of the shards it read (an fstat each, nothing next to a training step),
    so a changed shard is a ValueError naming it, which the run's stop path turns into one error
    line with the weights saved."""

    def __init__(self, path: str | Path):
        self.path, self.n = str(path), shard_length(path)
        self.fd = os.open(self.path, os.O_RDONLY)
        self.stamp = file_stamp(os.fstat(self.fd))
        if self.stamp[0] != HEADER_INTS * 4 + 2 * self.n:  # replaced between the header check and the open
            raise ValueError(changed_message(self.path, (HEADER_INTS * 4 + 2 * self.n, self.stamp[1]), self.stamp))

    def __len__(self) -> int:
        return self.n

    def __del__(self):
        try:
            os.close(self.fd)
        except (AttributeError, OSError):
            pass

    def check(self) -> None:
        now = file_stamp(os.fstat(self.fd))
        if now != self.stamp:
            raise ValueError(changed_message(self.path, self.stamp, now))

    def read(self, start: int, count: int) -> np.ndarray:
        data = os.pread(self.fd, 2 * count, HEADER_INTS * 4 + 2 * start)
        if len(data) != 2 * count:
            self.check()  # names the change; a short read of an unchanged file cannot happen
            raise ValueError(f"shard {self.path}: short read at token {start}")
        return np.frombuffer(data, dtype="<u2")


def shard_length(path: str | Path) -> int:
    """The token count of a shard, after checking its header and size."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"shard {path} does not exist")
    size = path.stat().st_size
    if size < HEADER_INTS * 4:
        raise ValueError(f"shard {path}: {size} bytes is shorter than the {HEADER_INTS * 4}-byte header")
    header = np.fromfile(path, dtype="<i4", count=HEADER_INTS)
    if header[0] != SHARD_MAGIC:
        raise ValueError(f"shard {path}: bad magic {header[0]} (expected {SHARD_MAGIC})")
    if header[1] != SHARD_VERSION:
        raise ValueError(f"shard {path}: unsupported version {header[1]} (expected {SHARD_VERSION})")
    n = int(header[2])
    if size != HEADER_INTS * 4 + 2 * n:
        raise ValueError(f"shard {path}: header says {n} tokens ({HEADER_INTS * 4 + 2 * n} bytes) but the file has "
                         f"{size} bytes (truncated or corrupt)")
    return n


def shard_files(data_path: str, pattern: str, what: str) -> list[str]:
    if not Path(data_path).is_dir():
        hint = (" (the default SP8192 data: python data/cached_challenge_fineweb.py --repo-id kevclark/parameter-golf "
                "--variant sp8192)" if data_path == Config.data_path else "")
        raise FileNotFoundError(f"DATA_PATH={data_path} is not a directory{hint}")
    files = sorted(glob.glob(os.path.join(data_path, pattern)))
    if not files:
        raise FileNotFoundError(f"no {what} shards match {os.path.join(data_path, pattern)} "
                                f"(set DATA_PATH and {what.upper()}_GLOB)")
    return files


class TokenStream:
    """Reads shards in order, forever (wrapping around), handing out contiguous spans."""

    def __init__(self, files: list[str]):
        self.files, self.stamps = files, {f: file_stamp(os.stat(f)) for f in files}  # as the preflight saw them
        self.reset()

    def load(self, i: int) -> Tensor:
        """Shard i, read whole; a shard that changed since the stream first read it is an error
        naming it (the run stops and saves its weights), not a silent switch of data."""
        path = self.files[i]
        was, now = self.stamps[path], file_stamp(os.stat(path))
        if now != was:
            raise ValueError(changed_message(path, was, now))
        return load_shard(path)

    def reset(self) -> None:
        self.file_idx, self.pos = 0, 0
        self.tokens = self.load(0)

    def take(self, n: int) -> Tensor:
        parts, empty_in_a_row = [], 0
        while n > 0:
            if self.pos == len(self.tokens):
                empty_in_a_row = empty_in_a_row + 1 if len(self.tokens) == 0 else 0
                if empty_in_a_row > len(self.files):  # a full cycle without a token: it would loop forever
                    raise ValueError(f"all {len(self.files)} training shards are empty")
                self.file_idx = (self.file_idx + 1) % len(self.files)
                self.tokens, self.pos = self.load(self.file_idx), 0
            k = min(n, len(self.tokens) - self.pos)
            parts.append(self.tokens[self.pos:self.pos + k])
            self.pos, n = self.pos + k, n - k
        return torch.cat(parts)


class DistributedTokenLoader:
    """Each call yields one micro-batch per rank. A call takes world_size consecutive spans
    of (tokens_per_micro + 1) tokens and rank r keeps span r, so micro-batch j of a step is
    the same sequence block for every world size: the global batch does not depend on how
    it is split across ranks and accumulation steps."""

    def __init__(self, files: list[str], ctx: Dist, micro_tokens: int, seq_len: int):
        self.stream, self.ctx, self.micro_tokens, self.seq_len = TokenStream(files), ctx, micro_tokens, seq_len

    def reset(self) -> None:
        self.stream.reset()

    def set_seq_len(self, seq_len: int) -> None:  # TRAIN_SEQ_SCHEDULE: the same spans, cut into other rows
        self.seq_len = seq_len

    def next_batch(self) -> tuple[Tensor, Tensor]:
        span = self.micro_tokens + 1
        chunk = self.stream.take(span * self.ctx.world_size)[self.ctx.rank * span:(self.ctx.rank + 1) * span]
        if self.ctx.device.type == "cuda":  # page-locked, so the copy is truly asynchronous
            chunk = chunk.pin_memory()
        chunk = chunk.to(self.ctx.device, non_blocking=True).to(torch.int64)  # widen on the device
        return chunk[:-1].view(-1, self.seq_len), chunk[1:].view(-1, self.seq_len)


class ShuffledSequenceLoader:
    """The records' shuffled-sequence order, made independent of the world size: each epoch
    cuts every shard into TRAIN_SEQ_LEN(+1) windows at a random phase and permutes the windows
    of all shards together; each call hands out the next world_size * rows windows and rank r
    keeps block r, so (as with the stream loader) micro-batch j of a step is the same for any
    world size. One generator seeded with SEED drives it: the order is deterministic per seed,
    and reset() replays it from the start. Windows left over at an epoch's end are skipped."""

    def __init__(self, files: list[str], ctx: Dist, micro_tokens: int, seq_len: int, seed: int):
        self.shards = [ShardReader(f) for f in files]
        self.ctx, self.micro_tokens, self.seed, self.first_len = ctx, micro_tokens, seed, seq_len
        if all(len(s) - 1 < seq_len for s in self.shards):
            raise ValueError(f"no training shard is longer than TRAIN_SEQ_LEN={seq_len}")
        self.reset()

    def reset(self) -> None:
        self.rng = np.random.Generator(np.random.PCG64(self.seed))
        self.seq_len, self.rows = self.first_len, self.micro_tokens // self.first_len
        self.new_epoch()

    def set_seq_len(self, seq_len: int) -> None:
        """TRAIN_SEQ_SCHEDULE: windows of the new length, a fresh epoch from the same generator."""
        if seq_len != self.seq_len:
            self.seq_len, self.rows = seq_len, self.micro_tokens // seq_len
            self.new_epoch()

    def new_epoch(self) -> None:
        shard_ids, starts = [], []
        for i, s in enumerate(self.shards):
            if len(s) - 1 < self.seq_len:  # too short for one window
                continue
            phase = int(self.rng.integers(min(self.seq_len - 1, len(s) - 1 - self.seq_len) + 1))
            n_win = (len(s) - 1 - phase) // self.seq_len
            shard_ids.append(np.full(n_win, i))
            starts.append(phase + self.seq_len * np.arange(n_win))
        order = self.rng.permutation(sum(len(a) for a in starts))
        self.windows = np.stack([np.concatenate(shard_ids), np.concatenate(starts)], 1)[order]
        self.cursor = 0

    def next_batch(self) -> tuple[Tensor, Tensor]:
        need = self.rows * self.ctx.world_size
        if self.cursor + need > len(self.windows):
            if need > len(self.windows):
                raise ValueError(f"the training shards hold {len(self.windows)} windows, fewer than one batch's {need}")
            self.new_epoch()
        mine = self.windows[self.cursor + self.ctx.rank * self.rows:self.cursor + (self.ctx.rank + 1) * self.rows]
        self.cursor += need
        rows = [self.shards[i].read(s, self.seq_len + 1) for i, s in mine]
        for i in set(mine[:, 0].tolist()):
            self.shards[i].check()
        chunk = torch.from_numpy(np.stack(rows).astype(np.int32))
        if self.ctx.device.type == "cuda":
            chunk = chunk.pin_memory()
        chunk = chunk.to(self.ctx.device, non_blocking=True).to(torch.int64)
        return chunk[:, :-1], chunk[:, 1:]


class DocumentPackingLoader(DistributedTokenLoader):
    """TRAIN_LOADER=docpack, the layout of the VarLen records: the stream loader's spans (same
    tokens, same world-size independence), each handed out as one flat row [1, micro_tokens]
    instead of micro_tokens/TRAIN_SEQ_LEN rows. The model runs it with packed=True: attention
    segments are the documents, cut every TRAIN_SEQ_LEN tokens (segment_starts), so a document
    keeps its context across what would have been a row boundary, and no token sees another
    document. (The records start each shard at its first BOS and skip a shard's tail; here the
    stream runs on, and a span's leading partial document is a segment of its own.)"""

    def next_batch(self) -> tuple[Tensor, Tensor]:
        x, y = super().next_batch()
        return x.reshape(1, -1), y.reshape(1, -1)


def make_loader(cfg: Config, files: list[str], ctx: Dist, micro_tokens: int):
    if cfg.train_loader == "docpack":
        return DocumentPackingLoader(files, ctx, micro_tokens, cfg.train_seq_len)
    if cfg.train_loader == "shuffled":
        return ShuffledSequenceLoader(files, ctx, micro_tokens, cfg.train_seq_len, cfg.seed)
    return DistributedTokenLoader(files, ctx, micro_tokens, cfg.train_seq_len)


def inspect_shard(path: str, digest: bool) -> dict:
    """One shard's facts for the preflight: token count, largest token id and (if asked) a
    content hash of its tokens, or the error that makes it unreadable."""
    try:
        n = shard_length(path)
        tokens = np.memmap(path, dtype="<u2", mode="r", offset=HEADER_INTS * 4, shape=(n,)) if n else np.zeros(0, "<u2")
        return dict(path=path, tokens=n, max_id=int(tokens.max()) if n else -1, error=None,
                    digest=hashlib.blake2b(tokens, digest_size=16).hexdigest() if digest else None)
    except (OSError, ValueError) as e:
        return dict(path=path, tokens=0, max_id=-1, error=str(e), digest=None)


def preflight_data(cfg: Config, ctx: Dist, log: Logger, train_files: list[str], val_files: list[str],
                   sp: spm.SentencePieceProcessor, min_train_tokens: int) -> None:
    """Everything about the data that would otherwise fail mid-run or score wrongly, checked
    before step 1 and reported at once: every shard's header and length, every shard's largest
    token id against VOCAB_SIZE (an id out of range crashes the embedding, or the final eval
    after all the training), enough training tokens (all-empty shards used to hang the loader),
    no shard in both splits (same file, or same tokens under another name: training on the
    validation set), no validation document among the sampled training documents (audit_data;
    the full audit's verdict when the manifest holds one for these shards), and the tokenizer
    against DATA_PATH/manifest.json when there is one. The
    ranks split the shards and share the facts, so every rank reaches the same verdict."""
    t0 = time.perf_counter()
    val_sizes = {os.path.getsize(f) for f in val_files if os.path.isfile(f)}
    jobs = [("val", f) for f in val_files] + [("train", f) for f in train_files]
    # Content hashes only where a collision is possible: identical tokens mean identical sizes.
    mine = [(split, inspect_shard(f, split == "val" or (os.path.isfile(f) and os.path.getsize(f) in val_sizes)))
            for i, (split, f) in enumerate(jobs) if i % ctx.world_size == ctx.rank]
    facts = [mine]
    if ctx.enabled:
        facts = [None] * ctx.world_size
        dist.all_gather_object(facts, mine, group=ctx.control)
    facts = [x for part in facts for x in part]
    problems = [info["error"] for _, info in facts if info["error"]]
    for split, info in facts:
        if info["max_id"] >= cfg.vocab_size:
            problems.append(f"shard {info['path']}: token id {info['max_id']} >= VOCAB_SIZE={cfg.vocab_size} "
                            "(tokenized with another vocabulary?)")
    real_val = {os.path.realpath(f): f for f in val_files}
    for f in train_files:
        if os.path.realpath(f) in real_val:
            problems.append(f"training shard {f} is also a validation shard (TRAIN_GLOB={cfg.train_glob} matches it)")
    val_digests = {info["digest"]: info["path"] for split, info in facts if split == "val" and info["digest"]}
    for split, info in facts:
        other = val_digests.get(info["digest"]) if split == "train" and info["digest"] else None
        if other and os.path.realpath(other) != os.path.realpath(info["path"]):
            problems.append(f"training shard {info['path']} holds exactly the tokens of validation shard {other}")
    n_train = sum(info["tokens"] for split, info in facts if split == "train")
    if n_train < min_train_tokens:
        problems.append(f"the {len(train_files)} training shards hold {n_train} tokens; one step's micro-batch read needs "
                        f"{min_train_tokens} (DATA_PATH={cfg.data_path}, TRAIN_GLOB={cfg.train_glob})")
    problems += manifest_problems(cfg, sp)
    if not problems:  # every shard reads: the document audit can
        audit_problems, audit_line = audit_data(cfg, train_files, val_files, sp.bos_id())
        problems += audit_problems
        log(audit_line)
    if problems:
        raise InputError([f"data preflight: {p}" for p in problems])
    n_val = sum(info["tokens"] for split, info in facts if split == "val")
    log(f"preflight: train_shards:{len(train_files)} train_tokens:{n_train} val_shards:{len(val_files)} "
        f"val_tokens:{n_val} max_token_id:{max(info['max_id'] for _, info in facts)} vocab_size:{cfg.vocab_size} "
        f"train_val_overlap:none time:{1000 * (time.perf_counter() - t0):.0f}ms")


def manifest_problems(cfg: Config, sp: spm.SentencePieceProcessor) -> list[str]:
    """The tokenizer against the dataset's manifest.json (written by data/build_sp_dataset.py;
    the proxy corpora have the short form with vocab_size and bos_id), if DATA_PATH has one."""
    path = Path(cfg.data_path) / "manifest.json"
    if not path.is_file():
        return []
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return [f"{path}: unreadable ({e})"]
    if not isinstance(manifest, dict):
        return [f"{path}: expected a JSON object"]
    problems = []
    if "vocab_size" in manifest and manifest["vocab_size"] != sp.vocab_size():
        problems.append(f"{path} says vocab_size {manifest['vocab_size']}, TOKENIZER_PATH={cfg.tokenizer_path} has "
                        f"{sp.vocab_size()}: the shards were made with another tokenizer")
    if "bos_id" in manifest and manifest["bos_id"] != sp.bos_id():
        problems.append(f"{path} says bos_id {manifest['bos_id']}, TOKENIZER_PATH={cfg.tokenizer_path} has {sp.bos_id()}")
    tok, files = manifest.get("tokenizer"), manifest.get("files")
    name = tok.get("model") if isinstance(tok, dict) else None
    entry = files.get(name) if isinstance(files, dict) and isinstance(name, str) else None
    want = entry.get("sha256") if isinstance(entry, dict) else None
    if isinstance(want, str):
        have = hashlib.sha256(Path(cfg.tokenizer_path).read_bytes()).hexdigest()
        if have != want:
            problems.append(f"TOKENIZER_PATH={cfg.tokenizer_path} is not the tokenizer the shards were made with "
                            f"({path} lists {name} with sha256 {want[:12]}..., this file has {have[:12]}...)")
    return problems


# Train/val document audit. A document is a BOS and the tokens up to the next BOS (how the scorer
# and TTT split the stream); data/audit_data.py hashes every document of both splits and writes
# its verdict into DATA_PATH/manifest.json. Before training, every validation document is hashed
# and the whole documents inside fixed sample blocks of every training shard are looked up; the
# same blocks fingerprint each shard, and a full audit whose fingerprints all match is trusted
# (its digest goes into the log). The hash, blocks and fingerprint are data/audit_data.py's (a
# test keeps them equal).
AUDIT_BLOCK, AUDIT_BLOCKS = 65536, 8


def doc_hash(tokens: np.ndarray) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(tokens, "<u2").tobytes(), digest_size=16).digest()


def shard_sample(path: str) -> tuple[str, list[tuple[int, np.ndarray]]]:
    """(fingerprint, [(offset, tokens)]) of a shard's sample blocks: its first and last AUDIT_BLOCK
    tokens and evenly spaced ones between (the whole shard when it is no longer than the blocks
    together); the fingerprint hashes the token count and the blocks."""
    n = shard_length(path)
    tokens = open_shard(path) if n else np.zeros(0, "<u2")
    size = n if n <= AUDIT_BLOCK * AUDIT_BLOCKS else AUDIT_BLOCK
    h, blocks = hashlib.blake2b(n.to_bytes(8, "little"), digest_size=16), []
    for s in [0] if size == n else [round(k * (n - size) / (AUDIT_BLOCKS - 1)) for k in range(AUDIT_BLOCKS)]:
        blocks.append((s, np.array(tokens[s:s + size])))
        h.update(blocks[-1][1].tobytes())
    return h.hexdigest(), blocks


def audit_digest(audit: dict) -> str:
    """The digest of the shards a full audit lists (data/audit_data.py's audit_digest)."""
    ident = {"version": audit.get("version"), **{split: [[s["name"], s["tokens"], s["blake2b"]] for s in
             audit["shards"].get(split, [])] for split in ("val", "train", "val_bytes")}}
    return hashlib.sha256(json.dumps(ident, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def audit_data(cfg: Config, train_files: list[str], val_files: list[str], bos_id: int) -> tuple[list[str], str]:
    """The sampled train/val document check, and the full audit's verdict when the data folder's
    manifest holds one for these very shards: (problems, the `data_audit:` log line)."""
    val = np.concatenate([open_shard(f) for f in val_files])
    starts = np.flatnonzero(val == bos_id).tolist()
    index = {}
    for k, (s, e) in enumerate(zip(starts, starts[1:] + [len(val)])):
        if e - s > 1:
            index.setdefault(doc_hash(val[s + 1:e]), k)
    side = sidecar_glob(cfg)
    side_files = sorted(glob.glob(os.path.join(cfg.data_path, side))) if side else []
    prints, found, sampled = {}, [], 0
    for f in val_files + side_files + train_files:
        prints[os.path.basename(f)], blocks = shard_sample(f)
        for off, block in blocks if f in train_files else []:
            b = np.flatnonzero(block == bos_id).tolist()
            for s, e in zip(b, b[1:]):
                sampled += 1
                k = index.get(doc_hash(block[s + 1:e])) if e - s > 1 else None
                if k is not None:
                    found.append(f"{f} token {off + s} ({e - s} tokens) = validation document {k}")
    problems = [f"{len(found)} sampled training documents are validation documents (first: {found[0]}); "
                "python data/audit_data.py DATA_PATH lists every one"] if found else []
    facts = (f"val_docs:{len(starts)} val_targets:{len(val) - 1} train_shards:{len(train_files)} "
             f"sampled_train_docs:{sampled} sampled_shared:{len(found)}")
    path = Path(cfg.data_path) / "manifest.json"
    audit = (_manifest_json(path) or {}).get("audit")
    if not isinstance(audit, dict):
        return problems, f"data_audit:UNVERIFIED (no full audit in {path}; run python data/audit_data.py) {facts}"
    listed = {split: {s["name"]: s.get("fingerprint") for s in audit["shards"].get(split, [])}
              for split in ("val", "train", "val_bytes")}
    ours = {"val": val_files, "val_bytes": side_files, "train": train_files}
    stale = [f for split, files in ours.items() for f in files
             if listed[split].get(os.path.basename(f)) != prints[os.path.basename(f)]]
    stale += [n for split in ("val", "val_bytes") for n in set(listed[split]) - {os.path.basename(f) for f in ours[split]}]
    if stale or audit_digest(audit) != audit.get("digest"):
        why = f"{stale[0]} is not the shard it audited" if stale else "its digest does not match its shard list"
        return problems, f"data_audit:UNVERIFIED (the full audit in {path} is of other data: {why}) {facts}"
    if audit.get("overlap", 1 if audit.get("result") != "PASS" else 0):  # training on validation documents
        problems.append(f"the full audit in {path} failed on these shards: " + "; ".join(audit.get("problems", [])))
    # other findings (a split shorter than the published one, a sidecar that disagrees with the
    # text) are the log's to carry: scores on such data are not comparable, training is still sound
    found = "" if audit.get("result") == "PASS" else " problems: " + "; ".join(audit.get("problems", [])) + ";"
    return problems, (f"data_audit:{audit['digest']} full:{audit.get('result')} ({path}; every shard matches its "
                      f"fingerprint){found} {facts}")


def sidecar_glob(cfg: Config) -> str:
    """Glob of the val byte sidecar: VAL_BYTES_GLOB, else VAL_GLOB with _val_ -> _val_bytes_
    (fineweb_val_*.bin -> fineweb_val_bytes_*.bin, the published CaseOps layout)."""
    if cfg.val_bytes_glob:
        return cfg.val_bytes_glob
    return cfg.val_glob.replace("_val_", "_val_bytes_", 1) if "_val_" in cfg.val_glob else ""


def val_token_files(cfg: Config) -> list[str]:
    """The val token shards. fineweb_val_*.bin also matches the sidecar fineweb_val_bytes_*.bin,
    whose byte counts must never be read as tokens, so names matching the sidecar glob are dropped."""
    files = shard_files(cfg.data_path, cfg.val_glob, "val")
    side = sidecar_glob(cfg)
    tokens = [f for f in files if not (side and fnmatch.fnmatch(os.path.basename(f), side))]
    if not tokens:
        raise FileNotFoundError(f"VAL_GLOB={cfg.val_glob} matches only byte-sidecar files ({side}) in {cfg.data_path}")
    return tokens


def load_validation_tokens(cfg: Config, log: Logger) -> Tensor:
    tokens = torch.cat([load_shard(f) for f in val_token_files(cfg)])
    if cfg.val_max_tokens:
        log(f"WARNING: VAL_MAX_TOKENS={cfg.val_max_tokens}: scoring only the first {cfg.val_max_tokens} of "
            f"{len(tokens)} validation tokens; this val_bpb is NOT comparable to full-split scores")
        tokens = tokens[:cfg.val_max_tokens]
    if len(tokens) <= cfg.train_seq_len:
        raise ValueError(f"validation split has {len(tokens)} tokens, need more than TRAIN_SEQ_LEN={cfg.train_seq_len}")
    return tokens


# ===== 4. BPB =====
# Tokenizer-agnostic bits per byte. A scored target y after input token x counts
#   base_bytes[y] + (has_leading_space[y] and not is_boundary[x])
# bytes: control/unknown/unused pieces count 0, byte-fallback pieces count exactly 1, other
# pieces their UTF-8 length without the leading U+2581, whose space is one byte except right
# after a boundary token (the document start, where SentencePiece adds no real space).
#
# Every eval path counts bytes the same way: from one per-position byte tensor over the whole
# validation stream, built once at load (`load_val_bytes`). Entry i holds the bytes token i
# adds when it is a scored target (entry 0 is never a target); an eval sums the entries at
# the positions it scores. The entries come from the LUT rule above, or, for tokenizations
# that transform the text (CaseOps), from the byte sidecar shipped with the val shards: the
# original text's UTF-8 bytes per token, which no LUT over transformed pieces can give.

@dataclass
class ByteLUT:
    base_bytes: Tensor         # int16 [V]
    has_leading_space: Tensor  # bool [V]
    is_boundary: Tensor        # bool [V]

    def to(self, device: torch.device) -> "ByteLUT":
        return ByteLUT(self.base_bytes.to(device), self.has_leading_space.to(device), self.is_boundary.to(device))

    def count(self, inputs: Tensor, targets: Tensor) -> Tensor:
        extra = self.has_leading_space[targets] & ~self.is_boundary[inputs]
        return self.base_bytes[targets].to(torch.int64) + extra.to(torch.int64)


def build_byte_lut(sp: spm.SentencePieceProcessor, vocab_size: int) -> ByteLUT:
    if sp.vocab_size() != vocab_size:
        raise ValueError(f"VOCAB_SIZE={vocab_size} does not match the tokenizer's vocab size {sp.vocab_size()}")
    if sp.piece_to_id("\u2581") == sp.unk_id():
        raise ValueError("tokenizer has no standalone U+2581 piece: spaces would be byte-fallback encoded and "
                         "the BPB byte count would be wrong")
    base = torch.zeros(vocab_size, dtype=torch.int16)
    space = torch.zeros(vocab_size, dtype=torch.bool)
    boundary = torch.zeros(vocab_size, dtype=torch.bool)
    for i in range(vocab_size):
        if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
            boundary[i] = True
        elif sp.is_byte(i):
            base[i] = 1
        else:
            piece = sp.id_to_piece(i)
            if piece.startswith("\u2581"):
                space[i], piece = True, piece[1:]
            base[i] = len(piece.encode("utf-8"))
    return ByteLUT(base, space, boundary)


def load_tokenizer(cfg: Config) -> spm.SentencePieceProcessor:
    if not Path(cfg.tokenizer_path).is_file():
        raise FileNotFoundError(f"TOKENIZER_PATH={cfg.tokenizer_path} does not exist")
    return spm.SentencePieceProcessor(model_file=cfg.tokenizer_path)


def _manifest_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"data manifest {path} is not valid JSON ({e}); fix or remove it") from e


def check_tokenizer(cfg: Config, sp: spm.SentencePieceProcessor, log: Logger) -> str:
    """Log the tokenizer's sha256 and check it against every manifest that describes DATA_PATH:
    a tokenizer other than the one the shards were made with would score a wrong val_bpb and
    exit 0. Two manifests are understood:
      - DATA_PATH/manifest.json (data/build_sp_dataset.py): the tokenizer's sha256 and piece count;
      - a downloaded export's manifest (DATA_PATH/../../manifest.json, or one cached per repo
        under DATA_PATH/../../manifests/*/): the tokenizer file its entry for this dataset names
        (and its sha256, where the entry has one).
    Returns the sha256."""
    sha = hashlib.sha256(Path(cfg.tokenizer_path).read_bytes()).hexdigest()
    log(f"tokenizer:{cfg.tokenizer_path} sha256:{sha} pieces:{sp.vocab_size()}")
    data = Path(cfg.data_path)
    checked = []
    local = _manifest_json(data / "manifest.json")
    if local is not None and ("tokenizer" in local or "vocab_size" in local):  # not one holding only an audit
        tok = local.get("tokenizer") if isinstance(local.get("tokenizer"), dict) else {}
        want = tok.get("sha256") or local.get("files", {}).get(tok.get("model", ""), {}).get("sha256")
        if want and want != sha:
            raise ValueError(f"TOKENIZER_PATH={cfg.tokenizer_path} (sha256 {sha}) is not the tokenizer of "
                             f"{data / 'manifest.json'}: it names {tok.get('model')} with sha256 {want}")
        if "vocab_size" in local and int(local["vocab_size"]) != sp.vocab_size():
            raise ValueError(f"{data / 'manifest.json'} says vocab_size {local['vocab_size']} but TOKENIZER_PATH="
                             f"{cfg.tokenizer_path} has {sp.vocab_size()} pieces")
        checked.append(str(data / "manifest.json"))
    root = data.resolve().parent.parent
    for path in [root / "manifest.json"] + sorted(root.glob("manifests/*/manifest.json")):
        export = _manifest_json(path)
        entry = next((d for d in (export or {}).get("datasets", []) if d.get("name") == data.resolve().name), None)
        if entry is None:
            continue
        tok = next((t for t in export.get("tokenizers", []) if t.get("name") == entry.get("tokenizer_name")), {})
        want_name = Path(tok.get("model_path") or tok.get("path") or "").name
        if want_name and Path(cfg.tokenizer_path).name != want_name:
            raise ValueError(f"TOKENIZER_PATH={cfg.tokenizer_path} does not match {path}: its dataset {entry['name']} "
                             f"uses the tokenizer {want_name}")
        if tok.get("sha256") and tok["sha256"] != sha:
            raise ValueError(f"TOKENIZER_PATH={cfg.tokenizer_path} (sha256 {sha}) differs from the tokenizer "
                             f"{want_name} of {path} (sha256 {tok['sha256']})")
        checked.append(str(path))
    log(f"tokenizer_manifest_check:{','.join(checked) if checked else 'none (no manifest describes DATA_PATH)'}")
    return sha


def lut_target_bytes(tokens: Tensor, lut: ByteLUT) -> Tensor:
    """Per-position bytes of a token stream by the LUT rule (int32, on the tokens' device)."""
    out = torch.zeros(len(tokens), dtype=torch.int32, device=tokens.device)
    t = tokens.to(lut.base_bytes.device, torch.int64)
    out[1:] = lut.count(t[:-1], t[1:]).to(out.device, torch.int32)
    return out


def sidecar_problems(sidecar: Tensor, lut_bytes: Tensor, where: str) -> list[str]:
    """Plausibility of a byte sidecar against the tokenizer's pieces (lut_bytes: the LUT rule's
    bytes per position). A token's original text is the piece's text up to case (CaseOps: a case
    operator has 0 bytes, a lower-cased piece the length of its original), so a sidecar entry
    above its piece's bytes + 2 is implausible, as is a total far from the pieces' total. An
    all-zero sidecar used to pass, train the whole run, then die in the first eval dividing by
    zero bytes; a sidecar of other shards with the same token count scored silently."""
    lut = lut_bytes[1:].to(torch.int64)
    side = sidecar[1:].to(lut.device, torch.int64)
    total, expected = int(side.sum()), int(lut.sum())
    if total == 0:
        return [f"byte sidecar {where}: every entry is 0 (the val tokens would count no bytes)"]
    problems = []
    if not 0.5 * expected <= total <= 1.5 * expected:
        problems.append(f"byte sidecar {where}: {total} bytes in all, but the tokenizer's pieces spell {expected}: "
                        "outside the plausible 0.5x-1.5x (a sidecar of other shards, or another tokenizer)")
    over = int((side > lut + 2).sum())
    if over > 0.01 * len(side):
        problems.append(f"byte sidecar {where}: {over} of {len(side)} tokens count more bytes than their piece "
                        "spells (+2): it does not belong to these val tokens")
    return problems


def tokenizer_problems(sp: spm.SentencePieceProcessor, val_tokens: Tensor, where: str, sample: int = 16384) -> list[str]:
    """The tokenizer against the shards' own tokens, for data without a manifest: the documents
    among the first `sample` val tokens (split at BOS) decoded and encoded again give the same ids
    when the shards were made with this tokenizer (SentencePiece's encoding of its own decoded
    output is stable), and almost never otherwise (proxy sp1024 shards under the sample's sp1024
    tokenizer: 0% of the tokens, each under its own: 100%). Returns problems."""
    ids, bos = val_tokens[:sample].tolist(), sp.bos_id()
    docs, cur = [], []
    for t in ids:
        if t == bos:
            docs.append(cur)
            cur = []
        else:
            cur.append(t)
    docs = [d for d in docs + [cur] if len(d) > 1]
    total = sum(len(d) for d in docs)
    same = sum(len(d) for d in docs if sp.encode(sp.decode(d)) == d)
    if total and same < 0.5 * total:
        return [f"TOKENIZER_PATH={where}: decoding the first {total} val tokens and encoding them again gives other ids "
                f"for {100 * (1 - same / total):.0f}% of them: the shards were not made with this tokenizer"]
    return []


def load_val_bytes(cfg: Config, val_tokens: Tensor, lut: ByteLUT, bos_id: int, log: Logger) -> Tensor:
    """The per-position byte tensor of the validation stream (see the section comment).

    A sidecar that matches sidecar_glob(cfg) is used whenever present; CASEOPS_ENABLED=1
    requires one. The sidecar must have exactly one entry per val token (all shards, before
    any VAL_MAX_TOKENS cut) and 0 bytes at every BOS; anything else means it belongs to other
    shards, and scoring with it would be silently wrong."""
    side_glob = sidecar_glob(cfg)
    files = sorted(glob.glob(os.path.join(cfg.data_path, side_glob))) if side_glob else []
    if not files:
        if cfg.caseops_enabled:
            raise FileNotFoundError(
                f"CASEOPS_ENABLED=1 but no byte sidecar matches {os.path.join(cfg.data_path, side_glob or '(none)')} "
                "(set VAL_BYTES_GLOB): a LUT over CaseOps pieces would count the case operators as text bytes")
        log("bpb_bytes:lut (tokenizer byte LUT; no byte sidecar found)")
        return lut_target_bytes(val_tokens, lut)
    sidecar = torch.cat([load_shard(f) for f in files])
    n_tokens = sum(shard_length(f) for f in val_token_files(cfg))
    if len(sidecar) != n_tokens:
        raise ValueError(f"byte sidecar {os.path.join(cfg.data_path, side_glob)} has {len(sidecar)} entries but the val "
                         f"shards hold {n_tokens} tokens: the sidecar does not belong to these shards")
    sidecar = sidecar[:len(val_tokens)].to(val_tokens.device, torch.int32)
    at_bos = sidecar[val_tokens == bos_id]
    if at_bos.any():
        raise ValueError(f"byte sidecar {os.path.join(cfg.data_path, side_glob)} gives {int((at_bos != 0).sum())} BOS "
                         "positions a nonzero byte count: it is not aligned with the val tokens")
    problems = sidecar_problems(sidecar, lut_target_bytes(val_tokens, lut), os.path.join(cfg.data_path, side_glob))
    if problems:
        raise InputError(problems)
    log(f"bpb_bytes:sidecar files:{len(files)} glob:{side_glob} bytes:{int(sidecar.sum())}"
        + ("" if cfg.caseops_enabled else " (detected; CASEOPS_ENABLED=0)"))
    return sidecar


# ===== 5. MODEL =====
# Every parameter gets a role when it is created; optimizers, QAT and the exporter route by
# role (never by name patterns):
#   attn, mlp, proj  matrices -> Muon; quantized with QUANT_BITS_{ATTN,MLP,PROJ}
#   embed, bigram    token table and bigram table -> AdamW (embedding LR)
#   head             untied output head -> AdamW (HEAD_LR)
#   scalar           vectors, gains and gates -> AdamW (SCALAR_LR); stored fp16
#   gate             the sparse attention gate's weight -> AdamW (SCALAR_LR); stored int8 per row
#                    (max|row|/127 fp16 scales, as the 1.0611 record stores it)

ROLES = ("attn", "mlp", "proj", "embed", "bigram", "head", "scalar", "softcap", "gate")
MATRIX_ROLES = ("attn", "mlp", "proj")


def with_role(p: nn.Parameter, role: str) -> nn.Parameter:
    assert role in ROLES, role
    p.role = role
    return p


def rms_norm(x: Tensor) -> Tensor:
    return F.rms_norm(x, (x.size(-1),))


def fp16_scale(s: Tensor) -> Tensor:
    """A scale rounded to fp16 (the stored precision); an all-zero (or fp16-underflowing) row gets
    scale 1 and codes 0, not 0/0."""
    s = s.to(torch.float16).float()
    return torch.where(s > 0, s, torch.ones_like(s))


def row_scales(w: Tensor, bits: int, clip: str, sigmas: float = 0.0, importance: Tensor | None = None) -> Tensor:
    """Per-row scale s [rows, 1] of the symmetric grid q*s, q in [-Q, Q] (Q = 2^(bits-1) - 1),
    rounded to fp16 (the stored precision). The clip c = Q*s is
      amax    the row's max |w|;
      search  (GPTQ-lite) the ratio of amax, among a few, with the smallest round-to-nearest error;
      sdclip  k*std(row), k = `sigmas` (records: the compressed size follows the code entropy,
              which a std-relative clip controls directly); `importance` (Hessian-aware
              variant) multiplies each row's clip by 1 + lambda*(importance - 1), precomputed."""
    Q = 2 ** (bits - 1) - 1
    w = w.float()
    if clip == "sdclip":
        if sigmas <= 0:
            raise ValueError(f"QUANT_CLIP=sdclip needs a positive clip k, got {sigmas}")
        c = sigmas * w.std(dim=1, keepdim=True)
        if importance is not None:
            c = c * importance.view(-1, 1)
        return fp16_scale(c / Q)
    amax = w.abs().amax(dim=1, keepdim=True)
    if clip == "amax":
        return fp16_scale(amax / Q)
    best_s = best_err = None
    for ratio in CLIP_RATIOS:
        s = fp16_scale(amax * ratio / Q)
        err = (torch.clamp(torch.round(w / s), -Q, Q) * s - w).square().sum(dim=1, keepdim=True)
        if best_s is None:
            best_s, best_err = s, err
        else:
            best_s, best_err = torch.where(err < best_err, s, best_s), torch.minimum(err, best_err)
    return best_s


def quantize_rows(w: Tensor, bits: int, clip: str, sigmas: float = 0.0) -> tuple[Tensor, Tensor]:
    """Round-to-nearest per-row quantizer shared by QAT and export, so what QAT simulates is
    what gets stored: int8 codes [rows, cols] and fp16 scales [rows]."""
    Q = 2 ** (bits - 1) - 1
    s = row_scales(w, bits, clip, sigmas)
    q = torch.clamp(torch.round(w.float() / s), -Q, Q)
    return q.to(torch.int8), s.squeeze(1).to(torch.float16)


CLIP_RATIOS = (1.0, 0.97, 0.93, 0.88, 0.82, 0.75)  # GPTQ-lite candidates: a row's outliers may cost more than clipping them


def fake_quant(w: Tensor, bits: int, clip: str, sigmas: float = 0.0) -> Tensor:
    with torch.no_grad():
        q, s = quantize_rows(w.reshape(w.size(0), -1), bits, clip, sigmas)
        return (q.float() * s.float()[:, None]).view_as(w).to(w.dtype)


class Linear(nn.Module):
    """Bias-free linear layer with an fp32 master weight (autocast runs it in bf16).
    With QAT, the forward sees the fake-quantized weight `w_q` through a straight-through
    estimator, gated by the `qat_on` buffer: tensors, so flipping QAT on changes the compiled
    graph's output (a Python flag would be constant-folded by torch.compile and never fire).
    `w_q` is refreshed once per optimizer step while QAT is live (refresh_qat), not in every
    micro-batch's forward, and costs nothing before QAT starts."""

    def __init__(self, d_in: int, d_out: int, role: str, cfg: Config, zero_init: bool = False, gain: float = 1.0):
        super().__init__()
        self.weight = with_role(nn.Parameter(torch.empty(d_out, d_in)), role)
        self.bits, self.clip, self.clip_sigmas = cfg.bits(role), cfg.quant_clip, cfg.clip_sigmas(role)
        self.qat = cfg.qat_mode != "off" and self.bits < 16
        self.register_buffer("qat_on", torch.zeros(()), persistent=False)
        self.register_buffer("w_q", torch.zeros(d_out, d_in) if self.qat else torch.zeros(0), persistent=False)
        if zero_init:  # output projections start at zero so each block starts as the identity
            nn.init.zeros_(self.weight)
        elif cfg.ortho_init:
            nn.init.orthogonal_(self.weight, gain=gain)
        else:
            nn.init.uniform_(self.weight, -gain * d_in ** -0.5, gain * d_in ** -0.5)  # torch's default Linear init

    def forward(self, x: Tensor, lora: tuple[Tensor, Tensor] | None = None) -> Tensor:
        w = self.weight
        if self.qat:
            w = w + (self.w_q - w).detach() * self.qat_on
        y = F.linear(x, w.to(x.dtype))
        return y if lora is None else y + adapter(x, lora)


def adapter(x: Tensor, lora: tuple[Tensor, Tensor]) -> Tensor:
    """Per-sequence low-rank adapter of test-time training: x A^T B^T, A [B, r, in], B [B, out, r]."""
    return (x @ lora[0].transpose(1, 2).to(x.dtype)) @ lora[1].transpose(1, 2).to(x.dtype)


class Rotary(nn.Module):
    """Half-split RoPE on the first `dims` dims of each head (partial RoPE); the rest carry
    no position signal. Tables are built once for the longest sequence the model will see.
    With train_len > 0, a forward longer than train_len uses the NTK-aware base
    base * (T / train_len)^(dims / (dims - 2)) (computed for that T: the tables of the
    1.1248 record, whose Rotary was built for 1024 tokens and always ran at 2048)."""

    def __init__(self, head_dim: int, dims: int, base: float, max_len: int, train_len: int = 0):
        super().__init__()
        self.dims, self.base, self.train_len = dims or head_dim, base, train_len
        angles = torch.outer(torch.arange(max_len, dtype=torch.float32), self.inv_freq(base))
        self.register_buffer("cos", angles.cos()[None, :, None, :], persistent=False)  # [1, T, 1, dims/2]
        self.register_buffer("sin", angles.sin()[None, :, None, :], persistent=False)

    def inv_freq(self, base: float, device=None) -> Tensor:
        return base ** (-torch.arange(0, self.dims, 2, dtype=torch.float32, device=device) / self.dims)

    def tables(self, T: int, device, span: int = 0) -> tuple[Tensor, Tensor]:
        """Tables for positions 0..T-1. span: the longest distance attention spans (default T; a
        packed row of many TRAIN_SEQ_LEN segments spans only TRAIN_SEQ_LEN), which is what the NTK
        rule compares with train_len: RoPE angles only ever meet as differences."""
        span = span or T
        if self.train_len and span > self.train_len:
            base = self.base * (span / self.train_len) ** (self.dims / (self.dims - 2))
            angles = torch.outer(torch.arange(T, dtype=torch.float32, device=device), self.inv_freq(base, device))
            return angles.cos()[None, :, None, :], angles.sin()[None, :, None, :]
        return self.cos[:, :T], self.sin[:, :T]

    def forward(self, x_BTHD: Tensor, span: int = 0) -> Tensor:
        cos, sin = self.tables(x_BTHD.size(1), x_BTHD.device, span)
        cos, sin = cos.to(x_BTHD.dtype), sin.to(x_BTHD.dtype)
        rot, rest = x_BTHD[..., :self.dims], x_BTHD[..., self.dims:]
        x1, x2 = rot.chunk(2, dim=-1)
        return torch.cat([x1 * cos + x2 * sin, x2 * cos - x1 * sin, rest], dim=-1)


FLASH_ATTN_FUNC = None  # flash_attn_interface.flash_attn_func once ATTN_BACKEND resolves to fa3
FLASH_ATTN_VARLEN_FUNC = None  # and its flash_attn_varlen_func (document-masked attention on fa3)


def resolve_attn_backend(cfg: Config, device: torch.device) -> str:
    """ATTN_BACKEND -> the kernel that runs: a named backend that cannot run is an error; auto
    takes fa3 on CUDA when flash_attn_interface imports, else flex where attention is
    document-masked (block-sparse, GQA without repeating K/V), else sdpa (CPU: always sdpa)."""
    global FLASH_ATTN_FUNC, FLASH_ATTN_VARLEN_FUNC
    want = cfg.attn_backend
    if want == "sdpa" or (want == "auto" and device.type != "cuda"):
        return "sdpa"
    if want == "flex" or (want == "auto" and cfg.attn_doc_mask and not importable("flash_attn_interface")):
        if device.type != "cuda":  # torch's FlexAttention refuses to build a backward on CPU (training, TTT)
            raise ValueError(f"ATTN_BACKEND=flex needs a CUDA device (FlexAttention has no CPU backward), not {device.type}")
        if not importable("torch.nn.attention.flex_attention"):
            raise ImportError(f"ATTN_BACKEND={want} picked flex, but torch {torch.__version__} has no torch.nn.attention.flex_attention")
        return "flex"
    try:
        from flash_attn_interface import flash_attn_func, flash_attn_varlen_func
    except ImportError as e:
        if want == "fa3":
            raise ImportError(f"ATTN_BACKEND=fa3 but flash_attn_interface does not import ({e}); "
                              "install FlashAttention-3 or set ATTN_BACKEND=flex or sdpa") from None
        return "sdpa"
    if device.type != "cuda":
        raise ValueError(f"ATTN_BACKEND=fa3 needs a CUDA device, not {device.type}")
    FLASH_ATTN_FUNC, FLASH_ATTN_VARLEN_FUNC = flash_attn_func, flash_attn_varlen_func
    return "fa3"


def importable(module: str) -> bool:
    import importlib
    try:
        importlib.import_module(module)
        return True
    except ImportError:
        return False


def set_attn_backend(model: nn.Module, backend: str) -> None:
    for m in model.modules():
        if isinstance(m, (Attention, GPT)):
            m.backend = backend


class AttnLayout(NamedTuple):
    """Where document-masked attention may look (ATTN_DOC_MASK=1), built once per forward by
    attention_layout and shared by every layer. Exactly one form is set:
      mask        SDPA over rows: bool [B, 1, T, T], True where query i may attend key j;
      block_mask  SDPA over a packed row [1, N]: queries in blocks of `span`, each attending the
                  keys of its own block and the one before, bool [N/span, 1, span, 2*span] (exact,
                  since no segment is longer than span);
      cu_seqlens  FA3 varlen over the flattened batch: int32 segment starts, then B*T, padded
                  with B*T (empty segments) to a length fixed by the shape (fa3_segment_cap);
      flex        FlexAttention's BlockMask (rows and packed rows alike; flex_block_mask).
    span is the longest segment: the NTK RoPE rule and FA3's max_seqlen read it."""
    span: int
    mask: Tensor | None = None
    block_mask: Tensor | None = None
    cu_seqlens: Tensor | None = None
    flex: object | None = None


FLEX_BLOCK = 128  # FlexAttention's sparse block size (its kernels' default tile)


def flex_block_mask(seg: Tensor):
    """Document-causal BlockMask for segment ids seg [B, T] (non-decreasing along each row):
    query i may attend key j <= i of its own segment. Built from each 128-block's first and
    last segment id, O((T/128)^2) work per row, never a [T, T] mask: a key block j < i is
    touched when its last id equals query block i's first, and full when its first id equals
    block i's last; the diagonal block is partial (causal). Fixed shapes for a fixed [B, T],
    so batches with other document boundaries reuse the compiled graph."""
    from torch.nn.attention.flex_attention import BlockMask
    B, T = seg.shape
    nb = -(-T // FLEX_BLOCK)
    padded = torch.cat([seg, seg[:, -1:].expand(B, nb * FLEX_BLOCK - T)], 1)
    first, last = padded[:, ::FLEX_BLOCK], padded[:, FLEX_BLOCK - 1::FLEX_BLOCK]  # [B, nb]
    i = torch.arange(nb, device=seg.device)
    below = i[:, None] > i[None, :]                                               # [q block, kv block]
    full = below & (first[:, None, :] == last[:, :, None])
    partial = (below & (last[:, None, :] == first[:, :, None]) & ~full) | (i[:, None] == i[None, :])

    def listed(m: Tensor) -> tuple[Tensor, Tensor]:  # per query block: how many kv blocks, and which (listed first)
        return (m.sum(-1, dtype=torch.int32)[:, None],
                m.to(torch.int8).argsort(dim=-1, descending=True, stable=True).to(torch.int32)[:, None])

    def doc_causal(b, h, q, k):
        return (q >= k) & (seg[b, q] == seg[b, k])
    return BlockMask.from_kv_blocks(*listed(partial), *listed(full), BLOCK_SIZE=FLEX_BLOCK, mask_mod=doc_causal,
                                    seq_lengths=(T, T))


def fa3_segment_cap(B: int, T: int) -> int:
    """Length of FA3's cu_seqlens for a [B, T] batch: room for every row start plus one document
    per 128 tokens, in steps of 64 (SP8192 FineWeb: 669 tokens per document on average, at most
    320 segments in a 48 x 2048 micro-batch, against 832 here). A fixed length keeps the compiled
    forward's shapes static (the records pad to buckets of 64 too); a fuller batch is counted
    (GPT.fa3_overflow) and stops the run with an error, never silently merged."""
    return 64 * -(-(B + B * T // 128 + 1) // 64)


def segment_starts(ids: Tensor, bos_id: int, cap: int) -> Tensor:
    """bool [B, T]: where an attention segment starts: each row's first token, every BOS, and
    every cap-th token after a document's start (the VarLen records cut long documents so;
    with cap >= T only rows and documents start segments)."""
    pos = torch.arange(ids.size(1), device=ids.device)
    doc_start = torch.where((ids == bos_id) | (pos == 0), pos, 0).cummax(1).values
    return (pos - doc_start) % cap == 0


def attention_layout(ids: Tensor, bos_id: int, backend: str, packed_span: int = 0) -> AttnLayout:
    """The AttnLayout of document-masked attention for ids [B, T]: segments are documents
    (cut every packed_span tokens for a packed row [1, N], TRAIN_LOADER=docpack)."""
    B, T = ids.shape
    span = packed_span or T
    starts = segment_starts(ids, bos_id, span)
    if backend == "fa3":  # nonzero_static: a fixed length, no host sync; pads with B*T (empty segments)
        cu = torch.nonzero_static(starts.flatten(), size=fa3_segment_cap(B, T), fill_value=B * T).flatten()
        return AttnLayout(span, cu_seqlens=torch.cat([cu, cu.new_full((1,), B * T)]).to(torch.int32))
    seg = starts.cumsum(1)  # segment index of every position
    if backend == "flex":
        return AttnLayout(span, flex=flex_block_mask(seg))
    if not packed_span:
        causal = torch.ones(T, T, dtype=torch.bool, device=ids.device).tril()
        return AttnLayout(span, mask=(causal[None] & (seg[:, :, None] == seg[:, None, :])).unsqueeze(1))
    if B != 1 or T % span:
        raise ValueError(f"a packed row is [1, k*{span}] tokens, not {list(ids.shape)}")
    q_seg = seg.view(-1, span)                                                    # [nb, span]
    k_seg = torch.cat([seg.new_full((span,), -1), seg[0]]).unfold(0, 2 * span, span)  # [nb, 2*span]: previous block, own block
    a, c = torch.arange(span, device=ids.device), torch.arange(2 * span, device=ids.device)
    causal = c[None, :] <= a[:, None] + span                                      # key (b-1)*span+c <= query b*span+a
    return AttnLayout(span, block_mask=((q_seg[:, :, None] == k_seg[:, None, :]) & causal).unsqueeze(1))


def masked_sdpa(q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
    """SDPA over [B, H, T, D] queries and [B, H_kv, T, D] keys/values under a bool mask. On CUDA
    the flash kernel takes no mask and the memory-efficient kernel takes a mask but not grouped
    KV heads, so a masked call with enable_gqa falls back to the math kernel, which materializes
    [B, H, T, T] scores (GBs per layer at the default's 48 x 2048 rows). Repeating K/V to the
    query heads (enable_gqa's own semantics: head i reads KV head i // (H/H_kv)) costs 2x their
    memory at 8/4 heads and keeps the masked call on the efficient kernel."""
    if k.size(1) != q.size(1):
        rep = q.size(1) // k.size(1)
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def blocked_attention(q: Tensor, k: Tensor, v: Tensor, block_mask: Tensor, span: int) -> Tensor:
    """Attention of a packed row [1, N, H, D] whose segments are at most `span` long: every
    query block of `span` positions attends its own key block and the previous one under
    block_mask (AttnLayout), so the cost is 2*N*span, not N^2."""
    N = q.size(1)
    blocks = lambda t: t.reshape(N // span, span, *t.shape[2:])
    with_prev = lambda t: torch.cat([F.pad(t, (0, 0, 0, 0, 0, 0, 1, 0))[:-1], t], 1)  # [nb, 2*span, H, D]
    qb, kb, vb = blocks(q), with_prev(blocks(k)), with_prev(blocks(v))
    y = masked_sdpa(qb.transpose(1, 2), kb.transpose(1, 2), vb.transpose(1, 2), block_mask)
    return y.transpose(1, 2).reshape(q.shape)


class Attention(nn.Module):
    def __init__(self, cfg: Config, max_len: int, xsa: bool):
        super().__init__()
        self.h, self.h_kv, self.hd, self.xsa = cfg.num_heads, cfg.num_kv_heads, cfg.model_dim // cfg.num_heads, xsa
        self.c_q = Linear(cfg.model_dim, self.h * self.hd, "attn", cfg)
        self.c_k = Linear(cfg.model_dim, self.h_kv * self.hd, "attn", cfg)
        self.c_v = Linear(cfg.model_dim, self.h_kv * self.hd, "attn", cfg)
        self.proj = Linear(self.h * self.hd, cfg.model_dim, "attn", cfg, zero_init=True)
        self.q_gain = with_role(nn.Parameter(torch.full((self.h,), cfg.qk_gain_init)), "scalar")
        self.rotary = Rotary(self.hd, cfg.rope_dims, cfg.rope_base, max_len, cfg.rope_train_seq_len)
        # Attention gates (one scalar per head and position, from the first GATE_WINDOW dims of
        # the attention input or raw query): the output gate 2*sigmoid(.) starts as the identity;
        # the sparse gate sigmoid(scale * .) starts at 0.5 and has its own role ("gate"): the
        # exporter stores it int8 per row instead of fp16.
        self.backend = "sdpa"  # set_attn_backend() picks the kernel for the device
        self.gate_window, self.gate_src = cfg.gate_window, cfg.attn_out_gate_src
        self.attn_gate_proj = self.attn_gate_w = None
        if cfg.attn_out_gate_enabled:
            self.attn_gate_proj = with_role(nn.Parameter(torch.zeros(self.h, cfg.gate_window)), "scalar")
        if cfg.sparse_attn_gate_enabled:
            self.attn_gate_w = with_role(nn.Parameter(torch.randn(self.h, cfg.gate_window) * cfg.sparse_attn_gate_init_std), "gate")
            self.gate_scale = cfg.sparse_attn_gate_scale

    def head_gate(self, x: Tensor, q_raw: Tensor) -> Tensor | None:
        """The per-head gate [B, T, H] of whichever attention gate is on, else None."""
        if self.attn_gate_proj is not None:
            u = (q_raw if self.gate_src == "q" else x)[..., :self.gate_window]
            return 2 * torch.sigmoid(F.linear(u, self.attn_gate_proj.to(u.dtype)))
        if self.attn_gate_w is not None:
            u = x[..., :self.gate_window]
            return torch.sigmoid(self.gate_scale * F.linear(u, self.attn_gate_w.to(u.dtype)))
        return None

    def forward(self, x: Tensor, lora: dict, layout: AttnLayout | None = None) -> Tensor:
        """layout: document-masked attention (AttnLayout); None is plain causal attention."""
        B, T, _ = x.shape
        q_raw = self.c_q(x, lora.get("q"))
        gate = self.head_gate(x, q_raw)
        q = q_raw.view(B, T, self.h, self.hd)
        k = self.c_k(x, lora.get("k")).view(B, T, self.h_kv, self.hd)
        v = self.c_v(x, lora.get("v")).view(B, T, self.h_kv, self.hd)
        span = layout.span if layout is not None else T
        q, k = self.rotary(rms_norm(q), span), self.rotary(rms_norm(k), span)  # QK-norm, then RoPE
        q = q * self.q_gain.to(q.dtype)[None, None, :, None]      # learned per-head temperature
        if layout is not None and layout.cu_seqlens is not None:  # FA3 varlen over the flattened batch
            flat = lambda t: t.reshape(B * T, *t.shape[2:]).to(torch.bfloat16)  # FA3 takes bf16
            y = FLASH_ATTN_VARLEN_FUNC(flat(q), flat(k), flat(v), layout.cu_seqlens, layout.cu_seqlens,
                                       layout.span, layout.span, causal=True)
            y = (y[0] if isinstance(y, tuple) else y).view(B, T, self.h, self.hd)
        elif layout is not None and layout.flex is not None:  # FlexAttention: [B, H, T, D], GQA without repeating K/V
            from torch.nn.attention.flex_attention import flex_attention
            dt = v.dtype  # q/k leave the norm in fp32 under autocast; flex wants one dtype
            y = flex_attention(q.to(dt).transpose(1, 2), k.to(dt).transpose(1, 2), v.transpose(1, 2), block_mask=layout.flex,
                               enable_gqa=self.h != self.h_kv).transpose(1, 2)
        elif layout is not None and layout.block_mask is not None:
            y = blocked_attention(q, k, v, layout.block_mask, layout.span)
        elif layout is not None:
            y = masked_sdpa(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), layout.mask).transpose(1, 2)
        elif self.backend == "fa3":  # FlashAttention-3 takes [B, T, H, D] bf16 and does GQA itself
            dt = torch.bfloat16
            y = FLASH_ATTN_FUNC(q.to(dt), k.to(dt), v.to(dt), causal=True)
            y = y[0] if isinstance(y, tuple) else y  # some releases also return the log-sum-exp
        else:
            y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                               is_causal=True, enable_gqa=self.h != self.h_kv).transpose(1, 2)
        if self.xsa:
            # Exclusive self-attention (arXiv:2603.09078): remove from each head's output its
            # component along its own token's (normalized) value. GQA form: broadcast each
            # KV head over its query group instead of repeating v.
            y = y.reshape(B, T, self.h_kv, self.h // self.h_kv, self.hd)
            vn = F.normalize(v, dim=-1).to(y.dtype).unsqueeze(3)  # autocast runs the norm in fp32; stay bf16
            y = y - (y * vn).sum(-1, keepdim=True) * vn
        if gate is not None:
            y = y.reshape(B, T, self.h, self.hd) * gate.to(y.dtype).unsqueeze(-1)
        out = self.proj(y.reshape(B, T, self.h * self.hd))
        return out if "o" not in lora else out + adapter(x, lora["o"])  # TTT: the record's o adapter reads the input


class MLP(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.fc = Linear(cfg.model_dim, cfg.mlp_hidden, "mlp", cfg)
        self.proj = Linear(cfg.mlp_hidden, cfg.model_dim, "mlp", cfg, zero_init=True)
        self.slope = cfg.leaky_relu_sq_slope if cfg.mlp_act == "leaky_relu2" else None

    def forward(self, x: Tensor, lora: dict) -> Tensor:
        u = self.fc(x, lora.get("up"))
        u = F.relu(u) if self.slope is None else F.leaky_relu(u, self.slope)
        out = self.proj(u.square(), lora.get("down"))
        return out if "mlp" not in lora else out + adapter(x, lora["mlp"])


class Block(nn.Module):
    def __init__(self, cfg: Config, max_len: int, layer: int):
        super().__init__()
        d = cfg.model_dim
        self.attn = Attention(cfg, max_len, xsa=layer >= cfg.num_layers - cfg.xsa_last_n)
        self.mlp = MLP(cfg)
        self.ln_scale = (layer + 1) ** -0.5 if cfg.ln_scale else 1.0
        self.attn_scale = with_role(nn.Parameter(torch.ones(d)), "scalar")
        self.mlp_scale = with_role(nn.Parameter(torch.ones(d)), "scalar")
        # x_in = m0*x + m1*x0: each block may re-read the embedding output x0 directly.
        # "phase" init (overtone record): early layers lean on x0, late ones on x.
        p = 1 / (1 + math.exp(-3 * (layer / max(cfg.num_layers - 1, 1) - 0.5))) if cfg.resid_mix_init == "phase" else 1.0
        self.resid_mix = with_role(nn.Parameter(torch.stack([torch.full((d,), p), torch.full((d,), 1 - p)])), "scalar")

    def forward(self, x: Tensor, x0: Tensor, lora: dict, layout: AttnLayout | None = None) -> Tensor:
        mix = self.resid_mix.to(x.dtype)
        x = mix[0] * x + mix[1] * x0
        x = x + self.attn_scale.to(x.dtype) * self.attn(rms_norm(x) * self.ln_scale, lora, layout)
        return x + self.mlp_scale.to(x.dtype) * self.mlp(rms_norm(x) * self.ln_scale, lora)

    def forward_lanes(self, lanes: tuple[Tensor, Tensor], x0: Tensor, lora: dict, post: Tensor,
                      resid: Tensor, layout: AttnLayout | None = None) -> tuple[Tensor, Tensor]:
        """Two-lane parallel residual block (the 1.0611 record's form): attention reads lane 0
        (mixed with x0), the MLP reads lane 1, both from the lanes as they were before the
        block, and each lane takes its own learned mix of both outputs:
          l_j <- resid[j] * l_j + post[0, j] * attn_out + post[1, j] * mlp_out."""
        l0, l1 = lanes
        mix = self.resid_mix.to(l0.dtype)
        a = self.attn_scale.to(l0.dtype) * self.attn(rms_norm(mix[0] * l0 + mix[1] * x0) * self.ln_scale, lora, layout)
        m = self.mlp_scale.to(l1.dtype) * self.mlp(rms_norm(l1) * self.ln_scale, lora)
        P, R = post.to(l0.dtype), resid.to(l0.dtype)
        return R[0] * l0 + P[0, 0] * a + P[1, 0] * m, R[1] * l1 + P[0, 1] * a + P[1, 1] * m


class BigramHash(nn.Module):
    """Hashed (previous, current) token-pair embedding, projected to the model width and
    scaled. Positions with no previous token in their document (sequence start, BOS) use the
    reserved last bucket, so nothing leaks across a document boundary. The table starts at
    zero and the projection does not, so the branch outputs 0 at init but still learns."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.buckets = cfg.bigram_vocab_size
        self.table = with_role(nn.Parameter(torch.zeros(self.buckets, cfg.bigram_dim)), "bigram")
        self.proj = Linear(cfg.bigram_dim, cfg.model_dim, "proj", cfg, gain=(2 * cfg.num_layers) ** -0.5 if cfg.ortho_init else 1.0)
        self.scale = with_role(nn.Parameter(torch.tensor(0.05)), "scalar")

    def bucket(self, ids: Tensor, has_prev: Tensor) -> Tensor:
        prev = F.pad(ids[:, :-1], (1, 0))
        h = torch.bitwise_xor(36313 * ids, 27191 * prev) % (self.buckets - 1)  # int64: no overflow for any vocab
        return torch.where(has_prev, h, self.buckets - 1)

    def forward(self, ids: Tensor, has_prev: Tensor) -> Tensor:
        return self.scale * self.proj(F.embedding(self.bucket(ids, has_prev), self.table))


class SmearGate(nn.Module):
    """Mixes each position's embedding with the previous position's, only within a document.
    blend (1.14-era records): x + sigma(g) * (x_prev - x), g per dim, init 0 (an even mix).
    additive (top record): x + lam * sigma(W x[:12]) * x_prev, W and lam zero-init (identity).
    At positions without a previous token in the document both are the identity."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.kind = cfg.smear_gate
        if self.kind == "blend":
            self.gate = with_role(nn.Parameter(torch.zeros(cfg.model_dim)), "scalar")
        else:
            self.gate = with_role(nn.Parameter(torch.zeros(1, min(12, cfg.model_dim))), "scalar")
            self.lam = with_role(nn.Parameter(torch.zeros(())), "scalar")

    def forward(self, x: Tensor, has_prev: Tensor) -> Tensor:
        x_prev = F.pad(x[:, :-1], (0, 0, 1, 0))
        m = has_prev.unsqueeze(-1).to(x.dtype)
        if self.kind == "blend":
            return x + m * torch.sigmoid(self.gate.to(x.dtype)) * (x_prev - x)
        g = torch.sigmoid(F.linear(x[..., :self.gate.size(1)], self.gate.to(x.dtype)))
        return x + m * self.lam.to(x.dtype) * g * x_prev


def softcap(u: Tensor, c: float) -> Tensor:
    return c * torch.tanh(u / c) if c > 0 else u


CE_CHUNK_LOGITS = 2 ** 24  # logits per chunk of ChunkedSoftcapCE: 64 MB in fp32 (2048 rows at vocab 8192)


class ChunkedSoftcapCE(torch.autograd.Function):
    """mean cross-entropy of softcap(x @ w^T) over rows of x [N, D], in row chunks of about
    64 MB of fp32 logits: forward keeps only each row's log-sum-exp, backward recomputes each
    chunk's logits, so no fp32 [N, V] tensor (or its tanh and softmax copies) ever exists. The
    matmuls run in x's dtype (bf16 under autocast, as the plain path's head), the rest in fp32."""

    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor, y: Tensor, c: float) -> Tensor:
        rows = max(1, CE_CHUNK_LOGITS // w.size(0))
        lse, loss = [], x.new_zeros((), dtype=torch.float32)
        with torch.autocast(x.device.type, enabled=False):
            for i in range(0, x.size(0), rows):
                z = softcap(F.linear(x[i:i + rows], w).float(), c)
                lse.append(z.logsumexp(-1))
                loss = loss + (lse[-1] - z.gather(1, y[i:i + rows, None]).squeeze(1)).sum()
        ctx.save_for_backward(x, w, y, torch.cat(lse))
        ctx.c, ctx.rows = c, rows
        return loss / x.size(0)

    @staticmethod
    def backward(ctx, g: Tensor):
        x, w, y, lse = ctx.saved_tensors
        c, rows, gx, gw = ctx.c, ctx.rows, torch.empty_like(x), torch.zeros(w.shape, dtype=torch.float32, device=w.device)
        with torch.autocast(x.device.type, enabled=False):
            for i in range(0, x.size(0), rows):
                xc, u = x[i:i + rows], F.linear(x[i:i + rows], w).float()
                t = torch.tanh(u / c) if c > 0 else None
                p = torch.exp((c * t if c > 0 else u) - lse[i:i + rows, None])
                p.scatter_add_(1, y[i:i + rows, None], p.new_full((xc.size(0), 1), -1.0))  # softmax - onehot
                du = (p * (g / x.size(0)) * (1 - t * t if c > 0 else 1)).to(x.dtype)
                gx[i:i + rows] = du @ w
                gw += (du.t() @ xc).float()
        return gx, gw.to(w.dtype), None, None


TRITON_CE = None  # the Triton softcap cross-entropy op, built on first CUDA use (triton_softcap_ce)


def triton_softcap_ce():
    """torch.library op pg::softcap_ce(logits [N, V] bf16, y [N], c) -> mean loss, with its
    backward: two Triton kernels, one program per row streaming the vocab in blocks (online
    log-sum-exp), softcap applied on the fly; backward writes the bf16 logit gradient. Only
    the bf16 logits of the micro-batch exist, never fp32 ones. None when triton does not import."""
    global TRITON_CE
    if TRITON_CE is not None or not importable("triton"):
        return TRITON_CE
    import triton
    import triton.language as tl

    @triton.jit
    def fwd_kernel(logits, stride, y, lse_out, loss_out, V, c, CAP: tl.constexpr, BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        base = logits + row * stride
        m, s = -float("inf"), 0.0
        for start in range(0, V, BLOCK):
            cols = start + tl.arange(0, BLOCK)
            u = tl.load(base + cols, mask=cols < V, other=0.0).to(tl.float32)
            z = c * (2 * tl.sigmoid(2 * u / c) - 1) if CAP else u  # tanh via sigmoid: in every triton release
            z = tl.where(cols < V, z, -float("inf"))
            m_new = tl.maximum(m, tl.max(z, 0))
            s = s * tl.exp(m - m_new) + tl.sum(tl.exp(z - m_new), 0)
            m = m_new
        lse = m + tl.log(s)
        u = tl.load(base + tl.load(y + row)).to(tl.float32)
        tl.store(lse_out + row, lse)
        tl.store(loss_out + row, lse - (c * (2 * tl.sigmoid(2 * u / c) - 1) if CAP else u))

    @triton.jit
    def bwd_kernel(logits, stride, y, lse_in, g, grad, V, c, CAP: tl.constexpr, BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        base, lse, target, scale = logits + row * stride, tl.load(lse_in + row), tl.load(y + row), tl.load(g)
        for start in range(0, V, BLOCK):
            cols = start + tl.arange(0, BLOCK)
            u = tl.load(base + cols, mask=cols < V, other=0.0).to(tl.float32)
            z = c * (2 * tl.sigmoid(2 * u / c) - 1) if CAP else u
            p = tl.exp(z - lse) - tl.where(cols == target, 1.0, 0.0)
            dz = p * scale * ((1 - (z / c) * (z / c)) if CAP else 1.0)
            tl.store(grad + row * V + cols, dz.to(grad.dtype.element_ty), mask=cols < V)

    def launch(kernel, logits, *args, c):
        kernel[(logits.size(0),)](logits, logits.stride(0), *args, logits.size(1), c, CAP=c > 0, BLOCK=1024)

    @torch.library.custom_op("pg::softcap_ce", mutates_args=())
    def op(logits: Tensor, y: Tensor, c: float) -> tuple[Tensor, Tensor]:
        lse, loss = (torch.empty(logits.size(0), device=logits.device, dtype=torch.float32) for _ in range(2))
        launch(fwd_kernel, logits, y, lse, loss, c=c)
        return loss.mean(), lse

    @op.register_fake
    def _(logits, y, c):
        return logits.new_empty((), dtype=torch.float32), logits.new_empty(logits.size(0), dtype=torch.float32)

    @torch.library.custom_op("pg::softcap_ce_backward", mutates_args=())
    def op_backward(logits: Tensor, y: Tensor, lse: Tensor, g: Tensor, c: float) -> Tensor:
        grad = torch.empty_like(logits)
        launch(bwd_kernel, logits, y, lse, (g / logits.size(0)).float().reshape(1), grad, c=c)
        return grad

    @op_backward.register_fake
    def _(logits, y, lse, g, c):
        return torch.empty_like(logits)

    def setup(ctx, inputs, output):
        ctx.save_for_backward(inputs[0], inputs[1], output[1])
        ctx.c = inputs[2]

    def backward(ctx, g, g_lse):
        logits, y, lse = ctx.saved_tensors
        return op_backward(logits, y, lse, g, ctx.c), None, None

    op.register_autograd(backward, setup_context=setup)
    op.kernels = dict(fwd=fwd_kernel, bwd=bwd_kernel)  # for bench/check_triton_ce.py
    TRITON_CE = op
    return TRITON_CE


def softcap_cross_entropy(x: Tensor, w: Tensor, y: Tensor, c: float) -> Tensor:
    """The training loss, FUSED_CE=1: mean cross-entropy of softcap(x @ w^T) against y."""
    if x.is_cuda and triton_softcap_ce() is not None:
        logits = F.linear(x, w)
        return TRITON_CE(logits.contiguous(), y, c)[0]
    return ChunkedSoftcapCE.apply(x, w, y, c)


def virtual_layers(cfg: Config, looping: bool) -> list[int]:
    """The physical block run at each virtual layer slot. With depth recurrence on, the
    segment LOOP_START..LOOP_END runs NUM_LOOPS+1 times: 11 blocks, loop 3-5 twice more
    -> [0,1,2,3,4,5,3,4,5,3,4,5,6,7,8,9,10] (17 slots)."""
    if not (looping and cfg.num_loops):
        return list(range(cfg.num_layers))
    seg = list(range(cfg.loop_start, cfg.loop_end + 1))
    return list(range(cfg.loop_start)) + seg * (cfg.num_loops + 1) + list(range(cfg.loop_end + 1, cfg.num_layers))


class GPT(nn.Module):
    """Tied-embedding GPT with U-Net skips over the virtual layer sequence: the first half of
    the slots push their outputs, the second half pops them (LIFO) and merges them with learned
    per-dim weights (optionally sigmoid-gated). With depth recurrence the sequence repeats a
    block segment once `looping` is set; skip parameters are sized for the looped sequence,
    and the plain one uses their first entries."""

    def __init__(self, cfg: Config, max_len: int, bos_id: int = 1):
        super().__init__()
        self.cfg, self.bos_id = cfg, bos_id
        self.backend = "sdpa"  # the attention kernel, set with the blocks' by set_attn_backend
        self.register_buffer("fa3_overflow", torch.zeros((), dtype=torch.int64), persistent=False)  # fa3_segment_cap
        self.tok_emb = with_role(nn.Parameter(embedding_init(cfg).to(torch.bfloat16 if cfg.embed_dtype == "bf16" else torch.float32)), "embed")
        self.bigram = BigramHash(cfg) if cfg.bigram_vocab_size else None
        self.smear = SmearGate(cfg) if cfg.smear_gate != "off" else None
        self.blocks = nn.ModuleList(Block(cfg, max_len, i) for i in range(cfg.num_layers))
        # A plain attribute (not a buffer): torch.compile guards on it, so the plain and the
        # looped forward are two cached graphs, both built during the warmup.
        self.looping = cfg.num_loops > 0
        n_virtual = len(virtual_layers(cfg, True))
        n_skip = min(n_virtual // 2, n_virtual - n_virtual // 2)
        self.skip_weights = with_role(nn.Parameter(torch.ones(n_skip, cfg.model_dim)), "scalar")
        self.skip_gates = None
        if cfg.skip_gates_enabled:
            self.skip_gates = with_role(nn.Parameter(torch.zeros(n_skip, cfg.model_dim)), "scalar")
        self.parallel_post = self.parallel_resid = None
        if cfg.parallel_start_layer:  # allocated for every block, used by the two-lane ones
            self.parallel_post = with_role(nn.Parameter(torch.ones(cfg.num_layers, 2, 2)), "scalar")
            self.parallel_resid = with_role(nn.Parameter(torch.full((cfg.num_layers, 2), 1.1)), "scalar")
        self.backout = with_role(nn.Parameter(torch.tensor(cfg.backout_init)), "scalar") if cfg.backout else None
        # ASYM_LOGIT_RESCALE: (positive, negative) caps. requires_grad=False keeps them out of training
        # (no optimizer has the role; training sees the plain LOGIT_SOFTCAP); TTT's global phases,
        # which train every base weight, move them.
        self.softcap = None
        if cfg.asym_logit_rescale:
            self.softcap = with_role(nn.Parameter(torch.full((2,), cfg.logit_softcap), requires_grad=False), "softcap")
        self.head_in = nn.Identity()  # no weights: marks the output head's input for the GPTQ Hessian hooks
        self.lm_head = None
        if not cfg.tie_embeddings:
            self.lm_head = with_role(nn.Parameter(torch.zeros(cfg.vocab_size, cfg.model_dim)), "head")

    def forward(self, ids: Tensor, targets: Tensor | None = None, lora: dict | None = None,
                score_from: int = 0, packed: bool = False, doc_mask: bool = True) -> Tensor:
        """The only path through the network (training, every eval, TTT): logits [B, T, V]
        (fp32, softcapped), or the mean cross-entropy when targets are given. `lora` maps
        'blocks.<i>.<target>' and 'head' to per-sequence adapters. score_from=k returns the
        logits of positions k.. only: a sliding-window eval scores the last stride positions
        of a window, and the head and fp32 logits of the others would be wasted work.
        packed=True: ids is one packed training row [1, N] (TRAIN_LOADER=docpack), whose
        attention segments are cut every TRAIN_SEQ_LEN tokens. doc_mask=False: plain causal
        attention even with ATTN_DOC_MASK=1 (GPTQ_CALIBRATION_DOC_MASK=0)."""
        lora = lora or {}
        pos = torch.arange(ids.size(1), device=ids.device)
        has_prev = (pos > 0) & (ids != self.bos_id)  # a previous token exists in this document
        x = F.embedding(ids, self.tok_emb)
        # Under autocast (AUTOCAST=bf16, CPU or CUDA) the embedding output and the whole residual
        # stream are kept in the autocast dtype, as the records do; AUTOCAST=off is fp32 end to end.
        stream_dtype = torch.get_autocast_dtype(ids.device.type) if torch.is_autocast_enabled(ids.device.type) else x.dtype
        x = x.to(stream_dtype)
        if self.bigram is not None:
            x = x + self.bigram(ids, has_prev).to(x.dtype)
        if self.smear is not None and self.smear.kind == "additive":
            x = self.smear(x, has_prev)
        x = rms_norm(x).to(stream_dtype)
        if self.smear is not None and self.smear.kind == "blend":
            x = self.smear(x, has_prev)
        layout = None
        if self.cfg.attn_doc_mask and doc_mask:
            layout = attention_layout(ids, self.bos_id, self.backend, self.cfg.train_seq_len if packed else 0)
            if layout.cu_seqlens is not None:  # the cap's last slot holds a real start: segments may not fit
                self.fa3_overflow += layout.cu_seqlens[-2] != ids.numel()
        x, h_mid = self.run_blocks(x, lora, layout)
        if self.backout is not None:
            x = x - self.backout.to(x.dtype) * h_mid
        x = self.head_in(rms_norm(x[:, score_from:]))
        head = self.tok_emb if self.lm_head is None else self.lm_head
        if targets is not None and self.cfg.fused_ce and "head" not in lora and self.softcap is None:
            return softcap_cross_entropy(x.flatten(0, 1), head.to(x.dtype), targets.reshape(-1), self.cfg.logit_softcap)
        logits = F.linear(x, head.to(x.dtype))
        if "head" in lora:
            logits = logits + adapter(x, lora["head"])
        logits = logits.float()
        if self.softcap is not None:  # tanh keeps the sign: each cap shapes its own half
            cp, cn = self.softcap[0], self.softcap[1]
            logits = cp * torch.tanh(logits.clamp_min(0) / cp) + cn * torch.tanh(logits.clamp_max(0) / cn)
        elif self.cfg.logit_softcap > 0:
            c = self.cfg.logit_softcap
            if torch.is_grad_enabled():
                logits = c * torch.tanh(logits / c)
            else:  # eval: in place, so a [B*T, V] fp32 buffer exists once, not three times (eager CPU)
                logits = logits.div_(c).tanh_().mul_(c)
        if targets is None:
            return logits
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))


    def merge_lanes(self, lanes: tuple[Tensor, Tensor]) -> Tensor:
        kind = self.cfg.parallel_final_lane
        return lanes[0] if kind == "attn" else lanes[1] if kind == "mlp" else 0.5 * (lanes[0] + lanes[1])

    def run_blocks(self, x: Tensor, lora: dict, layout: AttnLayout | None = None) -> tuple[Tensor, Tensor]:
        """The blocks over the virtual layer sequence; returns the stream and the middle slot's
        output (for Backout). Decoder slot k merges the k-th popped encoder output. From the
        first decoder slot whose block index is >= PARALLEL_START_LAYER on, the stream runs as
        two lanes (skips merge into lane 0) and leaves as PARALLEL_FINAL_LANE."""
        order = virtual_layers(self.cfg, self.looping)
        n_enc, start = len(order) // 2, self.cfg.parallel_start_layer
        x0, skips, h_mid, lanes = x, [], None, None
        per_slot = any(key.startswith("slots.") for key in lora)  # TTT adapters per virtual slot (make_lora)
        for slot, i in enumerate(order):
            k = slot - n_enc
            if lanes is None and start and k >= 0 and i >= start:  # split first: the skip below joins lane 0 only
                lanes = (x, x)
            if 0 <= k < len(self.skip_weights) and skips:
                skip = self.skip_weights[k].to(x.dtype) * skips.pop()
                target = x if lanes is None else lanes[0]
                if self.skip_gates is not None:
                    target = torch.lerp(skip, target, torch.sigmoid(self.skip_gates[k].to(x.dtype)))
                else:
                    target = target + skip
                x, lanes = (target, None) if lanes is None else (x, (target, lanes[1]))
            prefix = f"slots.{slot}." if per_slot else f"blocks.{i}."
            block_lora = {key.split(".")[-1]: v for key, v in lora.items() if key.startswith(prefix)}
            if lanes is None:
                x = self.blocks[i](x, x0, block_lora, layout)
            else:
                lanes = self.blocks[i].forward_lanes(lanes, x0, block_lora, self.parallel_post[i], self.parallel_resid[i], layout)
            if slot < n_enc:
                skips.append(x)
            if slot == len(order) // 2:
                h_mid = x if lanes is None else self.merge_lanes(lanes)
        return (x if lanes is None else self.merge_lanes(lanes)), h_mid


def unwrap(model: nn.Module) -> nn.Module:
    """The module under any torch.compile / DDP wrappers."""
    while isinstance(model, DDP) or hasattr(model, "_orig_mod"):
        model = model.module if isinstance(model, DDP) else model._orig_mod
    return model


def set_looping(model: nn.Module, on: bool) -> None:
    """Switch depth recurrence on or off (a no-op without NUM_LOOPS), through any wrappers."""
    model = unwrap(model)
    model.looping = bool(on) and model.cfg.num_loops > 0


def looping_of(model: nn.Module) -> bool:
    return unwrap(model).looping


def embedding_init(cfg: Config) -> Tensor:
    e = torch.randn(cfg.vocab_size, cfg.model_dim) * cfg.tied_embed_init_std
    if cfg.embed_init == "spectral":  # overtone record: keep the singular vectors, force S_k = S_1 * k^-0.5
        U, S, Vh = torch.linalg.svd(e, full_matrices=False)
        S = S[0] * torch.arange(1, len(S) + 1, dtype=torch.float32) ** -0.5
        e = U @ torch.diag(S) @ Vh
    return e


def params_by_role(model: nn.Module) -> dict[str, list[tuple[str, nn.Parameter]]]:
    out = {r: [] for r in ROLES}
    for name, p in model.named_parameters():
        role = getattr(p, "role", None)
        if role not in out:
            raise AssertionError(f"parameter {name} has no role; tag it with with_role() where it is created")
        out[role].append((name, p))
    return out


def set_qat(model: nn.Module, on: bool) -> None:
    for m in model.modules():
        if isinstance(m, Linear) and m.qat:
            m.qat_on.fill_(1.0 if on else 0.0)
    if on:
        refresh_qat(model)


@torch.no_grad()
def refresh_qat(model: nn.Module, stack: bool | None = None) -> None:
    """Recompute the fake-quantized weights of the QAT layers while QAT is live (after each
    optimizer step), with the same quantizer the export uses. The quantizer works row by row,
    so on a GPU all layers with the same width and bits are stacked and quantized in one call:
    ~300 kernels per refresh of the default model instead of ~7,000 (67 layers x the clip
    search), launch overhead that would land in every QAT step. On CPU (stack=False by
    default) each layer goes alone: stacked tensors fall out of the caches and run 3-8x slower
    (bench/results/qat_refresh). Both give bit-identical w_q."""
    if stack is None:
        stack = next(model.parameters()).is_cuda
    groups: dict[tuple, list[Linear]] = {}
    for m in model.modules():
        if isinstance(m, Linear) and m.qat:
            groups.setdefault((m.bits, m.clip, m.clip_sigmas, m.weight.size(1)) if stack else (m,), []).append(m)
    for mods in groups.values():
        w = mods[0].weight if len(mods) == 1 else torch.cat([m.weight for m in mods])
        deq = fake_quant(w, mods[0].bits, mods[0].clip, mods[0].clip_sigmas)
        torch._foreach_copy_([m.w_q for m in mods], list(deq.split([m.weight.size(0) for m in mods])))


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ===== 6. MUON =====

QUINTIC = (3.4445, -4.7750, 2.0315)  # modded-nanogpt's fixed tuple, used at every step
# Polar Express (arXiv:2505.16932; the tuples the 2026-04-23 and later records use): one
# (a, b, c) per step, tuned so five steps land the singular values closer to 1 than the quintic.
POLAR_EXPRESS = (
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
)


CPU_NS_DTYPE = torch.float32  # bf16 matmuls are slow on most CPUs; bench/parity.py sets bf16 to replay CUDA's numerics


@torch.no_grad()
def orthogonalize(G: Tensor, coeffs: tuple[tuple[float, float, float], ...], eps: float = 1e-7) -> Tensor:
    """Push G's singular values towards 1 with the odd polynomial iteration
    X <- a X + (b A + c A^2) X, A = X X^T, one (a, b, c) per step, after scaling G to unit
    Frobenius norm. Runs in bf16 on CUDA (as the records do), CPU_NS_DTYPE on CPU."""
    X = G.to(torch.bfloat16 if G.is_cuda else CPU_NS_DTYPE)
    X = X / (X.norm() + eps)
    transposed = X.size(0) > X.size(1)
    if transposed:  # iterate on the wide orientation: the Gram matrix is the smaller one
        X = X.T
    for a, b, c in coeffs:
        A = X @ X.T
        X = a * X + (b * A + c * A @ A) @ X
    return X.T if transposed else X


def newton_schulz5(G: Tensor, steps: int) -> Tensor:
    """The quintic Newton-Schulz iteration of modded-nanogpt, `steps` times."""
    return orthogonalize(G, (QUINTIC,) * steps)


def polar_express(G: Tensor, steps: int) -> Tensor:
    """Polar Express: the first `steps` (at most 5) of its per-step tuples."""
    if steps > len(POLAR_EXPRESS):
        raise ValueError(f"Polar Express has {len(POLAR_EXPRESS)} coefficient tuples, asked for {steps} steps")
    return orthogonalize(G, POLAR_EXPRESS[:steps])


def row_normalize(u: Tensor, eps: float = 1e-7) -> Tensor:
    """MuonEq-R: each row divided by its L2 norm (computed in fp32), floored at eps."""
    return u / u.float().norm(dim=1, keepdim=True).clamp_min(eps).to(u.dtype)


class Muon(torch.optim.Optimizer):
    """Momentum + Nesterov, optionally MuonEq-R row normalization, then Newton-Schulz
    orthogonalization, shape scale sqrt(max(1, rows/cols)) and decoupled weight decay. Ranks
    split the NS work round-robin and share the results with one all-reduce over a flat buffer
    (each slot is written by exactly one rank, so the sum is exact)."""

    def __init__(self, params, lr: float, momentum: float, backend_steps: int, weight_decay: float, ctx: Dist,
                 ns_fn=newton_schulz5, row_normalize: bool = False):
        super().__init__(params, dict(lr=lr, base_lr=lr, momentum=momentum, backend_steps=backend_steps,
                                      weight_decay=weight_decay, row_normalize=row_normalize))
        # Per-group caches are keyed by the group's position, not id(group): load_state_dict
        # (the warmup restore) replaces the group dicts, which would leave the old flat buffer
        # alive (~53 MB at full size) and, should a new dict reuse a freed id, a wrong layout.
        # A group's parameters and their order never change, so its position is a stable key.
        self.ctx, self.ns_fn, self.flat, self.layouts = ctx, ns_fn, {}, {}

    def layout(self, key: int, group: dict) -> tuple[list[int], dict[float, list[int]]]:
        """Per group, computed once: each parameter's offset in the flat buffer, and the
        parameter indices by shape scale sqrt(max(1, rows/cols))."""
        if key not in self.layouts:
            offsets, by_scale = [0], {}
            for i, p in enumerate(group["params"]):
                offsets.append(offsets[-1] + p.numel())
                by_scale.setdefault(max(1.0, p.size(0) / p.size(1)) ** 0.5, []).append(i)
            self.layouts[key] = (offsets, by_scale)
        return self.layouts[key]

    @torch.no_grad()
    def step(self) -> None:
        """Elementwise work runs as a few foreach ops over all tensors (not a handful of kernel
        launches per parameter); only Newton-Schulz runs per matrix."""
        for key, group in enumerate(self.param_groups):
            params = group["params"]
            if not params:
                continue
            buf_dtype = torch.bfloat16 if params[0].is_cuda else torch.float32
            if key not in self.flat or self.flat[key].dtype != buf_dtype:  # allocated once, reused every step
                self.flat[key] = torch.empty(sum(p.numel() for p in params), device=params[0].device, dtype=buf_dtype)
            flat = self.flat[key].zero_()
            offsets, by_scale = self.layout(key, group)
            mine = [i for i, p in enumerate(params) if i % self.ctx.world_size == self.ctx.rank and p.grad is not None]
            grads = [params[i].grad for i in mine]
            for i in mine:
                if "momentum_buffer" not in self.state[params[i]]:
                    self.state[params[i]]["momentum_buffer"] = torch.zeros_like(params[i])
            moms = [self.state[params[i]]["momentum_buffer"] for i in mine]
            if mine:
                torch._foreach_mul_(moms, group["momentum"])
                torch._foreach_add_(moms, grads)
                torch._foreach_add_(grads, moms, alpha=group["momentum"])  # Nesterov, in the grad buffer
            for i, g in zip(mine, grads):
                if group["row_normalize"]:
                    g = row_normalize(g)
                flat[offsets[i]:offsets[i + 1]] = self.ns_fn(g, group["backend_steps"]).reshape(-1)
            all_reduce_(flat, self.ctx)
            updates = flat.float()  # one cast, so the foreach adds below take their fused fp32 path
            if group["weight_decay"]:
                torch._foreach_mul_(params, 1 - group["lr"] * group["weight_decay"])
            for shape_scale, members in by_scale.items():
                torch._foreach_add_([params[i] for i in members],
                                    [updates[offsets[i]:offsets[i + 1]].view_as(params[i]) for i in members],
                                    alpha=-group["lr"] * shape_scale)


class Optimizers:
    """Muon for matrices, AdamW for everything else, built from the role table."""

    def __init__(self, model: GPT, cfg: Config, ctx: Dist):
        groups = params_by_role(model)
        embed_lr = cfg.tied_embed_lr if cfg.tie_embeddings else cfg.embed_lr
        lrs = {"embed": embed_lr, "bigram": embed_lr, "head": cfg.head_lr, "scalar": cfg.scalar_lr, "gate": cfg.scalar_lr}
        adam_groups = [dict(params=[p for _, p in groups[role]], lr=lr, base_lr=lr, role=role,
                            weight_decay=cfg.embed_wd if role == "embed" else cfg.adam_wd)
                       for role, lr in lrs.items() if groups[role]]
        self.adam = torch.optim.AdamW(adam_groups, betas=(cfg.beta1, cfg.beta2), eps=cfg.adam_eps,
                                      weight_decay=cfg.adam_wd, fused=ctx.device.type == "cuda")
        ns = polar_express if cfg.muon_ns_coeffs == "polar_express" else newton_schulz5
        ns_fn = torch.compile(ns) if use_compile(cfg, ctx) else ns
        self.muon = Muon([p for r in MATRIX_ROLES for _, p in groups[r]], lr=cfg.matrix_lr, momentum=cfg.muon_momentum,
                         backend_steps=cfg.muon_backend_steps, weight_decay=cfg.muon_wd, ctx=ctx, ns_fn=ns_fn,
                         row_normalize=cfg.muon_row_normalize)
        self.all = (self.adam, self.muon)

    def set_schedule(self, lr_scale: float, muon_momentum: float) -> None:
        for opt in self.all:
            for g in opt.param_groups:
                g["lr"] = g["base_lr"] * lr_scale
        for g in self.muon.param_groups:
            g["momentum"] = muon_momentum

    def step(self) -> None:
        for opt in self.all:
            opt.step()

    def zero_grad(self) -> None:
        for opt in self.all:
            opt.zero_grad(set_to_none=True)

    def state_dicts(self) -> list[dict]:
        return [copy.deepcopy(opt.state_dict()) for opt in self.all]

    def load_state_dicts(self, states: list[dict]) -> None:
        for opt, s in zip(self.all, states):
            opt.load_state_dict(s)


# ===== 7. QUANT+EXPORT =====
# The artifact is self-describing and needs no unpickling:
#   b"PGA3" | u32 n | zstd(JSON header), n bytes | one zstd-22 frame per role
# The header lists each tensor's role, bits, shape and byte ranges inside its role's frame, so
# a corrupt or truncated file fails with a clear error. Quantized tensors store per-row codes
# (quantize_rows, the function QAT uses) and fp16 scales. Codes are kept one per int8 byte
# ("int8": zstd squeezes the unused high bits) or bit-packed ("bitpack": exactly `bits` per
# code); each role's frame is compressed both ways and the smaller is kept (EXPORT_PACKING=auto).
# Compressing per role also gives an exact per-role budget at no extra cost. The frames' compressor
# is EXPORT_COMPRESSOR (brotli-11 by default: measured smaller than zstd-22 and lzma-9 on exported
# frames, docs/quantization.md); the header names it and holds a CRC32 of every raw frame, since
# brotli and lzma streams carry no checksum of their own.
#
# Codes come from round-to-nearest (QUANT_METHOD=rtn) or from GPTQ (QUANT_METHOD=gptq): per
# matrix W [rows, cols], H = sum X^T X over calibration activations X [tokens, cols] of W's
# input (forward hooks on every Linear and on the head input), then columns are quantized one
# at a time and each one's rounding error is pushed onto the columns not yet quantized, weighted
# by the Cholesky factor of H^-1: the layer output XW, not W itself, is what stays close. The
# grid (bits, per-row scales from the clip rule) is the same for both, so QAT's fake quant
# simulates the grid GPTQ picks codes on. LQER then adds, to the LQER_TOP_K tensors with the
# largest ||W - W_quant||_F, a rank-r correction A@B stored as int2 A and grouped low-bit B.

ARTIFACT_MAGIC = b"PGA3"
ZSTD_LEVEL = 22
COMPRESSOR_LEVELS = {"zstd": ZSTD_LEVEL, "brotli": 11, "lzma": 9, "pergroup": 9}
# EXPORT_COMPRESSOR=pergroup: a quantized role's codes are stored "sorted": column-major and, in the
# SORTED_ROLES, each matrix's rows in a greedy L1 nearest-neighbour order (the permutation, uint16,
# in the frame), so neighbouring bytes are close (on trained proxy weights sorting paid for its
# permutation only in the embedding, docs/quantization.md); the frame goes through lrzip's ZPAQ, which also
# finds repeats across a role's layers that brotli's 16 MB window misses. -T: no LZ4 pre-test (it
# stores low-entropy code bytes uncompressed); -p 1: the bytes must not depend on the core count.
LRZIP = ["lrzip", "-q", "-f", "-T", "-p", "1"]
SORTED_ROLES = ("embed", "head")


def lrzip(data: bytes, args: list[str], where: str) -> bytes:
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        src, dst = Path(d, "in"), Path(d, "out")
        src.write_bytes(data)
        try:
            r = subprocess.run(LRZIP + args + ["-o", str(dst), str(src)], capture_output=True)
        except FileNotFoundError:
            raise RuntimeError(f"{where}: EXPORT_COMPRESSOR=pergroup needs the lrzip binary on PATH (Debian package lrzip: apt-get install lrzip)") from None
        if r.returncode:
            raise ValueError(f"{where}: lrzip {'de' * (args == ['-d'])}compression failed ({r.stderr.decode(errors='replace').strip()}); "
                             "the file is truncated or corrupt")
        return dst.read_bytes()


def frame_codec(compressor: str, packing: str) -> str:
    """pergroup: lrzip for the "sorted" packing, brotli for every other frame."""
    return ("lrzip" if packing == "sorted" else "brotli") if compressor == "pergroup" else compressor


def l1_order(codes: np.ndarray) -> np.ndarray:
    """Greedy nearest-neighbour row order (L1 distance), starting at row 0."""
    if len(codes) > 65536:
        raise ValueError(f"EXPORT_COMPRESSOR=pergroup stores row orders as uint16: a matrix of {len(codes)} rows is too tall")
    x, left, order = codes.astype(np.int16), np.arange(1, len(codes)), [0]
    while len(left):
        j = int(np.abs(x[left] - x[order[-1]]).sum(1).argmin())
        order.append(left[j])
        left = np.delete(left, j)
    return np.array(order, dtype=np.uint16)


def brotli_module():
    """The brotli package, or a clear error naming the setting that asked for it."""
    try:
        import brotli
    except ImportError:
        raise RuntimeError("EXPORT_COMPRESSOR=brotli needs the brotli package: pip install -r requirements.txt "
                           "(or choose EXPORT_COMPRESSOR=zstd)") from None
    return brotli


def pack_bits(u: np.ndarray, bits: int) -> bytes:
    """Unsigned codes < 2^bits -> a dense bit string (MSB first within each code)."""
    planes = (u.astype(np.uint16)[:, None] >> np.arange(bits - 1, -1, -1, dtype=np.uint16)) & 1
    return np.packbits(planes.astype(np.uint8).reshape(-1)).tobytes()


def unpack_bits(data: np.ndarray, bits: int, count: int) -> np.ndarray:
    planes = np.unpackbits(data)[:count * bits].reshape(count, bits).astype(np.int16)
    return planes @ (1 << np.arange(bits - 1, -1, -1, dtype=np.int16))


def prune_(w: Tensor, frac: float) -> int:
    """Zero the smallest-|w| fraction of a matrix in place; returns the count zeroed."""
    k = int(frac * w.numel())
    if k == 0:
        return 0
    mask = w.abs() <= w.abs().flatten().kthvalue(k).values
    w[mask] = 0
    return int(mask.sum())


@dataclass
class LowRank:
    """LQER correction A@B of one tensor: A [rows, r] as int2 codes with one fp16 scale, B [r, cols]
    as `bits` codes with one fp16 scale per `group` consecutive entries of B (row-major)."""
    a: Tensor          # int8 codes in [-2, 1]
    a_scale: Tensor    # fp16 [1]
    b: Tensor          # int8 codes in [-2^(bits-1), 2^(bits-1) - 1]
    b_scales: Tensor   # fp16 [ceil(r*cols / group)]
    bits: int
    group: int


@dataclass
class HiCols:
    """AWQ-lite's protected column groups of one matrix: columns starts[k]..starts[k]+size-1 are
    codes*scales at `bits` (their entries in the main codes are 0)."""
    starts: list[int]
    size: int
    bits: int
    codes: Tensor   # int8 [rows, len(starts)*size]
    scales: Tensor  # fp16 [rows]


@dataclass
class Quantized:
    role: str
    bits: int
    shape: tuple
    codes: Tensor | None = None   # int8 [rows, cols] for bits < 16
    scales: Tensor | None = None  # fp16 [rows]
    data: Tensor | None = None    # fp16 values for bits == 16
    lqer: LowRank | None = None
    hi: HiCols | None = None

    @property
    def numel(self) -> int:
        return (self.codes if self.codes is not None else self.data).numel()


def hessian_targets(model: nn.Module) -> dict[str, nn.Module]:
    """Each quantizable matrix -> the module whose input X multiplies it (X @ W^T): every Linear,
    and the head input (the final norm's output) for the tied embedding or the untied head.
    Tensors that are only looked up (bigram table, untied input embedding) have no such X."""
    out = {f"{name}.weight": m for name, m in model.named_modules() if isinstance(m, Linear)}
    out["tok_emb" if model.lm_head is None else "lm_head"] = model.head_in
    return out


@torch.no_grad()
def collect_hessians(model: nn.Module, batches, ctx: Dist) -> tuple[dict[str, Tensor], int]:
    """H = sum of X^T X (fp32, on the model's device) over the batches' forward passes, summed
    over ranks and divided by the number of batches (GPTQ's damping is relative, so only H's
    shape matters). Returns the Hessians and the batch count. The model runs in eval mode,
    without QAT, under the training autocast.

    Matrices that read the very same input tensor (c_q, c_k and c_v of every attention) share
    one X^T X: it is accumulated and all-reduced once, and the names map to the same tensor
    (consumers never write into H). That removes two thirds of the attention Hessian work."""
    hs: dict[str, Tensor] = {}
    shared: dict[str, str] = {}  # name -> the name whose H it shares (same input tensor)
    last: list = [None, None]    # the input tensor the previous hook saw, and that hook's name

    def hook(name: str):
        def accumulate(_module, args):
            if name in shared:
                return
            if args[0] is last[0]:  # the previous matrix read this same tensor: share its H
                shared[name] = shared.get(last[1], last[1])
                return
            last[0], last[1] = args[0], name
            x = args[0].detach().reshape(-1, args[0].size(-1)).float()
            with torch.autocast(x.device.type, enabled=False):  # H in fp32, also under AUTOCAST=bf16
                if name in hs:
                    hs[name].addmm_(x.T, x)
                else:
                    hs[name] = x.T @ x
        return accumulate

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in hessian_targets(model).items()]
    was_training, n = model.training, 0
    model.eval()
    try:
        for x, y in batches:  # the training loader's batches: packed rows when it packs
            with autocast(model.cfg, ctx):
                model(x, y, packed=model.cfg.packed, doc_mask=model.cfg.gptq_calibration_doc_mask)
            n += 1
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
        last[0] = None
    if n == 0:
        raise ValueError("GPTQ calibration got no batches")
    for name in sorted(hs):  # same order on every rank
        all_reduce_(hs[name], ctx).div_(n * ctx.world_size)
    for name, owner in shared.items():
        hs[name] = hs[owner]
    return hs, n


def gptq_quantize(w: Tensor, H: Tensor, scales: Tensor, bits: int, damp: float, block: int, act_order: bool,
                  hi: tuple[Tensor, Tensor, int] | None = None) -> Tensor:
    """GPTQ codes of w [rows, cols] on the fixed grid q*scales ([rows, 1]), minimizing
    ||X w^T - X (q*s)^T|| for X^T X = H. Column j is rounded, its error e_j / U_jj is
    propagated to columns j+1.. of the block through row j of U (H^-1 = U^T U, U upper),
    and each finished block updates the remaining columns at once. With H proportional to
    the identity U is diagonal, nothing is propagated and the codes are round-to-nearest.
    hi = (column mask, scales [rows, 1], bits): AWQ-lite's columns, rounded on that finer grid
    in the same pass (their codes are returned in place; their errors propagate as any other)."""
    Q = 2 ** (bits - 1) - 1
    W, H = w.float().clone(), H.float().clone()
    cols = W.size(1)
    dead = torch.diagonal(H) == 0  # columns that never see input: any code is free; store 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    H.diagonal().add_(damp * torch.diagonal(H).mean())
    perm = torch.argsort(torch.diagonal(H), descending=True, stable=True) if act_order else torch.arange(cols, device=W.device)
    W, H = W[:, perm], H[perm][:, perm]
    try:
        U = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    except torch.linalg.LinAlgError as e:
        raise ValueError(f"GPTQ: the damped Hessian is not positive definite ({e}); raise GPTQ_DAMP") from None
    grids = [(scales.float().to(W.device).view(-1, 1), Q)]
    fine = [False] * cols
    if hi is not None:
        grids.append((hi[1].float().to(W.device).view(-1, 1), 2 ** (hi[2] - 1) - 1))
        fine = hi[0][perm.cpu()].tolist()
    q = torch.zeros_like(W)
    for i1 in range(0, cols, block):
        i2 = min(i1 + block, cols)
        Wb, Ub, Eb = W[:, i1:i2].clone(), U[i1:i2, i1:i2], torch.zeros(W.size(0), i2 - i1, device=W.device)
        for j in range(i2 - i1):
            s, Qj = grids[fine[i1 + j]]
            qj = torch.clamp(torch.round(Wb[:, j:j + 1] / s), -Qj, Qj)
            q[:, i1 + j:i1 + j + 1] = qj
            err = (Wb[:, j:j + 1] - qj * s) / Ub[j, j]
            Wb[:, j:] -= err * Ub[j:j + 1, j:]
            Eb[:, j:j + 1] = err
        W[:, i2:] -= Eb @ U[i1:i2, i2:]
    out = torch.empty_like(q)
    out[:, perm] = q
    return out.to(torch.int8)


def hessian_importance(w: Tensor, H: Tensor, damp: float, lam: float) -> Tensor:
    """Hessian-aware SDClip factor per row: 1 + lam*(rho_i - 1), rho = mean_j |W_ij| h_j with
    h the damped diag(H) over its mean, rho normalized to mean 1 (important rows clip wider)."""
    h = torch.diagonal(H).float()
    h = (h + damp * h.mean()).clamp_min(1e-8)
    rho = (w.float().abs() * (h / h.mean())).mean(dim=1)
    return 1 + lam * (rho / rho.mean().clamp_min(1e-12) - 1)


def asym_codes(x: Tensor, bits: int, group: int) -> tuple[Tensor, Tensor]:
    """Grouped asymmetric-range codes of x (flattened, groups of `group`): levels
    [-2^(b-1), 2^(b-1) - 1], scale max|group| / (2^(b-1) - 0.5), so the largest magnitude
    lands half a level inside the range on either side. Returns int8 codes (x's shape) and
    fp16 scales."""
    lo, hi = -2 ** (bits - 1), 2 ** (bits - 1) - 1
    flat = x.float().reshape(-1)
    n_groups = -(-flat.numel() // group)
    padded = F.pad(flat, (0, n_groups * group - flat.numel())).view(n_groups, group)
    sc = (padded.abs().amax(dim=1) / (hi + 0.5)).clamp_min(1e-8).to(torch.float16)
    q = torch.clamp(torch.round(padded / sc.float()[:, None]), lo, hi)
    return q.reshape(-1)[:flat.numel()].view_as(x).to(torch.int8), sc


def asym_values(q: Tensor, scales: Tensor, group: int) -> Tensor:
    return (q.float().reshape(-1) * scales.float().repeat_interleave(group)[:q.numel()]).view(q.shape)


def low_rank_correction(err: Tensor, rank: int, bits: int, group: int) -> LowRank:
    """Rank-r SVD of the quantization error E = U S V^T: A = U_r S_r (int2, one scale), B = V_r^T."""
    U, S, Vh = torch.linalg.svd(err.float().cpu(), full_matrices=False)
    r = min(rank, S.numel())
    a, a_scale = asym_codes(U[:, :r] * S[:r], 2, U.size(0) * r)
    b, b_scales = asym_codes(Vh[:r], bits, group)
    return LowRank(a, a_scale, b, b_scales, bits, group)


def dequantize(qt: Quantized) -> Tensor:
    """float32 weights of a stored tensor: codes*scales (+ A@B for an LQER tensor). The decoder
    uses exactly this, so what the artifact loads is what this returns."""
    if qt.bits == 16:
        return qt.data.float().view(qt.shape)
    w = qt.codes.float() * qt.scales.float()[:, None]
    if qt.hi is not None:
        hi = qt.hi.codes.float() * qt.hi.scales.float()[:, None]
        for k, start in enumerate(qt.hi.starts):
            w[:, start:start + qt.hi.size] = hi[:, k * qt.hi.size:(k + 1) * qt.hi.size]
    if qt.lqer is not None:
        lr = qt.lqer
        w = w + asym_values(lr.a, lr.a_scale, lr.a.numel()) @ asym_values(lr.b, lr.b_scales, lr.group)
    return w.view(qt.shape)


def quantize_state(state: dict[str, Tensor], roles: dict[str, str], cfg: Config, log=None,
                   hessians: dict[str, Tensor] | None = None) -> dict[str, Quantized]:
    """Every tensor by its role's bits and clip rule; with QUANT_METHOD=gptq, matrices that have
    a Hessian get GPTQ codes (the rest round to nearest). Then LQER, if enabled."""
    if cfg.quant_method == "gptq" and hessians is None:
        raise ValueError("QUANT_METHOD=gptq needs calibration Hessians (collect_hessians); none were given")
    out, pruned, by_gptq, t0 = {}, 0, [], time.perf_counter()
    protect = awq_lite_groups(state, roles, cfg, hessians, log) if cfg.awq_lite_enabled else {}
    for name in sorted(state):
        t, role = state[name].detach().float(), roles[name]
        bits = cfg.bits(role)
        if bits == 16 or t.ndim < 2:
            out[name] = Quantized(role, 16, tuple(t.shape), data=t.cpu().to(torch.float16))
            continue
        t2 = t.reshape(t.size(0), -1).clone()
        if cfg.prune_frac and role != "gate":
            pruned += prune_(t2, cfg.prune_frac)
        H, hi = hessians.get(name) if cfg.quant_method == "gptq" else None, None
        if H is None:
            q, s = quantize_rows(t2, bits, "amax" if role == "gate" else cfg.quant_clip, cfg.clip_sigmas(role))
        else:
            t2 = t2.to(H.device)
            imp = hessian_importance(t2, H, cfg.gptq_damp, cfg.hessian_clip_lambda) if cfg.hessian_clip_lambda else None
            s = row_scales(t2, bits, cfg.quant_clip, cfg.clip_sigmas(role), imp)
            if name in protect:
                mask = torch.zeros(t2.size(1), dtype=torch.bool)
                for start in protect[name]:
                    mask[start:start + cfg.awq_lite_group_size] = True
                hi = (mask, row_scales(t2, cfg.awq_lite_bits, cfg.quant_clip, cfg.clip_sigmas(role), imp), cfg.awq_lite_bits)
            q = gptq_quantize(t2, H, s, bits, cfg.gptq_damp, cfg.gptq_block_size, cfg.gptq_act_order, hi)
            s = s.squeeze(1).to(torch.float16)
            by_gptq.append(name)
            if hi is not None:  # the protected codes move to their own block; 0 in the main codes
                mask = hi[0].to(q.device)
                hi = HiCols(sorted(protect[name]), cfg.awq_lite_group_size, cfg.awq_lite_bits, q[:, mask].cpu().to(torch.int8),
                            hi[1].squeeze(1).to(torch.float16).cpu())
                q[:, mask] = 0
        out[name] = Quantized(role, bits, tuple(t.shape), codes=q.cpu(), scales=s.cpu(), hi=hi)
    if log and cfg.prune_frac:
        log(f"prune_frac:{cfg.prune_frac} pruned_weights:{pruned}")
    if log and cfg.quant_method == "gptq":
        rtn = [n for n, q in out.items() if q.bits < 16 and n not in by_gptq]
        log(f"gptq matrices:{len(by_gptq)} rtn_no_hessian:{','.join(rtn) or 'none'} "
            f"quant_time:{1000 * (time.perf_counter() - t0):.0f}ms")
    if cfg.lqer_enabled:
        add_lqer(out, state, cfg, log)
    return out


def awq_lite_groups(state: dict[str, Tensor], roles: dict[str, str], cfg: Config, hessians: dict[str, Tensor],
                    log=None) -> dict[str, list[int]]:
    """AWQ-lite's choice: name -> protected group starts. Candidates are the AWQ_LITE_GROUP_SIZE
    column groups of every matrix GPTQ will solve at fewer bits than AWQ_LITE_BITS; a column's
    saliency is its input's RMS (sqrt diag H: every H averages the same batches, so tensors
    compare) times its mean |w|; the AWQ_LITE_GROUP_TOP_K largest group sums win."""
    g, cands = cfg.awq_lite_group_size, []
    for name in sorted(state):
        w, H = state[name].detach().float(), hessians.get(name)
        if H is None or w.ndim < 2 or cfg.bits(roles[name]) >= min(cfg.awq_lite_bits, 16):
            continue
        w = w.reshape(w.size(0), -1)
        sal = torch.diagonal(H).float().clamp_min(0).sqrt().cpu() * w.abs().mean(0).cpu()
        for k in range(w.size(1) // g):
            cands.append((float(sal[k * g:(k + 1) * g].sum()), name, k * g))
    out: dict[str, list[int]] = {}
    for _, name, start in sorted(cands, key=lambda c: -c[0])[:cfg.awq_lite_group_top_k]:
        out.setdefault(name, []).append(start)
    if log:
        log(f"awq_lite bits:{cfg.awq_lite_bits} group:{g} protected:" + (",".join(f"{n}[{s}:{s + g}]" for n, ss in out.items() for s in ss) or "none"))
    return out


def add_lqer(qstate: dict[str, Quantized], state: dict[str, Tensor], cfg: Config, log=None) -> None:
    """Attach an LQER correction to the LQER_TOP_K quantized tensors with the largest absolute
    ||W - W_quant||_F (the absolute norm favours large tensors, as in the record)."""
    weights = {n: state[n].detach().float().cpu().reshape(q.codes.shape) for n, q in qstate.items() if q.bits < 16}
    errs = {n: weights[n] - dequantize(qstate[n]).reshape(weights[n].shape) for n in weights}
    top = sorted(errs, key=lambda n: -float(errs[n].norm()))[:cfg.lqer_top_k]
    for n in top:
        qstate[n].lqer = low_rank_correction(errs[n], cfg.lqer_rank, cfg.lqer_factor_bits, cfg.lqer_asym_group)
    if log:
        after = {n: float((weights[n] - dequantize(qstate[n]).reshape(weights[n].shape)).norm()) for n in top}
        log(f"lqer rank:{cfg.lqer_rank} factor_bits:2/{cfg.lqer_factor_bits} group:{cfg.lqer_asym_group} "
            + " ".join(f"{n}:err_fro:{float(errs[n].norm()):.4f}->{after[n]:.4f}" for n in top))


def pack_role(items: list[tuple[str, Quantized]], packing: str) -> tuple[bytes, list[dict]]:
    """One role's payload and header entries (byte ranges relative to the payload)."""
    chunks, entries, offset = [], [], 0

    def put(data: bytes) -> list[int]:
        nonlocal offset
        chunks.append(data)
        offset += len(data)
        return [offset - len(data), len(data)]

    for name, qt in items:
        e = dict(name=name, role=qt.role, bits=qt.bits, shape=list(qt.shape))
        if qt.bits == 16:
            e["data"] = put(qt.data.numpy().tobytes())
        else:
            codes, Q = qt.codes.numpy().reshape(-1), 2 ** (qt.bits - 1) - 1
            # Offset to unsigned in int16: at 8 bits codes + 127 does not fit in int8.
            if packing == "sorted":
                c2 = qt.codes.numpy().reshape(qt.shape[0], -1)
                if qt.role in SORTED_ROLES:
                    perm = l1_order(c2)
                    e["perm"], c2 = put(perm.tobytes()), c2[perm]
                codes = c2.T
            e["codes"] = put(codes.tobytes() if packing != "bitpack" else pack_bits((codes.astype(np.int16) + Q).astype(np.uint16), qt.bits))
            e["scales"] = put(qt.scales.numpy().tobytes())
            if qt.hi is not None:  # int8 containers, like LQER's
                e["awq"] = dict(starts=qt.hi.starts, size=qt.hi.size, bits=qt.hi.bits, codes=put(qt.hi.codes.numpy().tobytes()),
                                scales=put(qt.hi.scales.numpy().tobytes()))
            if qt.lqer is not None:  # int8 containers: a few KB, zstd squeezes the unused bits
                lr = qt.lqer
                e["lqer"] = dict(rank=lr.a.size(1), bits=lr.bits, group=lr.group, a=put(lr.a.numpy().tobytes()),
                                 a_scale=put(lr.a_scale.numpy().tobytes()), b=put(lr.b.numpy().tobytes()),
                                 b_scales=put(lr.b_scales.numpy().tobytes()))
        entries.append(e)
    return b"".join(chunks), entries


def model_settings(cfg: Config) -> dict[str, object]:
    """The settings that define the model an artifact's weights belong to (every MODEL knob but the
    attention kernel, the vocabulary, and TRAIN_SEQ_LEN: the RoPE span and the default eval window),
    recorded in the artifact's header so EVAL_ONLY rebuilds the same model without being told."""
    # The model knobs by position (NUM_LAYERS up to the optimizer's first, MATRIX_LR), not by their
    # group: the packed copy drops knob groups, and it must record the same settings.
    names = [f.name for f in dataclasses.fields(Config)]
    keep = names[names.index("num_layers"):names.index("matrix_lr")]
    keep = [n for n in keep if n != "attn_backend"] + ["vocab_size", "train_seq_len"]
    return {n.upper(): getattr(cfg, n) for n in keep}


def encode_artifact(qstate: dict[str, Quantized], packing: str, compressor: str = "zstd",
                    meta: dict | None = None) -> tuple[bytes, list[dict]]:
    """The artifact bytes and a per-role report (params, bits, raw and compressed bytes per packing).
    `meta` (the model settings and the source's sha256, artifact_meta) goes into the header."""
    frames, tensors, blobs, report = [], [], [], []
    for role in ROLES:
        items = [(n, q) for n, q in qstate.items() if q.role == role]
        if not items:
            continue
        quantized = any(q.bits < 16 for _, q in items)
        options = ("int8", "bitpack") if packing == "auto" and quantized else (packing if quantized else "none",)
        if compressor == "pergroup":  # a few-KB role costs less as brotli than ZPAQ's container: smaller wins
            options = ("sorted",) * quantized + options
        tried = {}
        for opt in options:
            raw, entries = pack_role(items, opt)
            tried[opt] = (compress(raw, frame_codec(compressor, opt)), raw, entries)
        chosen = min(tried, key=lambda o: len(tried[o][0]))
        blob, raw, entries = tried[chosen]
        for e in entries:
            e["frame"] = len(frames)
        frames.append(dict(role=role, packing=chosen, size=len(blob), raw_size=len(raw), crc32=zlib.crc32(raw)))
        tensors += entries
        blobs.append(blob)
        report.append(dict(role=role, params=sum(q.numel for _, q in items), chosen=chosen,
                           bits="/".join(map(str, sorted({q.bits for _, q in items}))),
                           sizes={o: (len(t[1]), len(t[0])) for o, t in tried.items()}))
    header = compress(json.dumps(dict(version=3, compressor=compressor, frames=frames, tensors=tensors, **(meta or {}))).encode())
    return ARTIFACT_MAGIC + struct.pack("<I", len(header)) + header + b"".join(blobs), report


def check_header(header: object, where: str) -> tuple[list[dict], list[dict]]:
    """The decoded JSON header's frames and tensors, every field of the type and range the
    decoder relies on; anything else (a crafted or damaged header) is a ValueError naming it."""
    def fail(what: str):
        raise ValueError(f"{where}: corrupt header: {what}")

    def is_int(v, lo=0) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= lo

    if not isinstance(header, dict) or not isinstance(header.get("frames"), list) or not isinstance(header.get("tensors"), list):
        fail("expected an object with lists 'frames' and 'tensors'")
    frames, tensors = header["frames"], header["tensors"]
    for i, f in enumerate(frames):
        if not (isinstance(f, dict) and isinstance(f.get("role"), str) and isinstance(f.get("packing"), str)
                and is_int(f.get("size")) and is_int(f.get("raw_size"))):
            fail(f"frame {i} needs role, packing (strings), size and raw_size (non-negative integers)")
    names = set()
    for i, e in enumerate(tensors):
        if not (isinstance(e, dict) and isinstance(e.get("name"), str) and is_int(e.get("bits"))
                and isinstance(e.get("shape"), list) and all(is_int(d) for d in e["shape"])
                and is_int(e.get("frame")) and e["frame"] < len(frames)):
            fail(f"tensor entry {i} needs name, bits, shape (non-negative integers) and the index of an existing frame")
        if e["name"] in names:
            fail(f"tensor {e['name']} appears twice")
        names.add(e["name"])
        keys = ("data",) if e["bits"] == 16 else ("codes", "scales")
        for key in keys:
            r = e.get(key)
            if not (isinstance(r, list) and len(r) == 2 and all(is_int(v) for v in r)):
                fail(f"tensor {e['name']} {key} must be a [start, length] pair of non-negative integers")
        if e["bits"] != 16 and not e["shape"]:
            fail(f"quantized tensor {e['name']} has no rows")
    return frames, tensors


def read_header(blob: bytes, where: str) -> tuple[object, int]:
    """The artifact's JSON header (unchecked) and its length; ValueError on a bad magic or header."""
    if len(blob) < 8 or blob[:4] != ARTIFACT_MAGIC:
        raise ValueError(f"{where}: not a train_gpt.py artifact (bad magic)")
    (hlen,) = struct.unpack("<I", blob[4:8])
    try:
        header = json.loads(decompress(blob[8:8 + hlen], where))
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{where}: corrupt header ({e})") from None
    return header, hlen


def decode_artifact(blob: bytes, where: str = "artifact") -> dict[str, Tensor]:
    """Inverse of encode_artifact; returns float32 tensors. Raises ValueError on any corruption
    (the header is checked field by field before it is used: check_header)."""
    header, hlen = read_header(blob, where)
    frames, tensors = check_header(header, where)
    compressor = header.get("compressor", "zstd")  # headers written before the choice existed: zstd frames
    if compressor not in COMPRESSOR_LEVELS:
        raise ValueError(f"{where}: corrupt header (unknown compressor {compressor!r})")
    payloads, offset = [], 8 + hlen
    for f in frames:
        if offset + f["size"] > len(blob):
            raise ValueError(f"{where}: truncated: the {f['role']} frame ends at byte {offset + f['size']} of {len(blob)}")
        raw = decompress(blob[offset:offset + f["size"]], where, frame_codec(compressor, f["packing"]))
        if len(raw) != f["raw_size"]:
            raise ValueError(f"{where}: the {f['role']} frame decompressed to {len(raw)} bytes, expected {f['raw_size']}")
        if "crc32" in f and zlib.crc32(raw) != f["crc32"]:
            raise ValueError(f"{where}: the {f['role']} frame fails its CRC32 check; the file is corrupt")
        payloads.append(np.frombuffer(raw, dtype=np.uint8))
        offset += f["size"]
    if offset != len(blob):
        raise ValueError(f"{where}: {len(blob) - offset} unexpected bytes after the last frame")
    out = {}
    for e in tensors:
        try:
            out[e["name"]] = dequantize(decode_tensor(e, payloads[e["frame"]], frames[e["frame"]]["packing"], where))
        except (KeyError, TypeError, IndexError) as err:
            raise ValueError(f"{where}: corrupt entry for tensor {e.get('name', '?') if isinstance(e, dict) else '?'} ({err!r})") from None
    return out


def decode_tensor(e: dict, payload: np.ndarray, packing: str, where: str) -> Quantized:
    """One header entry -> its Quantized tensor, every byte range and code range checked."""
    name, shape, bits = e["name"], tuple(e["shape"]), e["bits"]

    def get(spec: dict, key: str, nbytes: int, what: str = "") -> np.ndarray:
        start, n = spec[key]
        if start < 0 or start + n > len(payload) or n != nbytes:
            raise ValueError(f"{where}: tensor {name} {what}{key} byte range {spec[key]} is outside its frame or has the wrong size")
        return payload[start:start + n]

    numel = math.prod(shape)  # exact (np.prod would wrap around on a crafted shape)
    if bits == 16:
        return Quantized(e["role"], 16, shape, data=torch.from_numpy(get(e, "data", 2 * numel).view(np.float16).copy()))
    if bits not in BITS or packing not in ("int8", "bitpack", "sorted"):
        raise ValueError(f"{where}: tensor {name} has unknown bits {bits} or packing {packing!r}")
    rows, Q = shape[0], 2 ** (bits - 1) - 1
    if packing == "int8":
        codes = get(e, "codes", numel).view(np.int8).astype(np.int8)
    elif packing == "sorted":  # column-major codes of the rows in `perm` order: undo both
        perm = get(e, "perm", 2 * rows).view(np.uint16) if "perm" in e else np.arange(rows)
        if sorted(perm) != list(range(rows)):
            raise ValueError(f"{where}: tensor {name} has a row permutation that is not one")
        codes = np.empty((rows, numel // rows), np.int8)
        codes[perm] = get(e, "codes", numel).view(np.int8).reshape(-1, rows).T
    else:
        codes = (unpack_bits(get(e, "codes", (numel * bits + 7) // 8), bits, numel) - Q).astype(np.int8)
    qt = Quantized(e["role"], bits, shape, codes=torch.from_numpy(codes.reshape(rows, -1)),
                   scales=torch.from_numpy(get(e, "scales", 2 * rows).view(np.float16).copy()))
    if "awq" in e:
        aw, cols = e["awq"], numel // rows
        starts, size, hbits = aw["starts"], aw["size"], aw["bits"]
        if not (isinstance(size, int) and size >= 1 and hbits in range(2, 9) and isinstance(starts, list) and starts
                and all(isinstance(st, int) and 0 <= st <= cols - size for st in starts)):
            raise ValueError(f"{where}: tensor {name} has an invalid AWQ-lite header (starts {starts}, size {size}, bits {hbits})")
        hc = get(aw, "codes", rows * len(starts) * size, "awq ").view(np.int8).reshape(rows, -1)
        if hc.min() < -(2 ** (hbits - 1) - 1) or hc.max() > 2 ** (hbits - 1) - 1:
            raise ValueError(f"{where}: tensor {name} has AWQ-lite codes outside their {hbits}-bit range")
        qt.hi = HiCols(starts, size, hbits, torch.from_numpy(hc.copy()),
                       torch.from_numpy(get(aw, "scales", 2 * rows, "awq ").view(np.float16).copy()))
    if "lqer" in e:
        lq, cols = e["lqer"], numel // rows
        rank, fbits, group = lq["rank"], lq["bits"], lq["group"]
        if not (isinstance(rank, int) and 1 <= rank <= min(rows, cols) and fbits in range(2, 9) and isinstance(group, int) and group >= 1):
            raise ValueError(f"{where}: tensor {name} has an invalid LQER header (rank {rank}, bits {fbits}, group {group})")
        a = get(lq, "a", rows * rank, "lqer ").view(np.int8).reshape(rows, rank)
        b = get(lq, "b", rank * cols, "lqer ").view(np.int8).reshape(rank, cols)
        if a.min() < -2 or a.max() > 1 or b.min() < -2 ** (fbits - 1) or b.max() > 2 ** (fbits - 1) - 1:
            raise ValueError(f"{where}: tensor {name} has LQER codes outside their {fbits}-bit / 2-bit range")
        qt.lqer = LowRank(torch.from_numpy(a.copy()), torch.from_numpy(get(lq, "a_scale", 2, "lqer ").view(np.float16).copy()),
                          torch.from_numpy(b.copy()), torch.from_numpy(get(lq, "b_scales", 2 * -(-rank * cols // group), "lqer ").view(np.float16).copy()),
                          fbits, group)
    return qt


def compress(raw: bytes, method: str = "zstd") -> bytes:
    if method == "lrzip":
        return lrzip(raw, ["-z", "-L", "9"], "export")
    if method == "brotli":
        return brotli_module().compress(raw, quality=11, lgwin=24)
    if method == "lzma":
        return lzma.compress(raw, preset=9)
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True).compress(raw)  # checksum: corruption cannot decode silently


def decompress(blob: bytes, where: str = "artifact", method: str = "zstd") -> bytes:
    if method == "lrzip":
        return lrzip(blob, ["-d"], where)
    if method == "brotli":
        brotli = brotli_module()
        try:
            return brotli.decompress(blob)
        except brotli.error as e:
            raise ValueError(f"{where}: brotli decompression failed ({e}); the file is truncated or corrupt") from None
    if method == "lzma":
        try:
            return lzma.decompress(blob)
        except lzma.LZMAError as e:
            raise ValueError(f"{where}: lzma decompression failed ({e}); the file is truncated or corrupt") from None
    try:
        return zstandard.ZstdDecompressor().decompress(blob, max_output_size=1 << 32)
    except zstandard.ZstdError as e:
        raise ValueError(f"{where}: zstd decompression failed ({e}); the file is truncated or corrupt") from None


def format_label(bits: set[int], compressor: str = "zstd") -> str:
    return "-".join("fp16" if b == 16 else f"int{b}" for b in sorted(bits)) + f"_{compressor}{COMPRESSOR_LEVELS[compressor]}"


def artifact_label(cfg: Config, roles: set[str]) -> str:
    """Name of the export format built from the bits actually used (labels must not lie)."""
    return format_label({cfg.bits(r) for r in roles if r not in ("scalar", "softcap")}, export_compressor(cfg))


def export_compressor(cfg: Config, log=None) -> str:
    """EXPORT_COMPRESSOR, or brotli (with a warning) when pergroup's lrzip binary is missing."""
    if cfg.export_compressor == "pergroup" and not shutil.which("lrzip"):
        if log:
            log("WARNING: EXPORT_COMPRESSOR=pergroup but no lrzip binary on PATH (Debian package lrzip): the artifact is brotli")
        return "brotli"
    return cfg.export_compressor


def artifact_meta(cfg: Config) -> dict:
    """What an artifact's header says about the run that wrote it: the model settings and the
    sha256 of the readable source (the same for the script and its packed copy)."""
    return dict(model=model_settings(cfg), code_sha256=source_sha256())


def read_artifact_meta(blob: bytes, where: str = "artifact") -> dict:
    """The header's model settings and code hash ({} for an artifact written before they were recorded)."""
    header, _ = read_header(blob, where)
    meta = {k: header[k] for k in ("model", "code_sha256") if isinstance(header, dict) and k in header}
    if not isinstance(meta.get("model", {}), dict) or not isinstance(meta.get("code_sha256", ""), str):
        raise ValueError(f"{where}: corrupt header (model settings or code hash of the wrong type)")
    return meta


def artifact_file_label(blob: bytes, where: str = "artifact") -> str:
    """The format label of an existing artifact, from the bits its header records (not from
    the current QUANT_BITS_* settings, which a re-scoring run need not repeat)."""
    if len(blob) < 8 or blob[:4] != ARTIFACT_MAGIC:
        raise ValueError(f"{where}: not a train_gpt.py artifact (bad magic)")
    (hlen,) = struct.unpack("<I", blob[4:8])
    try:
        header = json.loads(decompress(blob[8:8 + hlen], where))
        compressor = header.get("compressor", "zstd")
        if compressor not in COMPRESSOR_LEVELS:
            raise ValueError(f"unknown compressor {compressor!r}")
        return format_label({e["bits"] for e in header["tensors"] if e["role"] not in ("scalar", "softcap")}, compressor)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{where}: corrupt header ({e})") from None


def export_artifact(state: dict[str, Tensor], roles: dict[str, str], cfg: Config, path: Path, log,
                    hessians: dict[str, Tensor] | None = None) -> bytes:
    """Quantize, encode, write the file and log the per-role budget. `hessians` (from
    collect_hessians) are needed with QUANT_METHOD=gptq."""
    t0, compressor = time.perf_counter(), export_compressor(cfg, log)
    blob, report = encode_artifact(quantize_state(state, roles, cfg, log, hessians), cfg.export_packing,
                                   compressor, artifact_meta(cfg))
    atomic_write(path, blob)
    for r in report:
        sizes = " ".join(f"{o}_raw_bytes:{raw} {o}_compressed_bytes:{z}" for o, (raw, z) in r["sizes"].items())
        z = r["sizes"][r["chosen"]][1]
        log(f"budget role:{r['role']} params:{r['params']} bits:{r['bits']} compressor:{compressor} {sizes} chosen:{r['chosen']} "
            f"bits_per_param:{8 * z / max(r['params'], 1):.3f}")
    log(f"artifact:{path} format:{artifact_file_label(blob)} params:{sum(r['params'] for r in report)} "
        f"bytes:{len(blob)} export_time:{1000 * (time.perf_counter() - t0):.0f}ms")
    return blob


# ===== 8. EVAL =====

@dataclass
class EvalResult:
    loss: float
    bpb: float
    tokens: int
    bytes: int
    ms: float
    per_token: Tensor | None = None  # nll of each prediction (single process; for tests)


def finish_eval(sums: Tensor, ctx: Dist, t0: float, per_token=None) -> EvalResult:
    all_reduce_(sums, ctx)
    nats, tokens, nbytes = sums.tolist()
    return EvalResult(nats / tokens, nats / (math.log(2) * nbytes), int(tokens), int(nbytes),
                      1000 * (time.perf_counter() - t0), per_token)


def token_nll(model: nn.Module, x: Tensor, y: Tensor, lora: dict | None = None, score_from: int = 0,
              hint: Tensor | None = None) -> Tensor:
    """nll of the targets y[:, score_from:]; the model computes logits only for those positions.
    With `hint` (shaped like those targets): a [2, ...] stack, the nll of y and of the hint."""
    kw = dict(lora=lora) if lora else {}
    if score_from:  # only then: any model (x) -> logits scores a non-overlapping batch
        kw["score_from"] = score_from
    logits = model(x, **kw).float()
    logits = logits.reshape(-1, logits.size(-1))
    y = y[:, score_from:]
    if hint is None:
        return F.cross_entropy(logits, y.reshape(-1), reduction="none").view(y.shape)
    picked = logits.gather(1, torch.stack([y.reshape(-1), hint.reshape(-1)], 1))
    return (torch.logsumexp(logits, 1)[:, None] - picked).T.reshape(2, *y.shape)


# Token n-gram tilt (the 1.0565 record's NGRAM_TILT_ENABLED, its token channel only). For the
# prediction of token t+1, the context is the TOKEN_ORDER-1 tokens up to t of the validation
# stream, hashed as the record's helper hashes it (so its hints are reproduced exactly, hash
# collisions included; the helper also prepends a copy of the first target to the stream). The
# hint is the token that has followed that context most often so far (ties: the first to reach
# the count); it fires when its count / the context's count >= TOKEN_THRESHOLD. Only tokens
# before the scored one are read. A fired hint h gets +TOKEN_BOOST b on its logit and the
# softmax renormalises over the whole vocabulary:
#   p'(a) = p(a) e^(b[a=h]) / Z,  Z = 1 + p(h)(e^b - 1),  so  nll' = nll - b[y=h] + log Z.
NGRAM_COEFFS = np.array([36313, 27191, 51647, 81929, 131071, 196613, 262147, 393241, 524309, 655373, 786433,
                         917521, 1048583, 1179653, 1310729, 1441801, 1572869, 1703941, 1835017, 1966087, 2097169,
                         2228243, 2359319, 2490389, 2621471, 2752549, 2883617, 3014687, 3145757, 3276833, 3407903,
                         3538973], dtype=np.uint64)


def ngram_hints(tokens: np.ndarray, order: int) -> tuple[np.ndarray, np.ndarray]:
    """(hint, share) per prediction p (reading tokens[..p], scoring tokens[p+1]), in one sorted
    pass (numpy; no per-token Python loop). share = 0 where the context has not occurred yet."""
    t = np.asarray(tokens).astype(np.uint64)[1:]
    n, L = len(t), order - 1
    hint, share = np.zeros(n, np.int64), np.zeros(n, np.float32)
    s = np.concatenate([t[:1], t]) if L else t
    m = n - max(L - 1, 0)  # predictions L-1.. have a full context
    if m <= 0:
        return hint, share
    ctx = np.zeros(m, np.uint64)
    for j in range(L):
        ctx ^= s[j:j + m] * NGRAM_COEFFS[j]
    y, idx = t[n - m:], np.arange(m)

    def groups(key):  # stable sort by key: order, group-start flags, start index of each one's group
        o = np.argsort(key, kind="stable")
        k = key[o]
        new = np.r_[True, k[1:] != k[:-1]]
        return o, new, np.maximum.accumulate(np.where(new, idx, 0))

    # count of each (context, next token) pair including this occurrence
    o, new, start = groups((ctx * np.uint64(1000003)) ^ (y * NGRAM_COEFFS[L % 32]))
    count = np.empty(m, np.int64)
    count[o] = idx - start + 1
    # per context, in stream order: running best pair count and the occurrence that set it
    o, new, start = groups(ctx)
    span = m + 1
    run = np.maximum.accumulate((np.cumsum(new) - 1) * span + count[o])  # segmented running max
    best = np.maximum.accumulate(np.where(new | (run > np.r_[-1, run[:-1]]), idx, 0))
    seen = np.flatnonzero(~new)  # a lookup reads the state left by the previous occurrence
    hint[o[seen] + n - m] = y[o][best[seen - 1]].astype(np.int64)
    share[o[seen] + n - m] = (run[seen - 1] % span).astype(np.float32) / (seen - start[seen]).astype(np.float32)
    return hint, share


def ngram_tilt(val_tokens: Tensor, cfg: Config, log) -> tuple[Tensor, Tensor]:
    """The tilt's per-prediction hint and boost (0 where it does not fire) over the whole split,
    on the device, padded by one entry so gather_windows can read them like the tokens."""
    t0 = time.perf_counter()
    hint, share = ngram_hints(val_tokens.cpu().numpy(), cfg.token_order)
    fire = share >= np.float32(cfg.token_threshold)
    boost = np.where(fire, np.float32(cfg.token_boost), np.float32(0))
    log(f"ngram_tilt:precompute_done elapsed:{time.perf_counter() - t0:.2f}s predictions:{len(hint)} fired:{int(fire.sum())} "
        f"order:{cfg.token_order} threshold:{cfg.token_threshold} boost:{cfg.token_boost} (inside the eval clock)")
    pad = lambda a: torch.from_numpy(np.r_[a, a[:1] * 0]).to(val_tokens.device)
    return pad(hint), pad(boost)


def tilt_nll(nll: Tensor, hint_nll: Tensor, y: Tensor, hint: Tensor, boost: Tensor) -> Tensor:
    """nll under the tilted distribution (see above); exactly nll where boost is 0."""
    return nll - boost * (y == hint) + torch.log1p(torch.exp(-hint_nll) * torch.expm1(boost))


def eval_batch_rows(cfg: Config, ctx: Dist, n_val: int) -> int:
    """Sequences per forward batch of the non-overlapping eval: VAL_BATCH_SIZE/8 tokens, as in
    the official scripts (VAL_BATCH_SIZE // (world_size * grad_accum)), so one process, one GPU
    and eight GPUs hold the same activations and logits per forward. Every batch, the last one
    too, has exactly this many rows (a short batch is padded): one compiled graph serves the
    whole eval, where a ragged last batch would cost a recompile inside the eval budget."""
    n_seqs = (n_val - 1) // cfg.train_seq_len
    return max(1, min(cfg.val_batch_size // (8 * cfg.train_seq_len), math.ceil(n_seqs / ctx.world_size)))


def padded_rows(first: int, rows: int, end: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Indices first .. first+rows-1 of a fixed-size batch over items [.., end): past the end
    they repeat the last item, and `real` marks the rows that score."""
    idx = torch.arange(first, first + rows, device=device)
    return idx.clamp_max(end - 1), idx < end


def gather_windows(tokens: Tensor, starts: Tensor, length: int) -> tuple[Tensor, Tensor]:
    """Inputs and targets of the windows tokens[start : start + length + 1], one gather for the
    batch. Every compiled eval input is built here (prewarm_eval too), so all share one shape,
    stride and tensor kind, and each eval runs one compiled graph."""
    window = tokens[starts[:, None] + torch.arange(length + 1, device=tokens.device)[None, :]]
    return window[:, :-1], window[:, 1:]


@torch.inference_mode()
def evaluate(model: nn.Module, val_tokens: Tensor, val_bytes: Tensor, cfg: Config, ctx: Dist) -> EvalResult:
    """Non-overlapping eval (used during training and for the quantization gap): the split is
    cut into TRAIN_SEQ_LEN windows (a final partial window is dropped), divided contiguously
    across ranks; nat and byte sums are fp64 and all-reduced."""
    t0 = time.perf_counter()
    seq = cfg.train_seq_len
    n_seqs = (len(val_tokens) - 1) // seq
    lo, hi = n_seqs * ctx.rank // ctx.world_size, n_seqs * (ctx.rank + 1) // ctx.world_size
    rows = eval_batch_rows(cfg, ctx, len(val_tokens))
    tokens = val_tokens.to(ctx.device, dtype=torch.int64)
    nbytes = val_bytes.to(ctx.device)
    sums = torch.zeros(3, dtype=torch.float64, device=ctx.device)  # nats, tokens, bytes
    was_training = model.training
    model.eval()
    with autocast(cfg, ctx):
        for s in range(lo, hi, rows):
            seqs, real = padded_rows(s, rows, hi, ctx.device)  # a short last batch repeats its last sequence
            real = real[:, None]
            x, y = gather_windows(tokens, seqs * seq, seq)
            sums[0] += (token_nll(model, x, y).double() * real).sum()
            sums[1] += real.sum() * seq
            sums[2] += (gather_windows(nbytes, seqs * seq, seq)[1] * real).sum()
    model.train(was_training)
    return finish_eval(sums, ctx, t0)


def sliding_windows(n_pred: int, win: int, stride: int) -> list[tuple[int, int, int]]:
    """Windows (start, length, first_scored) over predictions 0..n_pred-1 (prediction p reads
    tokens[..p] and scores tokens[p+1]). The first window scores all its positions; each later
    window advances by `stride`, ends on the next unscored prediction block and scores only
    that block, with up to win-stride tokens of context; the last one covers the tail. So every
    prediction is scored exactly once."""
    end = min(win, n_pred)
    windows = [(0, end, 0)]
    while end < n_pred:
        new_end = min(end + stride, n_pred)
        start = max(0, new_end - win)
        windows.append((start, new_end - start, end - start))
        end = new_end
    return windows


def sliding_score_from(first_scored: int, length: int, stride: int) -> int:
    """First position whose logits a sliding batch needs: every window but the first scores
    only positions >= length - stride, so a batch holding only such windows skips the head
    for the rest. Two values in all (0 for the batch with the first window), so two graphs."""
    return length - stride if first_scored >= length - stride else 0


def sliding_batch_rows(cfg: Config, ctx: Dist, n_windows: int) -> int:
    """Windows per forward batch of the sliding eval; like eval_batch_rows, fixed for the
    whole eval (the last batch is padded), so one compiled graph serves it."""
    return max(1, min(cfg.eval_batch_seqs, math.ceil(n_windows / ctx.world_size)))


@torch.inference_mode()
def evaluate_sliding(model: nn.Module, val_tokens: Tensor, val_bytes: Tensor, cfg: Config, ctx: Dist,
                     stride: int, keep_per_token: bool = False, tilt: tuple[Tensor, Tensor] | None = None,
                     log=None) -> EvalResult:
    """`tilt`: ngram_tilt's (hint, boost), applied to every scored prediction. `log` (rank 0's
    logger) gets a sliding_progress line every ~10% of this rank's windows."""
    t0 = time.perf_counter()
    n_pred = len(val_tokens) - 1
    windows = sliding_windows(n_pred, cfg.window_len, stride)
    mine = windows[len(windows) * ctx.rank // ctx.world_size:len(windows) * (ctx.rank + 1) // ctx.world_size]
    rows = sliding_batch_rows(cfg, ctx, len(windows))
    sums = torch.zeros(3, dtype=torch.float64, device=ctx.device)
    per_token = torch.full((n_pred,), float("nan"), dtype=torch.float64) if keep_per_token else None
    tokens = val_tokens.to(ctx.device, dtype=torch.int64)
    nbytes = val_bytes.to(ctx.device)
    was_training = model.training
    model.eval()
    starts = torch.tensor([s for s, _, _ in mine], device=ctx.device, dtype=torch.int64)
    firsts = torch.tensor([f for _, _, f in mine], device=ctx.device, dtype=torch.int64)
    length = windows[0][1]  # every window has the window length unless the split is shorter
    progress = Progress(log if ctx.is_main else None, "sliding", len(mine))
    with autocast(cfg, ctx):
        for b in range(0, len(mine), rows):
            progress(b)
            batch = mine[b:b + rows]
            # Pad a short last batch by repeating its last window; padded rows score nothing.
            sel, real = padded_rows(b, rows, len(mine), ctx.device)
            x, y = gather_windows(tokens, starts[sel], length)
            sf = sliding_score_from(min(f for _, _, f in batch), length, stride)
            if tilt is None:
                nll = token_nll(model, x, y, score_from=sf)
            else:
                hint, boost = (gather_windows(a, starts[sel], length)[0][:, sf:] for a in tilt)
                nll = tilt_nll(*token_nll(model, x, y, score_from=sf, hint=hint), y[:, sf:], hint, boost)
            mask = (torch.arange(sf, length, device=ctx.device)[None, :] >= firsts[sel, None]) & real[:, None]
            sums[0] += (nll.double() * mask).sum()  # multiply by the mask: boolean indexing would sync
            sums[1] += mask.sum()
            sums[2] += (gather_windows(nbytes, starts[sel], length)[1][:, sf:] * mask).sum()
            if per_token is not None:
                for row, (s, _, f) in enumerate(batch):
                    per_token[s + f:s + length] = nll[row, f - sf:].double().cpu()
    model.train(was_training)
    return finish_eval(sums, ctx, t0, per_token)


@torch.inference_mode()
def prewarm_eval(model: nn.Module, cfg: Config, ctx: Dist, n_val: int, sliding: bool = True, log=None) -> float:
    """Build the compiled eval graphs (the exact shapes and modes evaluate and evaluate_sliding
    use) on dummy tokens before the training timer starts, so neither training-time
    validation nor the final scoring pays for compilation. Reads no validation data.
    `log` gets a line per graph (each compile takes tens of seconds on CPU). Returns ms."""
    t0 = time.perf_counter()
    dummy = torch.zeros(n_val, dtype=torch.int64, device=ctx.device)
    shapes = [(eval_batch_rows(cfg, ctx, n_val), cfg.train_seq_len, 0)]
    if cfg.eval_stride and sliding:
        windows = sliding_windows(n_val - 1, cfg.window_len, cfg.eval_stride)
        rows, length = sliding_batch_rows(cfg, ctx, len(windows)), windows[0][1]
        shapes += [(rows, length, sliding_score_from(f, length, cfg.eval_stride)) for f in (0, length)]
    inputs = [(gather_windows(dummy, torch.zeros(rows, dtype=torch.int64, device=ctx.device), length)[0], sf)
              for rows, length, sf in dict.fromkeys(shapes)]
    was_training, was_looping = model.training, looping_of(model)
    model.eval()
    graphs = [(looping, x, sf) for looping in eval_loop_states(cfg) for x, sf in inputs]
    if log is not None:
        log(f"eval_prewarm: compiling {len(graphs)} eval graph(s) on dummy tokens (shapes "
            + ", ".join(f"{tuple(x.shape)}{' looped' if lp else ''}" for lp, x, _ in graphs) + ")")
    with autocast(cfg, ctx):
        for i, (looping, x, sf) in enumerate(graphs):
            set_looping(model, looping)
            model(x, score_from=sf)
            if log is not None:
                log(f"eval_prewarm_graph:{i + 1}/{len(graphs)} elapsed:{time.perf_counter() - t0:.1f}s")
    set_looping(model, was_looping)
    model.train(was_training)
    sync(ctx)
    return 1000 * (time.perf_counter() - t0)


def eval_loop_states(cfg: Config) -> list[bool]:
    """The depth-recurrence states evaluation can run in: the final scores always loop (when
    NUM_LOOPS > 0); validation during training may also see the plain graph before the switch."""
    if not cfg.num_loops:
        return [False]
    return [False, True] if cfg.val_loss_every and cfg.enable_looping_at > 0 else [True]


def document_spans(tokens: Tensor, bos_id: int) -> list[tuple[int, int]]:
    """Prediction ranges [start, end) per document: a document starts at its BOS and predicts up
    to and including the next document's BOS, so the spans tile all predictions exactly once."""
    starts = (tokens[:-1] == bos_id).nonzero().flatten().tolist()
    if not starts or starts[0] != 0:
        starts = [0] + starts
    ends = starts[1:] + [len(tokens) - 1]
    return [(s, e) for s, e in zip(starts, ends) if e > s]


def lora_units(model: GPT, cfg: Config) -> list[tuple[str, int]]:
    """(key prefix, physical block) of every adapter set: one per virtual layer slot
    ("slots.<slot>.") with TTT_LORA_PER_SLOT, else one per block ("blocks.<i>.") shared by all
    of its passes. Without looping the two are the same adapters under another name."""
    if cfg.ttt_lora_per_slot:
        return [(f"slots.{slot}.", i) for slot, i in enumerate(virtual_layers(cfg, model.looping))]
    return [(f"blocks.{i}.", i) for i in range(len(model.blocks))]


def make_lora(model: GPT, cfg: Config, n: int, device: torch.device) -> dict[str, tuple[Tensor, Tensor]]:
    """Fresh per-document adapters: A ~ U(+-1/sqrt(in)), B = 0, so each starts as a no-op."""
    model, shapes = unwrap(model), {}
    for prefix, i in lora_units(model, cfg):
        a, m, d = model.blocks[i].attn, model.blocks[i].mlp, cfg.model_dim
        dims = dict(q=a.c_q.weight.shape[::-1], k=a.c_k.weight.shape[::-1], v=a.c_v.weight.shape[::-1], o=(d, d), mlp=(d, d),
                    up=m.fc.weight.shape[::-1], down=m.proj.weight.shape[::-1])
        shapes.update({prefix + t: tuple(dims[t]) for t in cfg.ttt_target_list if t in dims})
    if "head" in cfg.ttt_target_list:
        shapes["head"] = (cfg.model_dim, cfg.vocab_size)
    # The same A for every document, from a fixed seed: a document's adapter must not depend on
    # which other documents share its batch (their lengths are information from later tokens).
    r, g = cfg.ttt_lora_rank, torch.Generator().manual_seed(0)
    lora = {k: (((torch.rand(r, i, generator=g) * 2 - 1) * i ** -0.5).to(device).repeat(n, 1, 1).requires_grad_(),
                torch.zeros(n, o, r, device=device, requires_grad=True)) for k, (i, o) in shapes.items()}
    for t in (t for pair in lora.values() for t in pair):
        torch._dynamo.maybe_mark_dynamic(t, 0)  # batches of any size share one compiled graph
    return lora


def scaled_lora(lora: dict, cfg: Config) -> dict:
    """What the model sees: (A, B * alpha/rank), i.e. the adapter output scaled by alpha/rank
    while A and B stay the trained (and decayed) tensors."""
    scale = cfg.ttt_lora_alpha / cfg.ttt_lora_rank if cfg.ttt_lora_alpha else 1.0
    return {k: (A, B * scale) for k, (A, B) in lora.items()}


def ttt_queue(spans: list[tuple[int, int]], cfg: Config) -> list[tuple[int, list[tuple[int, int]]]]:
    """The 1.0611 record's batch queue: documents sorted by length (stable), cut into batches of
    TTT_BATCH_SIZE from the shortest (similar lengths pad little), then handed out longest batch
    first (by its longest document; stable), so the long batches are not left for the end.
    Returns (the batch's index in length order, its documents) in hand-out order."""
    docs = sorted(spans, key=lambda s: s[1] - s[0])
    batches = [docs[i:i + cfg.ttt_batch_size] for i in range(0, len(docs), cfg.ttt_batch_size)]
    return sorted(enumerate(batches), key=lambda b: b[1][-1][0] - b[1][-1][1])  # stable: ties keep length order


def ttt_phases(queue: list, n_docs: int, cfg: Config, world_size: int) -> list[tuple[int, list[tuple[int, int]]]]:
    """(point, documents) of each global phase that runs: phase p runs once the first `point`
    batches of the queue are scored and before any later one is. Its document count is
    b = min(PREFIX_DOCS, all)*(p+1)/PHASES (the record's 833/1,666/2,500); `point` is the first
    batch count whose documents reach b (at least one more than the last phase's), plus
    TTT_PHASE_EXTRA_BATCHES (-1: the world size - 1, the batches the record's other ranks
    are holding when the count is reached). The phase trains on the b documents of those
    batches that come first in length order (the record's rule: the shortest of them). After a
    phase the next count is checked from the first batch completed after it on.
    A phase whose point is the end of the queue is dropped: it would help no document."""
    P = cfg.phased_ttt_num_phases
    extra = world_size - 1 if cfg.ttt_phase_extra_batches < 0 else cfg.ttt_phase_extra_batches
    total, counts = min(n_docs, cfg.phased_ttt_prefix_docs), list(itertools.accumulate(len(d) for _, d in queue))
    phases, point = [], 0
    for p in range(P):
        b = total * (p + 1) // P
        if b == 0:
            continue
        point = max(point + 1, bisect.bisect_left(counts, b) + 1) + extra
        if point >= len(queue):
            break
        scored = sorted((k, j, doc) for k, docs in queue[:point] for j, doc in enumerate(docs))
        phases.append((point, [doc for *_, doc in scored[:b]]))
    return phases


def ttt_chunk_plan(docs: list[tuple[int, int]], cfg: Config, adapt: bool) -> list[tuple[list, list, list, int]]:
    """Per chunk of a batch (host-side ints only, no device sync): for every row the window
    start w0, the first scored prediction a and the end z (all relative to the document start;
    a == z: nothing left), and the context length: the chunk's longest window, as the record's
    (c+1)*TTT_CHUNK_SIZE up to TTT_EVAL_SEQ_LEN (shorter when every live row ends earlier; at
    least 2: torch.compile specializes a dynamic size of 1, so a length-1 chunk would recompile).
    Adapting, a chunk scores TTT_CHUNK_SIZE predictions with up to TTT_EVAL_SEQ_LEN tokens of
    in-document context; without adaptation it scores whole TTT_EVAL_SEQ_LEN windows."""
    chunk = cfg.ttt_chunk_size if adapt else cfg.ttt_eval_seq_len
    lens, plan = [e - s for s, e in docs], []
    for c in range(math.ceil(max(lens) / chunk)):
        a = [min(c * chunk, n) for n in lens]
        z = [min((c + 1) * chunk, n) for n in lens]
        w0 = [max(0, zz - cfg.ttt_eval_seq_len) for zz in z]
        plan.append((w0, a, z, max(2, *(zz - ww for ww, aa, zz in zip(w0, a, z) if zz > aa))))
    return plan


def ttt_batch_work(docs: list[tuple[int, int]], cfg: Config, adapt: bool) -> int:
    """Row-tokens the batch's forwards process: the unit of the time projection."""
    return len(docs) * sum(L for *_, L in ttt_chunk_plan(docs, cfg, adapt))


def ttt_score_batch(model: nn.Module, tokens: Tensor, nbytes: Tensor, cfg: Config, ctx: Dist, docs: list[tuple[int, int]],
                    lora: dict, sums: Tensor, per_token: Tensor | None, trace: list | None, adapt: bool,
                    tilt: tuple[Tensor, Tensor] | None = None) -> None:
    """Score one batch of documents chunk by chunk. Each chunk's scores are added to the sums
    BEFORE the adapters step on it, from the same forward; a document's last chunk is scored
    and never trained on. Rows past a document's end score nothing, as does the empty second row
    of a one-document batch (a dynamic size of 1 would recompile, see ttt_chunk_plan). The
    n-gram tilt, if any, changes the scores only: the adapters train on the model's own nll."""
    dev = ctx.device
    docs = docs + [(docs[-1][1], docs[-1][1])] * (2 - len(docs))
    starts, lens = [s for s, _ in docs], [e - s for s, e in docs]
    params = [t for pair in lora.values() for t in pair]
    opt = torch.optim.AdamW(params, lr=cfg.ttt_lora_lr, betas=(cfg.ttt_beta1, cfg.ttt_beta2), eps=1e-10,
                            weight_decay=cfg.ttt_weight_decay) if adapt else None
    pos = torch.arange(cfg.ttt_eval_seq_len, device=dev)
    for w0, a, z, L in ttt_chunk_plan(docs, cfg, adapt):
        train = [adapt and zz < n for zz, n in zip(z, lens)]  # more of the document follows this chunk
        live = [zz > aa for aa, zz in zip(a, z)]
        first = torch.tensor([aa - ww for aa, ww in zip(a, w0)], device=dev)
        last = torch.tensor([zz - ww if ok else 0 for ww, zz, ok in zip(w0, z, live)], device=dev)
        j = pos[:L]
        valid = j[None, :] < last[:, None]
        scored = valid & (j[None, :] >= first[:, None])
        idx = (torch.tensor([s + ww for s, ww in zip(starts, w0)], device=dev)[:, None] + j[None, :]).clamp_max(len(tokens) - 2)
        x, y = torch.where(valid, tokens[idx], 0), torch.where(valid, tokens[idx + 1], 0)
        torch._dynamo.maybe_mark_dynamic(x, 0)  # exact contexts: one graph for every row count and length
        torch._dynamo.maybe_mark_dynamic(x, 1)
        for step in range(cfg.ttt_grad_steps if any(train) else 1):
            with autocast(cfg, ctx):
                if tilt is None:
                    nll = score = token_nll(model, x, y, scaled_lora(lora, cfg))
                else:
                    hint, boost = tilt[0][idx], tilt[1][idx]
                    nll, hint_nll = token_nll(model, x, y, scaled_lora(lora, cfg), hint=hint)
                    score = tilt_nll(nll, hint_nll, y, hint, boost)
            if step == 0:  # score first: these numbers are final before any update sees this chunk
                with torch.no_grad():
                    sums += torch.stack([(score.double() * scored).sum(), scored.sum().double(),
                                         (nbytes[idx + 1] * scored).sum().double()])
                    if per_token is not None:
                        for r in range(len(docs)):
                            per_token[starts[r] + a[r]:starts[r] + z[r]] = score[r, a[r] - w0[r]:z[r] - w0[r]].double().cpu()
                if trace is not None:
                    trace.extend(("score", starts[r] + a[r], starts[r] + z[r]) for r in range(len(docs)) if live[r])
            if not any(train):
                break
            # Sum of per-document mean losses: each document's adapter sees only its own gradient.
            per_doc = (nll * scored).sum(1) / scored.sum(1).clamp_min(1)
            opt.zero_grad(set_to_none=True)
            (per_doc * torch.tensor(train, device=dev)).sum().backward()
            opt.step()
            if trace is not None:  # the predictions the loss read: the window, every one already scored
                trace.extend(("train", starts[r] + w0[r], starts[r] + z[r]) for r in range(len(docs)) if train[r])


def global_ttt_lr(cfg: Config, c: int, n_chunks: int) -> float:
    """LR of a phase's chunk c of n_chunks (the record's schedule; its last chunk is never
    trained): a linear rise from GLOBAL_TTT_WARMUP_START_LR to GLOBAL_TTT_LR over the first
    GLOBAL_TTT_WARMUP_CHUNKS chunks, then a cosine from GLOBAL_TTT_LR towards 0 at chunk n_chunks-1."""
    w = min(cfg.global_ttt_warmup_chunks, n_chunks - 1)
    if c < w:
        return cfg.global_ttt_warmup_start_lr + (cfg.global_ttt_lr - cfg.global_ttt_warmup_start_lr) * c / max(w - 1, 1)
    return cfg.global_ttt_lr * 0.5 * (1 + math.cos(math.pi * (c - w) / max(n_chunks - 1 - w, 1)))


def global_ttt_split(cfg: Config, world_size: int) -> tuple[int, list[tuple[int, int]]]:
    """Sequences per chunk, each rank's contiguous share [lo, hi) of them, and the steps per
    chunk: every rank takes as many steps (a rank out of sequences adds a zero gradient)."""
    n = cfg.global_ttt_chunk_tokens // cfg.train_seq_len
    shares = [(n * r // world_size, n * (r + 1) // world_size) for r in range(world_size)]
    return math.ceil(max(hi - lo for lo, hi in shares) / cfg.global_ttt_batch_seqs), shares


def global_ttt_work(n_tokens: int, cfg: Config, ctx: Dist) -> int:
    """Row-tokens one rank processes in a phase over n_tokens of documents."""
    n_chunks = math.ceil((n_tokens - 1) / cfg.global_ttt_chunk_tokens)
    lo, hi = global_ttt_split(cfg, ctx.world_size)[1][ctx.rank]
    return max(0, n_chunks - 1) * cfg.global_ttt_epochs * (hi - lo) * cfg.train_seq_len


def global_ttt_phase(model: nn.Module, stream: Tensor, cfg: Config, ctx: Dist) -> int:
    """One global phase (the record's): plain SGD (momentum restarted) on all base weights over
    `stream`, the phase's documents end to end, in chunks of GLOBAL_TTT_CHUNK_TOKENS (the last
    chunk, full or not, is not trained). A chunk's TRAIN_SEQ_LEN sequences are split into
    contiguous shares, one per rank, each trained in steps of at most GLOBAL_TTT_BATCH_SEQS
    sequences: with ATTN_DOC_MASK=1 as one row attending within documents (cut every
    TRAIN_SEQ_LEN tokens), else as rows. Per step: each rank's mean loss, gradients averaged
    over the ranks that had sequences, clipped, one SGD step at the chunk's LR. Returns the
    row-tokens this rank processed."""
    seq, C = cfg.train_seq_len, cfg.global_ttt_chunk_tokens
    n_chunks = math.ceil((len(stream) - 1) / C)
    steps, shares = global_ttt_split(cfg, ctx.world_size)
    params = list(model.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.SGD(params, lr=cfg.global_ttt_lr, momentum=cfg.global_ttt_momentum)
    work = 0
    for c in range(n_chunks - 1):
        for group in opt.param_groups:
            group["lr"] = global_ttt_lr(cfg, c, n_chunks)
        for _, k in itertools.product(range(cfg.global_ttt_epochs), range(steps)):
            rows = [(lo + k * cfg.global_ttt_batch_seqs, min(hi, lo + (k + 1) * cfg.global_ttt_batch_seqs)) for lo, hi in shares]
            lo, hi = rows[ctx.rank]
            opt.zero_grad(set_to_none=True)
            if hi > lo:
                window = stream[c * C + lo * seq:c * C + hi * seq + 1].to(ctx.device, dtype=torch.int64)
                x, y = window[:-1].view(-1, seq), window[1:].view(-1, seq)
                packed = cfg.attn_doc_mask
                with autocast(cfg, ctx):
                    loss = model(x.reshape(1, -1) if packed else x, y.reshape(1, -1) if packed else y, packed=packed)
                loss.backward()
                work += (hi - lo) * seq
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
            flat = all_reduce_(torch.cat([g.reshape(-1) for g in grads]), ctx) / sum(b > a for a, b in rows)
            for p, f in zip(params, flat.split([p.numel() for p in params])):
                p.grad = f.view_as(p)
            if cfg.global_ttt_grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.global_ttt_grad_clip)
            opt.step()
    for p in params:
        p.requires_grad_(False)
        p.grad = None
    return work


TTT_EVALS = itertools.count()  # every rank runs the same evals in the same order: one store key per eval


def ttt_claimer(ctx: Dist):
    """Hands out queue positions 0, 1, 2, ... to whichever rank asks next: an atomic add on the
    process group's key-value store (the TCPStore torchrun sets up, whatever the backend, so
    NCCL and gloo, one node or several), where the record locks a counter file in /tmp."""
    if not ctx.enabled:
        return itertools.count().__next__
    store, key = dist.distributed_c10d._get_default_store(), f"ttt_queue_{next(TTT_EVALS)}"
    return lambda: store.add(key, 1) - 1


def prewarm_ttt(model: nn.Module, cfg: Config, ctx: Dist) -> float:
    """Build the compiled TTT graphs before the eval timer on random tokens (no validation token
    is read): forward and backward with adapters at the shortest and the longest context (the
    seq dim is dynamic: one graph serves every length, as the record's), and the global-SGD
    step's forward and backward. No optimizer steps: the weights are untouched. Returns ms."""
    t0 = time.perf_counter()
    g = torch.Generator().manual_seed(0)
    was_training = model.training
    model.eval()
    params = list(model.parameters())
    trainable = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    rows = max(2, cfg.ttt_batch_size)  # as the eval pads a batch: a dynamic size of 1 would specialize
    lora = make_lora(model, cfg, rows, ctx.device)
    for L in dict.fromkeys((cfg.ttt_chunk_size, cfg.ttt_eval_seq_len)):
        x = torch.randint(0, cfg.vocab_size, (rows, L), generator=g).to(ctx.device)
        torch._dynamo.maybe_mark_dynamic(x, 0)
        torch._dynamo.maybe_mark_dynamic(x, 1)
        with autocast(cfg, ctx):
            nll = token_nll(model, x, x, scaled_lora(lora, cfg))
        nll.sum().backward()
    if cfg.phased_ttt_num_phases:
        for p in params:
            p.requires_grad_(True)
        steps, shares = global_ttt_split(cfg, ctx.world_size)
        rows = min(cfg.global_ttt_batch_seqs, shares[ctx.rank][1] - shares[ctx.rank][0])
        x = torch.randint(0, cfg.vocab_size, (rows, cfg.train_seq_len), generator=g).to(ctx.device)
        x = x.reshape(1, -1) if cfg.attn_doc_mask else x
        with autocast(cfg, ctx):
            model(x, x.clone(), packed=cfg.attn_doc_mask).backward()  # the targets a distinct tensor, as in the eval
    for p, on in zip(params, trainable):  # as they were (ASYM_LOGIT_RESCALE's caps stay frozen)
        p.requires_grad_(on)
        p.grad = None
    model.train(was_training)
    sync(ctx)
    return 1000 * (time.perf_counter() - t0)


def evaluate_ttt(model: nn.Module, val_tokens: Tensor, val_bytes: Tensor, cfg: Config, ctx: Dist, log,
                 keep_per_token: bool = False, t_start: float | None = None, trace: list | None = None,
                 tilt: tuple[Tensor, Tensor] | None = None) -> EvalResult:
    """Legal score-first phased TTT (the 1.0611 record's evaluation):
    - per-document LoRA: documents in batches of TTT_BATCH_SIZE (ttt_queue: longest batch
      first), handed out to whichever rank is free next (ttt_claimer), each scored chunk by
      chunk (ttt_score_batch), its adapter stepping on each chunk after it is scored. Adapters
      and optimizer state restart per batch (with TTT_WARM_START_A only B restarts and A carries
      over to the rank's next full batch within a phase: it has only trained on scored tokens);
    - phases (ttt_phases): once a phase's documents are scored on every rank, global SGD
      updates the base weights on them (global_ttt_phase); the later batches are scored by the
      updated model, with fresh adapters;
    - time: each rank projects the remaining time from its measured rate after every batch; at
      each phase the ranks agree (host_max) to drop the last phases while the eval (measured
      from t_start, the artifact read) would pass EVAL_BUDGET_SECONDS; a rank whose projection
      passes it with no phase left scores the rest without adaptation.
    `trace` (tests) receives ("score", lo, hi) and ("train", lo, hi) prediction ranges in order."""
    t0 = time.perf_counter()
    t_start = t0 if t_start is None else t_start
    tokens, nbytes = val_tokens.to(ctx.device, dtype=torch.int64), val_bytes.to(ctx.device)
    spans = document_spans(val_tokens, model.bos_id)
    queue = ttt_queue(spans, cfg)
    phases = ttt_phases(queue, len(spans), cfg, ctx.world_size)
    log(f"ttt_plan docs:{len(spans)} batches:{len(queue)} phases_at_batches:{[p for p, _ in phases]} "
        f"phase_docs:{[len(d) for _, d in phases]}")
    sums = torch.zeros(3, dtype=torch.float64, device=ctx.device)
    per_token = torch.full((len(val_tokens) - 1,), float("nan"), dtype=torch.float64) if keep_per_token else None
    was_training = model.training
    model.eval()
    trainable = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():  # only the adapters learn (and the base weights in a phase)
        p.requires_grad_(False)
    work = [ttt_batch_work(d, cfg, True) for _, d in queue]
    phase_work = [global_ttt_work(sum(e - s + 1 for s, e in d), cfg, ctx) for _, d in phases]
    phase_on = [True] * len(phases)
    claim, ph, adapt, lora = ttt_claimer(ctx), 0, True, None
    busy_s = sgd_s = 0.0
    done_work = sgd_work = phases_run = 0
    next_report = 0.1

    def projected(i: int) -> float:  # this rank's projection of the eval's end from batch i on, with the phases still on
        rate = busy_s / done_work if done_work else 0.0  # seconds per row-token, adapting
        rate_sgd = sgd_s / sgd_work if sgd_work else rate
        return (time.perf_counter() - t_start + sum(work[i:]) / ctx.world_size * rate
                + sum(w * rate_sgd for w, on in zip(phase_work[ph:], phase_on[ph:]) if on))

    while True:
        i = claim()
        while ph < len(phases) and i >= phases[ph][0]:  # every rank gets here: all claim past the point
            proj = host_max(projected(i), ctx)
            while proj > cfg.eval_budget_seconds and any(phase_on[ph:]):
                p = max(k for k, on in enumerate(phase_on) if on)
                phase_on[p] = False
                proj = host_max(projected(i), ctx)
                log(f"ttt_budget: dropping global phase {p + 1}: projected eval {proj:.1f}s without it "
                    f"(budget {cfg.eval_budget_seconds:.0f}s)")
            if phase_on[ph]:
                tp, docs = time.perf_counter(), phases[ph][1]
                stream = torch.cat([val_tokens[s:e + 1] for s, e in docs])  # each with its closing BOS, as the record
                sgd_work += global_ttt_phase(model, stream, cfg, ctx)
                sync(ctx)
                sgd_s += time.perf_counter() - tp
                phases_run += 1
                lora = None  # new base weights: fresh adapters
                if trace is not None:
                    trace.extend(("train", s, e) for s, e in docs)
                log(f"ttt_phase:{ph + 1}/{len(phases)} after_batches:{phases[ph][0]} docs:{len(docs)} tokens:{len(stream)} "
                    f"steps:{max(0, math.ceil((len(stream) - 1) / cfg.global_ttt_chunk_tokens) - 1) * cfg.global_ttt_epochs} "
                    f"time:{time.perf_counter() - tp:.1f}s eval_clock:{time.perf_counter() - t_start:.1f}s")
            ph += 1
        if i >= len(queue):
            break
        if adapt and projected(i) > cfg.eval_budget_seconds and not any(phase_on[ph:]):
            adapt = False
            log(f"ttt_budget: projected eval {projected(i):.1f}s > budget {cfg.eval_budget_seconds:.0f}s: "
                f"scoring the remaining documents without adaptation")
        docs, tb = queue[i][1], time.perf_counter()
        if len(docs) < cfg.ttt_batch_size:  # a short batch gets its own fresh adapters, as in the record
            batch_lora = make_lora(model, cfg, max(2, len(docs)), ctx.device)
        else:
            if lora is None or not cfg.ttt_warm_start_a:
                lora = make_lora(model, cfg, max(2, len(docs)), ctx.device)
            with torch.no_grad():
                for _, B in lora.values():
                    B.zero_()
            batch_lora = lora
        ttt_score_batch(model, tokens, nbytes, cfg, ctx, docs, batch_lora, sums, per_token, trace, adapt, tilt)
        sync(ctx)
        if adapt:
            busy_s, done_work = busy_s + time.perf_counter() - tb, done_work + work[i]
        if ctx.is_main and len(queue) > 1 and (i + 1) / len(queue) >= next_report:
            log(f"ttt_progress batches:{i + 1}/{len(queue)} elapsed:{time.perf_counter() - t0:.1f}s "
                f"eval_clock:{time.perf_counter() - t_start:.1f}s budget:{cfg.eval_budget_seconds:.0f}s")
            next_report = (i + 1) / len(queue) + 0.1
    log(f"ttt_summary phases_run:{phases_run}/{len(phases)} adapted_to_the_end:{int(adapt)} "
        f"global_sgd_time:{sgd_s:.1f}s ttt_time:{time.perf_counter() - t0:.1f}s")
    for p, on in zip(model.parameters(), trainable):
        p.requires_grad_(on)
    model.train(was_training)
    return finish_eval(sums, ctx, t0, per_token)


# ===== 9. TRAIN =====

def cpu_compiler() -> str | None:
    """The C++ compiler inductor would build CPU kernels with ($CXX, else g++/c++/clang++), or None."""
    import shutil
    for name in (os.environ.get("CXX", ""), "g++", "c++", "clang++"):
        if name and shutil.which(name):
            return name
    return None


def compile_decision(cfg: Config, ctx: Dist) -> tuple[bool, str]:
    """Whether the run is compiled, and the log's `compile:` note saying why. COMPILE=auto
    compiles on CUDA, and on CPU too when inductor has a C++ compiler: its fused kernels make a
    CPU training step about 1.7x faster than eager (docs/cpu_speed.md), which repays the first
    compile (about 90 s on 2 cores, inside the untimed warmup) within a few hundred steps.
    COMPILE=0 for quick CPU smoke runs."""
    if cfg.compile != "auto":
        return cfg.compile == "1", f"compile:{cfg.compile} (COMPILE={cfg.compile})"
    if ctx.device.type == "cuda":
        return True, "compile:1 (auto: CUDA)"
    cxx = cpu_compiler()
    if cxx:
        return True, f"compile:1 (auto: CPU, inductor kernels built with {cxx})"
    return False, "compile:0 (auto: CPU without a C++ compiler on PATH, so eager; install g++ or set CXX for 1.7x faster steps)"


def use_compile(cfg: Config, ctx: Dist) -> bool:
    return compile_decision(cfg, ctx)[0]


def compile_note(cfg: Config, ctx: Dist) -> str:
    return compile_decision(cfg, ctx)[1]


def autocast(cfg: Config, ctx: Dist):
    """bf16 autocast of every forward pass (AUTOCAST=bf16) on CUDA and on CPU alike: CPUs with
    AVX512-BF16/AMX run the matmuls about twice as fast as fp32 (docs/cpu_speed.md). Master
    weights, gradients and optimizer state stay fp32. Tests that compare exact numbers set
    AUTOCAST=off."""
    return torch.autocast(ctx.device.type, dtype=torch.bfloat16) if cfg.autocast == "bf16" else nullcontext()


def sync(ctx: Dist) -> None:
    if ctx.device.type == "cuda":
        torch.cuda.synchronize(ctx.device)


def lr_scale(cfg: Config, step: int, elapsed_ms: float) -> float:
    """1 until the warmdown, then linear to 0 over the last WARMDOWN_ITERS steps. With a
    wallclock cap the run ends at whichever comes first, the cap or ITERATIONS, so the
    warmdown follows whichever end is nearer: the last WARMDOWN_ITERS steps' worth of time at
    the current average step time, or the last WARMDOWN_ITERS steps before ITERATIONS."""
    if cfg.warmdown_iters == 0:
        return 1.0
    by_steps = (cfg.iterations - step) / cfg.warmdown_iters
    by_time = math.inf
    if cfg.train_cap_seconds > 0 and elapsed_ms > 0:  # no step time measured yet: nothing to convert
        step_ms = elapsed_ms / max(step, 1)
        by_time = (1000 * cfg.train_cap_seconds - elapsed_ms) / (cfg.warmdown_iters * step_ms)
    return min(max(min(by_steps, by_time), 0.0), 1.0)


def schedule_scale(cfg: Config, step: int, elapsed_ms: float) -> float:
    """The LR multiplier every group uses: WARMDOWN_FRAC's linear decay over the last fraction
    of training progress (the 1.08-class records' rule) or WARMDOWN_ITERS' (lr_scale), never
    below MIN_LR."""
    if cfg.warmdown_frac > 0:
        frac = progress(cfg, step, elapsed_ms)
        base = min((1 - frac) / cfg.warmdown_frac, 1.0)
    else:
        base = lr_scale(cfg, step, elapsed_ms)
    return max(base, cfg.min_lr)


def progress(cfg: Config, step: int, elapsed_ms: float) -> float:
    """Fraction of training done: the larger of time (under a wallclock cap) and steps, so
    a run that reaches ITERATIONS before the cap still passes every progress threshold."""
    frac = step / max(cfg.iterations, 1)
    if cfg.train_cap_seconds > 0:
        frac = max(frac, elapsed_ms / (1000 * cfg.train_cap_seconds))
    return min(frac, 1.0)


def seq_progress(cfg: Config, step: int, elapsed_ms: float) -> float:
    """Progress that TRAIN_SEQ_SCHEDULE reads (the records' rule): training time over the cap
    in wallclock mode under a cap, else steps over ITERATIONS."""
    if cfg.train_seq_schedule_mode == "wallclock" and cfg.train_cap_seconds > 0:
        return min(elapsed_ms / (1000 * cfg.train_cap_seconds), 1.0)
    return min(step / max(cfg.iterations, 1), 1.0)


def train_seq_len_at(cfg: Config, step: int, elapsed_ms: float) -> int:
    """The training length of the step about to run: the first stage whose end is not passed."""
    frac = seq_progress(cfg, step, elapsed_ms)
    return next(L for end, L in cfg.seq_plan if frac <= end)


def looping_due(cfg: Config, step: int, elapsed_ms: float) -> bool:
    """Depth recurrence switches on once training progress reaches ENABLE_LOOPING_AT (the
    trainer's rule; DRY_RUN's schedule simulation applies the same one)."""
    return bool(cfg.num_loops) and progress(cfg, step, elapsed_ms) >= cfg.enable_looping_at


def late_qat_due(cfg: Config, frac: float, scale: float) -> bool:
    """Late QAT's trigger: the LR scale below LATE_QAT_THRESHOLD (the records' rule), else
    training progress at QAT_START_FRAC."""
    return scale < cfg.late_qat_threshold if cfg.late_qat_threshold > 0 else frac >= cfg.qat_start_frac


def muon_momentum(cfg: Config, step: int) -> float:
    frac = min(step / cfg.muon_momentum_warmup_steps, 1.0) if cfg.muon_momentum_warmup_steps else 1.0
    return (1 - frac) * cfg.muon_momentum_warmup_start + frac * cfg.muon_momentum


class WeightAverager:
    """EMA: an fp32 shadow updated as ema += (1 - decay) * (w - ema) every EMA_EVERY steps,
    started from zero and bias-corrected (divided by 1 - decay^n after n updates, as Adam
    does): the exported weights are the normalized exponential average of the weights
    actually visited, with no share of the init. A run of 300 steps at decay 0.997 used to
    export 0.997^300 = 41% init weights; at full length (n in the thousands) the correction
    is 1 to float precision and the average is today's.
    SWA: the mean of snapshots taken every SWA_EVERY steps while lr_scale < SWA_START_FRAC."""

    def __init__(self, model: nn.Module, cfg: Config):
        self.cfg, self.params = cfg, list(model.parameters())
        self.kind = "ema" if cfg.ema_enabled else "swa" if cfg.swa_enabled else None
        self.avg = [torch.zeros_like(p, dtype=torch.float32) for p in self.params] if self.kind == "ema" else None
        self.count = 0  # EMA updates since the (re)start, or SWA snapshots

    @torch.no_grad()
    def update(self, step: int, scale: float) -> None:
        if self.kind == "ema" and step % self.cfg.ema_every == 0:
            torch._foreach_lerp_(self.avg, [p.float() for p in self.params], 1 - self.cfg.ema_decay)
            self.count += 1
        elif self.kind == "swa" and scale < self.cfg.swa_start_frac and step % self.cfg.swa_every == 0:
            if self.avg is None:
                self.avg = [p.detach().clone() for p in self.params]
            else:
                torch._foreach_add_(self.avg, self.params)
            self.count += 1

    @torch.no_grad()
    def reset(self) -> None:
        """Restart the EMA: the next update's bias-corrected value is exactly the live weights."""
        torch._foreach_zero_(self.avg)
        self.count = 0

    @torch.no_grad()
    def averaged_state(self, model: nn.Module) -> dict[str, Tensor]:
        """The model's state dict with the averaged weights in place of the live ones (what
        swap_in would load), built on the side: the averaged weights can be saved the moment
        training ends, before anything else runs, without touching the model."""
        if self.kind == "ema" and self.count:
            correction = 1 - self.cfg.ema_decay ** self.count
            avg = {id(p): a / correction for p, a in zip(self.params, self.avg)}
        elif self.kind == "swa" and self.count:
            avg = {id(p): a / self.count for p, a in zip(self.params, self.avg)}
        else:
            avg = {}
        return {k: avg.get(id(v), v).detach() for k, v in model.state_dict(keep_vars=True).items()}

    @torch.no_grad()
    def swap_in(self) -> str:
        """Load the averaged weights into the model; returns what was loaded (for the log)."""
        if self.kind == "ema" and self.count:
            correction = 1 - self.cfg.ema_decay ** self.count
            torch._foreach_copy_(self.params, [a / correction for a in self.avg])
            return f"ema decay:{self.cfg.ema_decay} updates:{self.count} bias_correction:{correction:.6f}"
        if self.kind == "ema":
            return "live weights (the EMA got no update)"
        if self.kind == "swa" and self.count:
            torch._foreach_copy_(self.params, [a / self.count for a in self.avg])
            return f"swa snapshots:{self.count}"
        return "live weights (no averaging)" if self.kind is None else "live weights (SWA collected no snapshot)"


class Interrupted(BaseException):
    """A stop signal outside training (or a second one): stop at once. A BaseException, like
    KeyboardInterrupt, so no `except Exception` on the way swallows it."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")


class RunStopped(Exception):
    """Training was cut short (non-finite loss, stop signal) after the raw weights were saved;
    main logs the message as the run's error line and exits with exit_code."""

    def __init__(self, message: str, exit_code: int):
        self.exit_code = exit_code
        super().__init__(message)


class StopSignals:
    """SIGTERM (what torchrun, schedulers and preemption send) and SIGINT (Ctrl-C). While the
    run has trained weights not yet on disk (mode "training", then "saving"), a signal only sets
    a flag: the loop stops after a step that every rank agrees on, and the weights are saved.
    Ctrl-C on `timeout N torchrun ...` delivers two signals to each rank (SIGINT from the
    terminal, then torchrun's SIGTERM): both are flags. A third during training stops the step
    at once (the run's stop path still saves what exists); during the saves every signal waits
    for them to finish. Outside these modes the handler raises Interrupted at once."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.signum, self.count, self.mode, self.previous = 0, 0, None, {}

    def install(self) -> "StopSignals":
        for s in self.SIGNALS:
            self.previous[s] = signal.signal(s, self.handle)
        return self

    def restore(self) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)
        self.previous = {}

    def handle(self, signum: int, frame) -> None:
        if self.mode == "saving" or (self.mode == "training" and self.count < 2):
            self.signum, self.count = self.signum or signum, self.count + 1
            return
        raise Interrupted(signum)


@torch.no_grad()
def average_grads(model: nn.Module, ctx: Dist) -> None:
    """Average every gradient over the ranks (one all-reduce per dtype), for GRAD_CLIP_SCOPE=rank."""
    by_dtype: dict[torch.dtype, list[Tensor]] = {}
    for p in model.parameters():
        if p.grad is not None:
            by_dtype.setdefault(p.grad.dtype, []).append(p.grad)
    for grads in by_dtype.values():
        flat = all_reduce_(torch.cat([g.reshape(-1) for g in grads]), ctx).div_(ctx.world_size)
        torch._foreach_copy_(grads, [f.view_as(g) for f, g in zip(flat.split([g.numel() for g in grads]), grads)])


@dataclass
class Trainer:
    cfg: Config
    ctx: Dist
    model: GPT              # the raw module (owns the parameters)
    train_model: nn.Module  # compiled and/or DDP-wrapped view used for training steps
    eval_model: nn.Module   # compiled (not DDP) view used for evaluation
    opt: Optimizers
    loader: DistributedTokenLoader
    log: Logger
    qat_live: bool = False
    signals: "StopSignals | None" = None  # SIGTERM/SIGINT flag, acted on at a step boundary
    losses: deque = field(default_factory=deque)  # (step, loss) not yet checked for finiteness
    steps_done: int = 0  # optimizer steps finished, for the stop path when training fails

    @property
    def grad_accum(self) -> int:
        return 8 // self.ctx.world_size

    def step(self, step: int, scale: float) -> Tensor:
        """One optimizer step over 8/world_size micro-batches; returns the mean loss (a tensor:
        no host sync here)."""
        total = torch.zeros((), device=self.ctx.device)
        ddp = isinstance(self.train_model, DDP)
        per_rank = ddp and self.cfg.grad_clip_scope == "rank"  # clip the local gradient, then average it here
        for micro in range(self.grad_accum):
            x, y = self.loader.next_batch()
            if ddp:  # all-reduce gradients only on the last micro-batch
                self.train_model.require_backward_grad_sync = micro == self.grad_accum - 1 and not per_rank
            with autocast(self.cfg, self.ctx):
                loss = self.train_model(x, y, packed=self.cfg.packed)
            (loss / self.grad_accum).backward()
            total += loss.detach()
        self.opt.set_schedule(scale, muon_momentum(self.cfg, step))
        if self.cfg.grad_clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip_norm)
        if per_rank:
            average_grads(self.model, self.ctx)
        self.opt.step()
        self.opt.zero_grad()
        if self.qat_live:
            refresh_qat(self.model)
        return total / self.grad_accum

    def mark_step_done(self, prev_done):
        """Record the end of the step just queued and wait for the one before it to finish
        (CUDA only). Returns the new event."""
        if self.ctx.device.type != "cuda":
            return None
        done = torch.cuda.Event()
        done.record()
        if prev_done is not None:
            prev_done.synchronize()
        return done

    def queue_loss(self, step: int, loss: Tensor) -> None:
        """Keep a step's loss for the finiteness check. On CUDA it is copied to pinned host
        memory without waiting; the copy is read only once the step's end event has passed
        (finished_losses), so the check adds no GPU sync."""
        if self.ctx.device.type == "cuda":
            host = torch.empty((), dtype=torch.float32, pin_memory=True)
            host.copy_(loss.detach().float(), non_blocking=True)
            loss = host
        self.losses.append((step, loss))

    def finished_losses(self, all_done: bool = False) -> list[tuple[int, float]]:
        """The queued losses of finished steps: on CUDA all but the newest (its step may still
        run), unless all_done (after a sync); on CPU all."""
        keep = 1 if self.ctx.device.type == "cuda" and not all_done else 0
        out = []
        while len(self.losses) > keep:
            step, loss = self.losses.popleft()
            out.append((step, float(loss.item())))
        return out

    def first_nonfinite(self, all_done: bool = False) -> tuple[float, float]:
        """(step, loss) of the first non-finite loss among the finished steps, or (0, 0)."""
        return next(((float(s), v) for s, v in self.finished_losses(all_done) if not math.isfinite(v)), (0.0, 0.0))

    def warmup_and_restore(self) -> None:
        """Run WARMUP_STEPS real steps so every compiled graph and kernel is built before the
        timer starts, then restore the initial weights, optimizer state and data position:
        measured training starts from the true init on the first batch."""
        if self.cfg.warmup_steps == 0:
            return
        model_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        opt_states = self.opt.state_dicts()
        t0 = time.perf_counter()
        start_looping = self.model.looping
        # With a scheduled loop switch both graphs (plain, then looped) are compiled here, so
        # the switch inside the timed run builds nothing.
        states = [False, True] if self.cfg.num_loops and self.cfg.enable_looping_at > 0 else [start_looping]
        lengths = sorted({L for _, L in self.cfg.seq_plan})  # TRAIN_SEQ_SCHEDULE: each length's graphs too
        total, k = len(states) * len(lengths) * self.cfg.warmup_steps, 0
        self.log(f"warmup: {total} step(s) of graph(s) {'+'.join('looped' if lp else 'plain' for lp in states)}"
                 + (f" at lengths {','.join(map(str, lengths))}" if len(lengths) > 1 else "") + "; "
                 + ("the first step of each graph compiles it" if use_compile(self.cfg, self.ctx) else "eager, nothing to compile"))
        for looping in states:
            set_looping(self.model, looping)
            for length in lengths:
                self.loader.set_seq_len(length)
                for i in range(self.cfg.warmup_steps):
                    self.step(i, 1.0)
                    # the official script's line (`warmup_step:i/N`), with the graph and the time so far
                    sync(self.ctx)
                    k += 1
                    self.log(f"warmup_step:{k}/{total} graph:{'looped' if looping else 'plain'}"
                             + (f" seq_len:{length}" if len(lengths) > 1 else "") + f" elapsed:{time.perf_counter() - t0:.1f}s")
        sync(self.ctx)
        set_looping(self.model, start_looping)
        self.model.load_state_dict(model_state, strict=True)
        self.opt.load_state_dicts(opt_states)
        self.opt.zero_grad()
        self.loader.reset()
        set_qat(self.model, self.qat_live)  # w_q must match the restored weights
        self.log(f"warmup_steps:{self.cfg.warmup_steps} warmup_graphs:{'plain+looped' if len(states) == 2 else 'one'} "
                 f"{'seq_lens:' + ','.join(map(str, lengths)) + ' ' if self.cfg.train_seq_schedule else ''}"
                 f"warmup_time:{1000 * (time.perf_counter() - t0):.0f}ms (weights, optimizer state and data position restored)")

    def validate(self, step: int, train_ms: float, val_tokens: Tensor, val_bytes: Tensor) -> None:
        r = evaluate(self.eval_model, val_tokens, val_bytes, self.cfg, self.ctx)
        self.log(f"step:{step}/{self.cfg.iterations} val_loss:{r.loss:.4f} val_bpb:{r.bpb:.4f} "
                 f"train_time:{train_ms:.0f}ms step_avg:{train_ms / max(step, 1):.2f}ms")

    def run(self, val_tokens: Tensor, val_bytes: Tensor, averager: WeightAverager) -> dict:
        """Train until ITERATIONS, the wallclock cap, a non-finite loss or a stop signal. The
        final validation is not run here: the caller saves the raw weights first.
        Returns steps, train_ms and `stopped`: None, or why training was cut short."""
        cfg, ctx, log = self.cfg, self.ctx, self.log
        train_ms, elapsed, step, stop, prev_done, switched = 0.0, 0.0, 0, False, None, None
        signum = bad_step = bad_loss = 0.0
        if cfg.train_seq_schedule:
            log(f"train_seq_schedule:{','.join(f'{L}@{p:.3f}' for p, L in cfg.seq_plan)} mode:{cfg.train_seq_schedule_mode}")
        sync(ctx)
        if self.signals is not None:
            self.signals.mode = "training"  # until the trained weights are saved (run)
        t0 = time.perf_counter()
        while True:
            if step == cfg.iterations or stop or signum or bad_step:
                sync(ctx)
                train_ms += 1000 * (time.perf_counter() - t0)
                break
            if cfg.val_loss_every and step % cfg.val_loss_every == 0:
                sync(ctx)
                train_ms += 1000 * (time.perf_counter() - t0)  # the timer pauses during validation
                self.validate(step, train_ms, val_tokens, val_bytes)
                sync(ctx)
                t0 = time.perf_counter()
            length = train_seq_len_at(cfg, step, elapsed)  # every rank: the agreed elapsed time
            if length != self.loader.seq_len or step == 0:
                self.loader.set_seq_len(length)
                switched = step if step else None
                if cfg.train_seq_schedule:
                    log(f"train_seq_len:{length} step:{step} progress:{seq_progress(cfg, step, elapsed):.4f} train_time:{elapsed:.0f}ms")
            scale = schedule_scale(cfg, step, elapsed)
            if switched is not None and cfg.seq_change_warmup_steps:
                scale *= min((step - switched + 1) / cfg.seq_change_warmup_steps, 1.0)
            loss = self.step(step, scale)
            step += 1
            averager.update(step, scale)
            self.steps_done = step
            self.queue_loss(step, loss)
            # Every wallclock decision (warmdown LR, QAT start, stop) uses one training time that
            # all ranks agree on, the slowest rank's, from one host-side collective: with per-rank
            # clocks the ranks would apply slightly different LRs and their weights would drift.
            # The host may queue one step ahead of the GPU, no more: it waits for the previous
            # step's end event (not a full sync), so host time leads GPU time by at most a step.
            # Within two steps of the cap it syncs fully, so the stop sees real GPU progress.
            prev_done = self.mark_step_done(prev_done)
            elapsed = train_ms + 1000 * (time.perf_counter() - t0)
            if cfg.train_cap_seconds > 0 and elapsed * (1 + 2 / step) >= 1000 * cfg.train_cap_seconds:
                sync(ctx)
                elapsed = train_ms + 1000 * (time.perf_counter() - t0)
            # The same collective carries the stop conditions, so all ranks stop after the same
            # step: a pending signal on any rank, a non-finite loss on any rank (a finished step's:
            # on CUDA the previous one, read without a sync).
            bad_step, bad_loss = self.first_nonfinite()
            pending = float(self.signals.signum) if self.signals is not None else 0.0
            agreed_elapsed, signum, bad_step = host_max_all([elapsed, pending, bad_step], ctx)
            if cfg.train_cap_seconds > 0:  # without a cap every decision is by step count
                elapsed = agreed_elapsed
            stop = cfg.train_cap_seconds > 0 and elapsed >= 1000 * cfg.train_cap_seconds
            if not self.model.looping and looping_due(cfg, step, elapsed):
                set_looping(self.model, True)
                log(f"looping_start step:{step} progress:{progress(cfg, step, elapsed):.4f} train_time:{elapsed:.0f}ms "
                    f"virtual_layers:{','.join(map(str, virtual_layers(cfg, True)))}")
            if cfg.qat_mode == "late" and not self.qat_live and late_qat_due(cfg, progress(cfg, step, elapsed), scale):
                self.qat_live = True
                set_qat(self.model, True)
                if cfg.ema_reset_on_qat:
                    averager.reset()
                log(f"qat_start step:{step} progress:{progress(cfg, step, elapsed):.4f} lr_scale:{scale:.4f} train_time:{elapsed:.0f}ms"
                    + (" (EMA reset)" if cfg.ema_reset_on_qat else ""))
            if cfg.train_log_every and (step % cfg.train_log_every == 0 or step == 1 or stop):
                avg = elapsed / step
                stop_step = cfg.iterations
                if cfg.train_cap_seconds > 0:
                    stop_step = min(stop_step, int(1000 * cfg.train_cap_seconds / avg))
                # The official baseline's fields first, in its order (community scripts match
                # `step:N/T train_loss:X train_time:Tms step_avg:Yms`), then ours.
                log(f"step:{step}/{cfg.iterations} train_loss:{loss.item():.4f} train_time:{elapsed:.0f}ms "
                    f"step_avg:{avg:.2f}ms lr_scale:{scale:.4f} tok_s:{cfg.train_batch_tokens * 1000 / avg:.0f} "
                    f"eta_stop:{max(stop_step - step, 0) * avg:.0f}ms proj_stop_step:{stop_step}")
        if not bad_step:  # the last steps' losses, now that everything has finished
            bad_step, bad_loss = self.first_nonfinite(all_done=True)
            bad_step = host_max_all([bad_step], ctx)[0]
        stopped = None
        if problem := fa3_overflow_problem(self.model):
            stopped = (problem, 1)
        elif bad_step:
            stopped = (f"non-finite training loss ({bad_loss if bad_loss else 'on another rank'}) at step {int(bad_step)}; "
                       "training stopped", 1)
        elif signum:
            name = signal.Signals(int(signum)).name
            stopped = (f"interrupted by {name} after step {step}/{cfg.iterations}", 128 + int(signum))
        elif stop:
            log(f"stopping_early: wallclock_cap train_time:{train_ms:.0f}ms step:{step}/{cfg.iterations}")
        return dict(steps=step, train_ms=train_ms, stopped=stopped)


def fa3_overflow_problem(model: nn.Module) -> str | None:
    n = int(unwrap(model).fa3_overflow.item())
    return (f"{n} forwards had more attention segments than FA3's fixed cu_seqlens length holds (fa3_segment_cap), so "
            "documents may have been merged; rerun with ATTN_BACKEND=flex") if n else None


def calibrate_gptq(model: GPT, loader, cfg: Config, ctx: Dist, log, train_ms: float) -> dict[str, Tensor]:
    """GPTQ Hessians of the weights about to be exported, from the next GPTQ_CALIBRATION_BATCHES
    micro-batches of the training stream (never validation data). Reading training data counts
    as training time: the loop stopped GPTQ_RESERVE_SECONDS early, and training time plus this
    calibration must end inside MAX_WALLCLOCK_SECONDS (evaluation pauses the clock, as in the loop)."""
    sync(ctx)
    t0 = time.perf_counter()
    # Each call hands every rank its span of one global micro-batch, so the summed Hessians do not depend on the world size.
    per_rank, tokens = cfg.gptq_calibration_batches // ctx.world_size, 0

    def batches():
        nonlocal tokens
        for _ in range(per_rank):
            x, y = loader.next_batch()
            tokens += x.numel()
            yield x, y

    hessians, n = collect_hessians(model, batches(), ctx)
    sync(ctx)
    calib_ms = host_max(1000 * (time.perf_counter() - t0), ctx)
    total, cap = train_ms + calib_ms, 1000 * cfg.max_wallclock_seconds
    log(f"gptq_calibration batches:{n * ctx.world_size} tokens:{tokens * ctx.world_size} hessians:{len(hessians)} "
        f"distinct:{len({id(H) for H in hessians.values()})} calibration_time:{calib_ms:.0f}ms train_time:{train_ms:.0f}ms train_plus_calibration:{total:.0f}ms "
        + (f"cap:{cap:.0f}ms inside_cap:{int(total <= cap)}" if cap else "cap:none"))
    if cap and total > cap:
        log(f"WARNING: GPTQ calibration ended {total - cap:.0f}ms after the training-time cap; raise GPTQ_RESERVE_SECONDS "
            f"(now {cfg.gptq_reserve_seconds}) or lower GPTQ_CALIBRATION_BATCHES")
    return hessians


# ===== 10. MAIN =====

def build_model(cfg: Config, ctx: Dist, bos_id: int = 1) -> GPT:
    torch.manual_seed(cfg.seed)
    model = GPT(cfg, max_len=cfg.max_len, bos_id=bos_id).to(ctx.device)
    set_attn_backend(model, resolve_attn_backend(cfg, ctx.device))
    return model


# One code object, GPT.forward, serves every graph a run compiles: the plain and looped training
# steps, each eval shape, TTT's adapter graphs (per virtual slot under recurrence). The default
# configuration with TTT needs more than dynamo's default limit of 8, and with fullgraph=True
# hitting the limit is a hard failure in the final eval; every graph is still built before its timer.
RECOMPILE_LIMIT = 64


def compile_model(model: nn.Module, cfg: Config, ctx: Dist) -> nn.Module:
    if not use_compile(cfg, ctx):
        return model
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
    return torch.compile(model, dynamic=False, fullgraph=True)


DDP_BUCKET_MB = 25  # DDP's default: the 143 MB of default-model gradients go out in about 6 all-reduces


def wrap_for_training(model: GPT, cfg: Config, ctx: Dist) -> tuple[nn.Module, nn.Module]:
    """DDP around the compiled model. Dynamo's DDPOptimizer (optimize_ddp, set here rather than
    trusted as a default) sees the active DDP module while compiling and splits the forward
    into one subgraph per gradient bucket, so each bucket's all-reduce starts as soon as its
    subgraph's backward finishes and runs under the rest of the backward; one fullgraph
    backward would produce every gradient at its very end (tests/test_ddp_overlap.py)."""
    compiled = compile_model(model, cfg, ctx)
    train_model = compiled
    if ctx.enabled:
        torch._dynamo.config.optimize_ddp = "ddp_optimizer"
        train_model = DDP(compiled, device_ids=[ctx.local_rank] if ctx.device.type == "cuda" else None,
                          broadcast_buffers=False, bucket_cap_mb=DDP_BUCKET_MB)
    return train_model, compiled


def load_artifact(path: Path, cfg: Config, ctx: Dist, bos_id: int = 1) -> GPT:
    """Read the artifact back from disk into a fresh model with strict key matching."""
    state = decode_artifact(path.read_bytes(), str(path))
    model = build_model(cfg, ctx, bos_id)
    model.load_state_dict({k: v.to(ctx.device) for k, v in state.items()}, strict=True)
    return model


def log_eval(log: Logger, label: str, r: EvalResult, extra: str = "") -> None:
    # `name val_loss:X val_bpb:Y` first, qualifiers after, as the published records print it.
    log(f"{label} val_loss:{r.loss:.4f} val_bpb:{r.bpb:.4f}{extra} eval_time:{r.ms:.0f}ms tokens:{r.tokens} bytes:{r.bytes}")
    log(f"{label}_exact val_loss:{r.loss:.8f} val_bpb:{r.bpb:.8f}{extra}")


def peak_memory_lines(allocated: int, reserved: int) -> list[str]:
    """Peak CUDA memory (bytes in), in the official baseline's wording and as our key:value line."""
    alloc_mib, res_mib = allocated // 2**20, reserved // 2**20
    return [f"peak memory allocated: {alloc_mib} MiB reserved: {res_mib} MiB",
            f"peak_memory_allocated_mib:{alloc_mib} peak_memory_reserved_mib:{res_mib}"]


# ----- the counted code -----
# A submission counts the bytes of its train_gpt.py. records/records_tool.py pack writes it as a
# self-extracting wrapper around this source minified: docstrings, comments, knob help texts,
# function-signature annotations dropped (class-level annotations stay: dataclass and
# NamedTuple fields, Config's types), function-local and module-function names shortened, spaces
# squeezed; then LZMA (preset 9e, lc=3 pb=0: best on this text) stored raw in a latin-1 string
# literal, about 6x smaller than the readable file. A readable run counts its own packed size
# (code_sizes), so the packer lives here and uses only the stdlib; the records tool loads these
# functions from this file, so both count the same bytes.
# The packer's own definitions: the packed copy leaves them out (it knows its size: the file that ran).
PACKER_DEFS = ("PACKER_DEFS", "PACKED_HEAD", "PACKED_TAIL", "PACKED_LZMA", "_SCOPES", "_Strip", "_rename", "_short_locals",
               "_squeeze", "minify_source", "latin1_literal", "pack_source")
# The wrapper puts the source into linecache under its compile name, so inspect.getsource (which
# triton.jit needs) finds the text that runs.
PACKED_HEAD = '#coding:latin-1\nimport lzma,linecache as C\nPACKED_SOURCE=lzma.decompress('
PACKED_TAIL = ('.encode("latin-1")).decode()\nN="<packed train_gpt.py>"\n'
               'C.cache[N]=(0,None,PACKED_SOURCE.splitlines(True),N)\nexec(compile(PACKED_SOURCE,N,"exec"))\n')
PACKED_LZMA = [{"id": lzma.FILTER_LZMA1, "preset": 9 | lzma.PRESET_EXTREME, "lc": 3, "lp": 0, "pb": 0}]
_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp,
           ast.GeneratorExp)


class _Strip(ast.NodeTransformer):
    """Drops what never runs: docstrings, knob help texts, function-signature annotations."""

    def _undoc(self, node):
        self.generic_visit(node)
        b = node.body
        if b and isinstance(b[0], ast.Expr) and isinstance(b[0].value, ast.Constant) and isinstance(b[0].value.value, str):
            node.body = b[1:] or [ast.Pass()]
        return node

    visit_ClassDef = _undoc

    def visit_Module(self, node):
        node.body = [s for s in node.body if getattr(s, "name", None) not in PACKER_DEFS and not (
            isinstance(s, ast.Assign) and getattr(s.targets[0], "id", None) in PACKER_DEFS)]
        return self._undoc(node)

    def visit_FunctionDef(self, node):
        a = node.args
        for arg in a.posonlyargs + a.args + a.kwonlyargs + [a.vararg, a.kwarg]:
            if arg is not None and not node.decorator_list:  # triton.jit and custom_op read the signature
                arg.annotation = None
        if not node.decorator_list:
            node.returns = None
        return self._undoc(node)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Call(self, node):
        if isinstance(node.func, ast.Name) and node.func.id == "knob" and len(node.args) > 1:
            node.args[1] = ast.Constant("")
        return self.generic_visit(node)


def _rename(sub: list, own: set, taken: set, lengths=(1, 2)) -> None:
    """Renames the names in `own` wherever they occur in the nodes `sub` to the shortest names that
    neither the module (`taken`) nor `sub` uses, the most used first."""
    counts = {k: 0 for k in own}
    for n in sub:
        if isinstance(n, ast.Name) and n.id in counts:
            counts[n.id] += 1
    used = taken | {n.id for n in sub if isinstance(n, ast.Name)}
    fresh = (s for k in lengths for s in map("".join, itertools.product(string.ascii_letters, repeat=k))
             if s not in used and not keyword.iskeyword(s))
    new = {}
    for name in sorted(counts, key=lambda k: (-counts[k], k)):
        short = next(fresh)
        if len(short) < len(name):
            new[name] = short
    for n in sub:
        if isinstance(n, ast.Name) and n.id in new:
            n.id = new[n.id]
        elif isinstance(n, ast.arg) and n.arg in new:
            n.arg = new[n.arg]
        elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name in new:
            n.name = new[n.name]


def _short_locals(tree: ast.Module) -> None:
    """Renames each function's own local variables (bound by assignment in its own scope; not a
    parameter, global/nonlocal, or a name bound any other way in it or a nested scope), then each
    comprehension's loop variables, to short names no identifier of the module uses; uses in
    nested scopes follow. Functions that hold a class, a match or a call of
    locals/vars/eval/exec are left alone."""
    nodes = list(ast.walk(tree))
    # a parameter keeps its name where a call could pass it by name: any keyword or string in the module
    named = {k.arg for n in nodes if isinstance(n, ast.Call) for k in n.keywords}
    named |= {n.value for n in nodes if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    # module-level functions are renamed too, unless a string, attribute, parameter, import, global
    # statement or method shares the name
    keep = named | {n.arg for n in nodes if isinstance(n, ast.arg)} | {n.attr for n in nodes if isinstance(n, ast.Attribute)}
    keep |= {getattr(n, "asname", None) or n.name for n in nodes if isinstance(n, ast.alias)}
    keep |= {x for n in nodes if isinstance(n, (ast.Global, ast.Nonlocal)) for x in n.names}
    keep |= {m.name for n in nodes if isinstance(n, ast.ClassDef) for m in n.body if hasattr(m, "name")}
    keep |= {n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.decorator_list}  # registries read names
    _rename(nodes, {n.name for n in tree.body if isinstance(n, ast.FunctionDef) and "__" not in n.name} - keep,
            set(dir(builtins)) | {n.arg for n in nodes if isinstance(n, ast.arg)}, (2,))  # locals get 1 letter
    taken = set(dir(builtins)) | {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    taken |= {n.arg for n in ast.walk(tree) if isinstance(n, ast.arg)}
    for fn in [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]:
        # the body only: defaults and decorators run in the enclosing scope
        body = [n for stmt in fn.body for n in ast.walk(stmt)]  # defaults and decorators run outside
        other = set()
        for n in body:
            if isinstance(n, (ast.ClassDef, ast.Match)) or isinstance(n, ast.Call) and isinstance(n.func, ast.Name) \
                    and n.func.id in ("locals", "vars", "eval", "exec"):
                break
            if isinstance(n, (ast.Global, ast.Nonlocal)):
                other |= set(n.names)
            elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ExceptHandler, ast.arg, ast.alias)):
                other.add(getattr(n, "asname", None) or getattr(n, "name", None) or getattr(n, "arg", None))
        else:
            a = fn.args
            params = [p for p in a.posonlyargs + a.args + [a.vararg, a.kwarg]
                      if p and p.arg not in named | other and not fn.decorator_list]
            own = {p.arg for p in params}
            other |= {p.arg for p in ast.walk(a) if isinstance(p, ast.arg)} - own
            stack = list(fn.body)
            while stack:  # the function's own scope: not nested functions, classes, lambdas, comprehensions
                n = stack.pop()
                if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store) and n.id not in other:
                    own.add(n.id)
                if not isinstance(n, _SCOPES):
                    stack.extend(ast.iter_child_nodes(n))
            _rename(params + body, own, taken)
    for comp in [n for n in ast.walk(tree) if isinstance(n, _SCOPES[4:])]:
        # the first iterable runs in the enclosing scope; walrus targets and lambda parameters bind elsewhere
        first = [n for n in ast.walk(comp.generators[0].iter)]
        sub = [n for n in ast.walk(comp) if not any(n is m for m in first)][1:]
        other = {n.target.id for n in sub if isinstance(n, ast.NamedExpr)} | {n.arg for n in sub if isinstance(n, ast.arg)}
        other |= {n.id for n in first if isinstance(n, ast.Name)}
        _rename(sub, {n.id for g in comp.generators for n in ast.walk(g.target) if isinstance(n, ast.Name)} - other, taken)


def _squeeze(text: str) -> str:
    """ast.unparse's text with 1-space indents and a space only between two words (a name, number,
    keyword or string prefix); f-strings are copied whole (from 3.12 tokenize splits them)."""
    lines, out, last, depth = text.split("\n"), [], "\n", 0
    for t in tokenize.generate_tokens(io.StringIO(text).readline):
        kind, s = tokenize.tok_name[t.type], t.string
        if kind == "FSTRING_START":
            depth, start = depth + 1, t.start if depth == 0 else start
        if kind == "FSTRING_END":
            depth -= 1
            s = lines[start[0] - 1][start[1]:t.end[1]] if depth == 0 and start[0] == t.end[0] else ""
        if depth or kind in ("INDENT", "DEDENT", "ENDMARKER", "FSTRING_START") or not s and kind != "NEWLINE":
            continue
        if kind in ("NEWLINE", "NL"):
            s = "\n"
        elif last == "\n":
            s = " " * (t.start[1] // 4) + s if kind != "FSTRING_END" else " " * (start[1] // 4) + s
        elif (last[-1].isalnum() or last[-1] == "_") and (s[0].isalnum() or s[0] in "_'\""):
            s = " " + s
        out.append(s)
        last = s
    return "".join(out)


def minify_source(source: str) -> str:
    """The source that the packed copy holds and runs (see above); raises if squeezing the text
    changed the program."""
    tree = _Strip().visit(ast.parse(source))
    _short_locals(tree)
    text = ast.unparse(tree)
    small = _squeeze(text)
    if ast.dump(ast.parse(small)) != ast.dump(ast.parse(text)):
        raise ValueError("minify_source: squeezing the text changed the program")
    return small


def latin1_literal(data: bytes) -> bytes:
    """A triple-quoted str literal (of a latin-1 source) whose characters are the bytes of `data`:
    only backslash, CR, NUL and a quote that could close the literal are escaped (NUL before an
    octal digit as \\x00)."""
    esc = {b"\\": b"\\\\", b'"': b'\\"', b"\r": b"\\r", b"\0": b"\\0"}
    return b'"""' + re.sub(rb'[\\\r]|"(?="|\Z)|\0([0-7]?)', lambda m: esc.get(m.group()) or b"\\x00" + m.group(1), data) + b'"""'


def pack_source(source: str) -> bytes:
    """The packed wrapper (the counted train_gpt.py) of a readable source."""
    data = lzma.compress(minify_source(source).encode("utf-8"), lzma.FORMAT_ALONE, filters=PACKED_LZMA)
    return PACKED_HEAD.encode() + latin1_literal(data) + PACKED_TAIL.encode()


def code_sizes() -> tuple[int, int]:
    """(source, counted) code bytes of this run. A submission counts its train_gpt.py, the packed
    wrapper: run from the wrapper, that is the file that ran (and the source its minified text);
    run as the readable script, it is the size the packed form of this source will have (the
    records tool packs it so; the packed copy holds no packer, so only a readable run packs)."""
    ran = Path(__file__).read_bytes()
    source = globals().get("PACKED_SOURCE")
    if source is not None:
        return len(source.encode("utf-8")), len(ran)
    return len(ran), len(pack_source(ran.decode("utf-8")))


def size_lines(label: str, code_bytes: int, model_bytes: int, readable_bytes: int) -> list[str]:
    """The submission size in the wording of the published logs (`Serialized model <fmt>: N bytes`,
    `Code size (uncompressed|compressed):` as the packed records print it, `Total submission size
    <fmt>: N bytes`), then our key:value line, which tools read last. code_bytes is the counted
    (packed) code."""
    total = code_bytes + model_bytes
    return [f"Serialized model {label}: {model_bytes} bytes", f"Code size (uncompressed): {readable_bytes} bytes",
            f"Code size (compressed): {code_bytes} bytes", f"Total submission size {label}: {total} bytes",
            f"code_bytes:{code_bytes} model_bytes:{model_bytes} total_bytes:{total} cap:{ARTIFACT_CAP_BYTES} "
            f"margin:{ARTIFACT_CAP_BYTES - total} readable_code_bytes:{readable_bytes}"]


def atomic_write(path: Path, data) -> None:
    """Write bytes to `path` through a temporary file in the same directory and an atomic
    rename: a crash or a full disk never leaves a partial file under the final name (an older
    complete file stays as it was). The temporary file is removed on any exception, a signal's
    included (Interrupted, KeyboardInterrupt). An OSError names the path and the cause."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            tmp.unlink()
        except OSError:
            pass
        if isinstance(e, OSError):
            raise OSError(e.errno, f"could not write {path}: {e.strerror or e}") from None
        raise


def save_state(model: nn.Module | dict, path: Path, log: Logger, what: str, note: str = "") -> None:
    # Serialized in memory first: torch.save on a file turns a full disk into an opaque
    # RuntimeError, a plain write keeps the OSError and its cause.
    state = model.state_dict() if isinstance(model, nn.Module) else model
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in state.items()}, buf)
    atomic_write(path, buf.getbuffer())
    log(f"{what}:{path} bytes:{path.stat().st_size}{note}")


def save_trained(model: nn.Module, averager: WeightAverager, out: Path, ctx: Dist, log: Logger, note: str) -> list[str]:
    """Rank 0 writes the trained weights, live (.raw.pt) then averaged (.avg.pt, what gets
    exported): the first thing after training ends, however it ended, before any evaluation or
    calibration. A write that fails (a full disk) is logged and does not stop the next one: the
    averaged weights, or later the much smaller artifact, may still fit. Returns the failures."""
    failures = []
    targets = [("raw_model", Path(f"{out}.raw.pt"), model.state_dict)]
    if averager.kind:
        targets.append(("averaged_model", Path(f"{out}.avg.pt"), lambda: averager.averaged_state(model)))
    for what, path, state in targets if ctx.is_main else []:
        try:
            save_state(state(), path, log, what, note)
        except OSError as e:
            failures.append(f"{what} not saved ({e.strerror or e})")
            safe_log(log, f"error:{failures[-1]}")
    return failures


def runs_sliding(cfg: Config) -> bool:
    """The sliding eval runs when it is the final score, or next to TTT when asked for: with TTT
    as the final metric it would only spend the eval budget on a number nobody reports."""
    return bool(cfg.eval_stride) and (not cfg.ttt_enabled or cfg.ttt_with_sliding)


def score_artifact(art_path: Path, cfg: Config, ctx: Dist, bos_id: int, val_tokens: Tensor, val_bytes: Tensor,
                   label: str, pre: EvalResult | None, log: Logger) -> tuple[str, EvalResult, float]:
    """Every metric of the reloaded artifact; returns the final score's name and result and the
    eval time in ms. `pre` (the weights before export) gives the quantization gap; EVAL_ONLY has
    none. The eval clock covers reading the artifact and every evaluation; the model is built
    and its eval graphs compiled on dummy/random tokens before it (weights are loaded into the
    same tensors afterwards, so the graphs stay valid)."""
    model = build_model(cfg, ctx, bos_id)
    compiled = compile_model(model, cfg, ctx)
    if use_compile(cfg, ctx):
        ms = prewarm_eval(compiled, cfg, ctx, len(val_tokens), sliding=runs_sliding(cfg), log=log)
        if cfg.ttt_enabled:
            log("ttt_prewarm: compiling the TTT graphs on random tokens (adapters at every window length)")
            ms += prewarm_ttt(compiled, cfg, ctx)
        log(f"final_eval_prewarm_time:{ms:.0f}ms (graphs compiled on dummy and random tokens before the eval clock)")
        model.fa3_overflow.zero_()  # random tokens are no evidence about the data
    t0 = time.perf_counter()
    tilt = ngram_tilt(val_tokens, cfg, log) if cfg.ngram_tilt_enabled else None
    state = decode_artifact(art_path.read_bytes(), str(art_path))
    model.load_state_dict({k: v.to(ctx.device) for k, v in state.items()}, strict=True)
    rt = evaluate(compiled, val_tokens, val_bytes, cfg, ctx)
    name, final = f"final_{label}_roundtrip", rt
    log_eval(log, name, rt)
    if pre is not None:
        log(f"final_quant_gap_exact val_loss:{rt.loss - pre.loss:.8f} val_bpb:{rt.bpb - pre.bpb:.8f}")
    if runs_sliding(cfg):
        final = evaluate_sliding(compiled, val_tokens, val_bytes, cfg, ctx, cfg.eval_stride, tilt=tilt, log=log)
        name = f"final_{label}_sliding_window"
        log_eval(log, name, final, f" stride:{cfg.eval_stride} seq_len:{cfg.window_len} ngram_tilt:{int(tilt is not None)}")
    if cfg.ttt_enabled:
        final = evaluate_ttt(compiled, val_tokens, val_bytes, cfg, ctx, log, t_start=t0, tilt=tilt)
        name = f"final_{label}_ttt_lora"
        log_eval(log, name, final, f" rank:{cfg.ttt_lora_rank} chunk:{cfg.ttt_chunk_size} "
                                   f"phases:{cfg.phased_ttt_num_phases} ngram_tilt:{int(tilt is not None)}")
    if problem := fa3_overflow_problem(compiled):
        raise RunStopped(problem, 1)
    return name, final, 1000 * (time.perf_counter() - t0)


def score_and_report(art_path: Path, label: str, cfg: Config, ctx: Dist, bos_id: int, val_tokens: Tensor,
                     val_bytes: Tensor, pre: EvalResult | None, log: Logger, stats: dict) -> None:
    """Sizes, every score of the artifact on disk, the times, the final score, then the cap
    check (after the score: an oversized run still gets its numbers)."""
    readable_bytes, code_bytes = code_sizes()
    model_bytes = art_path.stat().st_size
    for line in size_lines(label, code_bytes, model_bytes, readable_bytes):
        log(line)
    metric, final, eval_ms = score_artifact(art_path, cfg, ctx, bos_id, val_tokens, val_bytes, label, pre, log)
    if eval_ms > 1000 * cfg.eval_budget_seconds:
        log(f"WARNING: eval took {eval_ms / 1000:.1f}s, over the EVAL_BUDGET_SECONDS={cfg.eval_budget_seconds:.0f}s budget")
    log(f"train_time_total_ms:{stats['train_ms']:.0f} eval_time_total_ms:{eval_ms:.0f} steps:{stats['steps']}")
    if not (math.isfinite(final.loss) and math.isfinite(final.bpb)):  # never print a score that is not one
        raise RunStopped(f"the final score {metric} is not finite (val_loss {final.loss}, val_bpb {final.bpb}); "
                         f"everything was saved under {art_path.parent}", 1)
    log(f"final_score_exact metric:{metric} val_loss:{final.loss:.8f} val_bpb:{final.bpb:.8f}")
    if code_bytes + model_bytes > ARTIFACT_CAP_BYTES:
        raise RuntimeError(f"artifact total {code_bytes + model_bytes} bytes (code {code_bytes} + model {model_bytes}) "
                           f"exceeds the {ARTIFACT_CAP_BYTES}-byte cap; everything was saved under {art_path.parent}")


# Model settings an EVAL_ONLY run may change on purpose: document masking is an eval protocol (a
# cross-eval scores a masked-trained model unmasked and back), and the loop's start only
# schedules training (evaluation always loops). A difference is logged, not refused.
EVAL_TIME_MODEL_SETTINGS = ("ATTN_DOC_MASK", "ENABLE_LOOPING_AT")


def eval_only_environ(environ: dict) -> tuple[dict, list[str]]:
    """EVAL_ONLY takes the model from the artifact's header (model_settings), so re-scoring needs
    no model variables: the header's settings are added to the environment before it is parsed.
    A model variable that is set and differs from the header (MLP_ACT, LOGIT_SOFTCAP, ROPE_DIMS,
    NUM_LOOPS... change no tensor shape and used to score another number without a word), or an
    artifact written by other code, is refused before anything is loaded, naming each variable
    with both values. Returns the environment to parse and the log's notes; raises InputError."""
    path = Path(environ["EVAL_ONLY"])
    if not path.is_file():
        raise InputError([f"EVAL_ONLY={path} does not exist"])
    try:
        meta = read_artifact_meta(path.read_bytes(), str(path))
    except (OSError, ValueError) as e:
        raise InputError([str(e)]) from None
    if "model" not in meta:
        return environ, [f"EVAL_ONLY={path}: its header records no model settings (an artifact from before they were "
                         "recorded): the model is built from this run's variables, which must be the training run's"]
    fields = {Config.env_name(f): f for f in dataclasses.fields(Config)}
    aliases = {v[1:]: k for k, v in RECORD_NAMES.items() if k in environ and v.startswith("=")}
    problems, added, notes = [], {}, []
    for name, value in sorted(meta["model"].items()):
        if name not in fields:
            problems.append(f"the artifact {path} was trained with {name}={value!r}, which this train_gpt.py does not have")
            continue
        given = name if name in environ else aliases.get(name)
        if given is None:
            added[name] = ("1" if value else "0") if isinstance(value, bool) else str(value)
            continue
        try:
            mine = _parse(name, environ[given], fields[name].type)
        except ValueError:
            continue  # the config report names it
        if mine != value and name in EVAL_TIME_MODEL_SETTINGS:
            notes.append(f"EVAL_ONLY: {given}={mine!r} differs from the artifact's {name}={value!r}: scored as set (an eval-time setting)")
        elif mine != value:
            problems.append(f"{given}={mine!r} is set, but the artifact {path} was trained with {name}={value!r} "
                            "(EVAL_ONLY reads the model settings from the artifact: unset it)")
    here = source_sha256()
    if meta.get("code_sha256") and meta["code_sha256"] != here:
        problems.append(f"the artifact {path} was written by a train_gpt.py whose source has sha256 "
                        f"{meta['code_sha256']}; this one has {here}: score it with the script that trained it")
    if problems:
        raise InputError(problems)
    return environ | added, [f"EVAL_ONLY: the model settings come from the header of {path} ({len(added)} not set "
                             f"here, code sha256 {meta.get('code_sha256', 'not recorded')})"] + notes


def run_eval_only(cfg: Config, ctx: Dist, log: Logger, bos_id: int, val_tokens: Tensor, val_bytes: Tensor) -> int:
    """EVAL_ONLY: score an existing artifact exactly as a training run scores its own (same
    functions, same log lines), under the current eval settings. Reviewers re-score records
    this way; competitors try other eval settings on a trained artifact."""
    art_path = Path(cfg.eval_only)
    if not art_path.is_file():
        raise FileNotFoundError(f"EVAL_ONLY={cfg.eval_only} does not exist")
    label = artifact_file_label(art_path.read_bytes(), str(art_path))
    log(f"eval_only:{art_path} format:{label} (no training: the artifact is scored with the current eval settings)")
    if use_compile(cfg, ctx):  # as in a training run, eval graphs are built before the eval timer
        log(f"eval_prewarm_time:{prewarm_eval(compile_model(build_model(cfg, ctx, bos_id), cfg, ctx), cfg, ctx, len(val_tokens), log=log):.0f}ms "
            "(eval graphs compiled on dummy tokens before the timer)")
    score_and_report(art_path, label, cfg, ctx, bos_id, val_tokens, val_bytes, None, log, dict(train_ms=0.0, steps=0))
    return 0


@dataclass
class Inputs:
    """What the score and the training read, checked (check_inputs)."""
    bos_id: int
    train_files: list[str]
    val_tokens: Tensor
    val_bytes: Tensor


def check_inputs(cfg: Config, ctx: Dist, log, train: bool = True, world_size: int = 0) -> Inputs:
    """Every check of the run's inputs before anything is built: the compressor, the tokenizer
    (against the manifests, VOCAB_SIZE and the U+2581 piece), the data preflight (train: every
    shard; see preflight_data) and the validation tokens and their bytes (sidecar or LUT, with
    the plausibility checks). The real run and DRY_RUN call this same function, so a dry run
    passes exactly when the run would start. Any problem is an InputError: the config report's
    kind, one line naming the file or setting, exit 2. `world_size`: DRY_RUN's, checked in one process."""
    world_size = world_size or ctx.world_size
    try:
        if cfg.export_compressor in ("brotli", "pergroup") and train:
            brotli_module()  # a missing compressor fails now, not after training
        if train and cfg.quant_method == "gptq" and cfg.gptq_calibration_batches % world_size:
            raise ValueError(f"GPTQ_CALIBRATION_BATCHES={cfg.gptq_calibration_batches} must be a multiple of the world size {world_size}")
        sp = load_tokenizer(cfg)
        check_tokenizer(cfg, sp, log)
        bos_id = sp.bos_id()
        lut = build_byte_lut(sp, cfg.vocab_size).to(ctx.device)
        train_files = []
        if train:
            micro_tokens = cfg.train_batch_tokens // 8
            train_files = shard_files(cfg.data_path, cfg.train_glob, "train")
            val_files = val_token_files(cfg)  # the byte sidecar, if any, is checked by load_val_bytes
            preflight_data(cfg, ctx, log, train_files, val_files, sp, (micro_tokens + 1) * world_size)
        val_tokens = load_validation_tokens(cfg, log).to(ctx.device)  # moved once, not per eval batch
        if not (Path(cfg.data_path) / "manifest.json").is_file():  # else the manifest names the tokenizer
            problems = tokenizer_problems(sp, val_tokens.cpu(), cfg.tokenizer_path)
            if problems:
                raise InputError(problems)
            log(f"tokenizer_shard_check: the val tokens round-trip through {cfg.tokenizer_path} (no manifest)")
        val_bytes = load_val_bytes(cfg, val_tokens, lut, bos_id, log)  # every eval sums this at its targets
    except InputError:
        raise
    except (OSError, ValueError, RuntimeError) as e:
        raise InputError([str(e)]) from None
    return Inputs(bos_id, train_files, val_tokens, val_bytes)


def run(cfg: Config, ctx: Dist, log: Logger, out: Path, signals: StopSignals | None = None) -> int:
    inputs = check_inputs(cfg, ctx, log, train=not cfg.eval_only)
    bos_id, train_files, val_tokens, val_bytes = inputs.bos_id, inputs.train_files, inputs.val_tokens, inputs.val_bytes
    if cfg.eval_only:
        return run_eval_only(cfg, ctx, log, bos_id, val_tokens, val_bytes)
    grad_accum = 8 // ctx.world_size
    micro_tokens = cfg.train_batch_tokens // (ctx.world_size * grad_accum)
    log(f"train_shards:{len(train_files)} val_tokens:{len(val_tokens)} bos_id:{bos_id}")

    model = build_model(cfg, ctx, bos_id)
    train_model, eval_model = wrap_for_training(model, cfg, ctx)
    opt = Optimizers(model, cfg, ctx)
    loader = make_loader(cfg, train_files, ctx, micro_tokens)
    roles = {name: p.role for name, p in model.named_parameters()}
    log(f"model_params:{count_params(model)} " + " ".join(
        f"{r}:{sum(p.numel() for _, p in ps)}" for r, ps in params_by_role(model).items() if ps))
    log(f"world_size:{ctx.world_size} grad_accum_steps:{grad_accum} micro_batch_seqs:{micro_tokens // cfg.train_seq_len} "
        f"{compile_note(cfg, ctx)} autocast:{cfg.autocast} "
        f"attn_backend:{model.blocks[0].attn.backend}")

    set_looping(model, cfg.enable_looping_at == 0)  # the loop starts off unless scheduled from step 0
    trainer = Trainer(cfg, ctx, model, train_model, eval_model, opt, loader, log, qat_live=cfg.qat_mode == "always",
                      signals=signals)
    set_qat(model, trainer.qat_live)
    trainer.warmup_and_restore()
    if use_compile(cfg, ctx):
        log(f"eval_prewarm_time:{prewarm_eval(eval_model, cfg, ctx, len(val_tokens), log=log):.0f}ms "
            "(eval graphs compiled on dummy tokens before the timer)")
    averager = WeightAverager(model, cfg)
    stats, unsaved = train_and_save(trainer, averager, val_tokens, val_bytes, out, signals)
    if ctx.device.type == "cuda":
        for line in peak_memory_lines(torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()):
            log(line)
    trainer.validate(stats["steps"], stats["train_ms"], val_tokens, val_bytes)  # as trained (QAT still on if it was)
    set_looping(model, True)  # the final evals, the export and the reloaded artifact all loop (a run may stop before the switch)

    set_qat(model, False)  # from here on every eval sees real (or really quantized) weights
    if averager.kind:
        log_eval(log, "final_live_prequant", evaluate(eval_model, val_tokens, val_bytes, cfg, ctx))
    log(f"averaged_weights: {averager.swap_in()}")
    hessians = calibrate_gptq(model, loader, cfg, ctx, log, stats["train_ms"]) if cfg.quant_method == "gptq" else None
    pre = evaluate(eval_model, val_tokens, val_bytes, cfg, ctx)
    log_eval(log, "final_prequant", pre)

    label = artifact_label(cfg, set(roles.values()))
    art_path = Path(f"{out}.{label}")
    if ctx.is_main:
        export_artifact(model.state_dict(), roles, cfg, art_path, log, hessians)
    del hessians
    barrier(ctx)  # the artifact is on disk before any rank reads it
    score_and_report(art_path, label, cfg, ctx, bos_id, val_tokens, val_bytes, pre, log, stats)
    if unsaved:  # a full disk: the artifact fitted, the weights did not
        raise RunStopped(f"{'; '.join(unsaved)}; the artifact {art_path} was written and scored", 1)
    return 0


def train_and_save(trainer: Trainer, averager: WeightAverager, val_tokens: Tensor, val_bytes: Tensor, out: Path,
                   signals: StopSignals | None) -> tuple[dict, list[str]]:
    """Training and the one stop path of every way it ends: the trained weights, live then
    averaged, go to disk before anything else that can fail (save_trained), whether training
    ended normally, was cut short (non-finite loss, stop signals: all ranks stop after the same
    step) or failed (a shard changed under the run, a dead peer, a third signal). Signals wait
    while the weights are written. Then a stop becomes one error line (RunStopped) and a
    non-zero exit. Returns the training stats and the saves that failed (a full disk)."""
    ctx, log = trainer.ctx, trainer.log
    failure = None
    try:
        stats = trainer.run(val_tokens, val_bytes, averager)
    except BaseException as e:
        failure, stats = e, dict(steps=trainer.steps_done, train_ms=0.0, stopped=None)
    if signals is not None:
        signals.mode = "saving"
    early = failure is not None or stats["stopped"]
    unsaved = save_trained(trainer.model, averager, out, ctx, log,
                           f" (training stopped at step {stats['steps']})" if early else "")
    saved = (f"the weights trained so far are in {out}.raw.pt" + (f" and {out}.avg.pt" if averager.kind else "")
             if not unsaved else "; ".join(unsaved))
    if failure is not None:  # no collective from here on: a peer may be gone
        if isinstance(failure, Interrupted):
            raise RunStopped(f"interrupted by {signal.Signals(failure.signum).name} during step {stats['steps'] + 1} "
                             f"(a third stop signal); {saved}", 128 + failure.signum) from failure
        if not isinstance(failure, (ValueError, OSError)):  # not an input fault: a bug or a peer's death
            traceback.print_exception(failure, file=sys.stderr)
        raise RunStopped(f"training failed after step {stats['steps']}: {type(failure).__name__}: {failure}; {saved}",
                         1) from failure
    barrier(ctx)  # every rank waits for the save: a rank exiting first would make torchrun kill rank 0
    if signals is not None:
        signals.mode = None  # from here on a signal stops at once: the trained weights are on disk
        signum = int(host_max_all([float(signals.signum)], ctx)[0])  # one that came during the saves
        if signum and not stats["stopped"]:
            stats["stopped"] = (f"interrupted by {signal.Signals(signum).name} after training ended", 128 + signum)
    if stats["stopped"]:
        raise RunStopped(f"{stats['stopped'][0]}; {saved}", stats["stopped"][1])
    return stats, unsaved


# The published 8xH100 step times of the 1.0611 record (2026-04-27), whose architecture our
# default shares: about 96 ms/step before its loop switch (11 block passes) and 144
# after (17 passes); 4,917-4,945 steps in 600 s. This project has not measured its own step time on
# that hardware; DRY_RUN scales these figures by FLOPs per step, plain and looped.
RECORD_STEP_MS = {"plain": 96.0, "looped": 144.0}
RECORD_STEP_ENV = {"NUM_LAYERS": "11", "MODEL_DIM": "512", "NUM_HEADS": "8", "NUM_KV_HEADS": "4", "MLP_MULT": "4",
                   "VOCAB_SIZE": "8192", "BIGRAM_VOCAB_SIZE": "0", "NUM_LOOPS": "2", "LOOP_START": "3", "LOOP_END": "5",
                   "TRAIN_SEQ_LEN": "2048", "TRAIN_BATCH_TOKENS": "786432", "TIE_EMBEDDINGS": "1"}


def flops_per_token(cfg: Config, model: nn.Module, looped: bool = True) -> float:
    """Training FLOPs per token: 6 x the matrix-multiply weights (attention, MLP, BigramHash
    projection, and the output head, counted once when tied) + 12·L·d·T for the attention
    scores (QK^T and AV at full length, forward + backward). L counts block passes: with depth
    recurrence and looped=True, the NUM_LOOPS extra passes of LOOP_START..LOOP_END too."""
    by_role = {r: sum(p.numel() for _, p in ps) for r, ps in params_by_role(model).items()}
    passes = cfg.num_layers + (cfg.num_loops * (cfg.loop_end - cfg.loop_start + 1) if looped else 0)
    blocks = (by_role["attn"] + by_role["mlp"]) * passes / cfg.num_layers
    matmul = blocks + by_role.get("proj", 0) + cfg.vocab_size * cfg.model_dim
    return 6.0 * matmul + 12.0 * passes * cfg.model_dim * cfg.train_seq_len


def projected_step_ms(cfg: Config, model: nn.Module) -> tuple[float, float]:
    """(plain, looped) ms/step on 8xH100: the 1.0611 record's figures times this configuration's
    FLOPs per step over the record's, for each phase."""
    with torch.device("meta"):
        ref_cfg = Config.from_env(RECORD_STEP_ENV)
        ref = GPT(ref_cfg, max_len=ref_cfg.train_seq_len)
    step = lambda c, m, looped: flops_per_token(c, m, looped) * c.train_batch_tokens
    return (RECORD_STEP_MS["plain"] * step(cfg, model, False) / step(ref_cfg, ref, False),
            RECORD_STEP_MS["looped"] * step(cfg, model, True) / step(ref_cfg, ref, True))


# A trained weight row's largest entry sits far out (a Gaussian row of 512 reaches about 3.2
# std): amax-scaled codes of Gaussian rows cost 0.7 bits/param too much (the 1.1248 record's
# configuration projected 18,248,186 model bytes for its real 15,487,414). One entry per row at
# 6 std projects it to 15,469,996 (-0.1%) and the 1.0856 record's (SDClip) to 15,914,141, under
# its real size (below 15,968,000). bench/projection_tail.py prints these; docs/quantization.md.
PROJECTION_ROW_MAX = 6.0
# EXPORT_COMPRESSOR=pergroup gains from what synthetic rows lack (similar rows, repeats across
# layers), so DRY_RUN projects a quantized role as brotli times its pergroup/brotli ratio of frame
# bytes less permutations, measured on trained weights with bench/pergroup_ratio.py
# (docs/quantization.md), plus each sorted matrix's row permutation, counted uncompressed.
PERGROUP_RATIO = {"attn": 0.9894, "mlp": 0.9918, "embed": 0.9146}


def project_artifact(model: nn.Module, cfg: Config, rows: int = 32, seed: int = 0) -> tuple[int, list[dict]]:
    """Model bytes of the artifact, projected in about a second: every tensor of the model
    (it may live on the meta device) gets trained-like synthetic values for at most `rows` of
    its rows (Gaussian rows with one entry at PROJECTION_ROW_MAX std and per-row scales
    0.02-0.05; vectors random, so they barely compress), the sample goes through the exporter's own
    quantize_state and encode_artifact, and each role's compressed bytes are scaled by its
    full parameter count over the sampled count. Rows are quantized independently, so a row
    sample has the per-parameter cost of the whole tensor."""
    g = torch.Generator().manual_seed(seed)
    sample, roles, full, sampled = {}, {}, {}, {}
    for name, p in model.named_parameters():
        if p.ndim == 2 and p.role != "scalar":
            r = min(p.size(0), rows)
            t, at = torch.randn(r, p.size(1), generator=g), (torch.arange(r), torch.randint(p.size(1), (r,), generator=g))
            t[at] = PROJECTION_ROW_MAX * t[at].sign()
            t = t * (0.02 + 0.03 * torch.rand(r, 1, generator=g))
        else:
            t = 0.1 * torch.randn(tuple(p.shape), generator=g)
        sample[name], roles[name] = t, p.role
        full[p.role] = full.get(p.role, 0) + p.numel()
        sampled[p.role] = sampled.get(p.role, 0) + t.numel()
    # Synthetic weights have no activations: GPTQ is projected as round-to-nearest on its grid (what GPTQ
    # does with H proportional to I); real GPTQ codes compress about the same (docs/quantization.md).
    grid_cfg = dataclasses.replace(cfg, quant_method="rtn", awq_lite_enabled=False, lqer_enabled=False)
    pergroup = export_compressor(cfg) == "pergroup"
    blob, report = encode_artifact(quantize_state(sample, roles, grid_cfg), cfg.export_packing,
                                   "brotli" if pergroup else export_compressor(cfg), artifact_meta(cfg))
    frames = sum(r["sizes"][r["chosen"]][1] for r in report)
    out, total = [], len(blob) - frames  # magic and header: they list every tensor, sampled or not
    perms = {}
    for name, p in model.named_parameters():
        if pergroup and p.ndim >= 2 and cfg.bits(p.role) < 16:
            perms[p.role] = perms.get(p.role, 0) + 2 * p.size(0) * (p.role in SORTED_ROLES)
    for r in report:
        z = r["sizes"][r["chosen"]][1] * full[r["role"]] / sampled[r["role"]]
        if pergroup and r["role"] in perms:
            z = z * PERGROUP_RATIO.get(r["role"], 1.0) + perms[r["role"]]
        out.append(dict(role=r["role"], params=full[r["role"]], bits=r["bits"], chosen=r["chosen"], bytes=round(z)))
        total += round(z)
    if cfg.awq_lite_enabled:  # which matrix wins is known only after calibration: the tallest candidate, uncompressed
        rows = max(p.size(0) for p in model.parameters() if p.ndim == 2 and cfg.bits(p.role) < cfg.awq_lite_bits)
        n = cfg.awq_lite_group_top_k * cfg.awq_lite_group_size * rows
        out.append(dict(role="awq_lite", params=n, bits=str(cfg.awq_lite_bits), chosen="int8", bytes=n + 2 * rows * cfg.awq_lite_group_top_k))
        total += out[-1]["bytes"]
    if cfg.lqer_enabled:  # the factors do not scale with a row sample (B is rank x cols): counted whole, as int8
        # containers uncompressed, at the LQER_TOP_K largest candidates (which ones win is known only after training)
        k, g = cfg.lqer_rank, cfg.lqer_asym_group
        sizes = sorted((p.size(0) * k + 2 + k * p.size(1) + 4 * -(-k * p.size(1) // g) for p in model.parameters()
                        if p.ndim == 2 and cfg.bits(p.role) < 16), reverse=True)[:cfg.lqer_top_k]
        out.append(dict(role="lqer", params=k * len(sizes), bits=f"2/{cfg.lqer_factor_bits}", chosen="int8", bytes=sum(sizes)))
        total += out[-1]["bytes"]
    return total, out


def shard_summary(cfg: Config, pattern: str, what: str) -> tuple[int, int]:
    """(number of shards, tokens) from the shard headers alone (each header and file size is checked)."""
    files = shard_files(cfg.data_path, pattern, what)
    return len(files), sum(shard_length(f) for f in files)


def simulate_schedule(cfg: Config, plain_ms: float, looped_ms: float) -> tuple[int, int, float]:
    """The training loop's step count under the cap less the GPTQ reserve (or ITERATIONS), with
    steps of plain_ms until the loop switches on (the trainer's own progress rule) and looped_ms
    after: (steps, the step the loop starts at or 0, elapsed ms)."""
    cap_ms, elapsed, looping, switch = 1000 * cfg.train_cap_seconds, 0.0, False, 0
    for step in range(cfg.iterations):
        if not looping and looping_due(cfg, step, elapsed):
            looping, switch = True, step + 1
        ms = looped_ms if looping else plain_ms
        if cap_ms and elapsed + ms > cap_ms:
            return step, switch, elapsed
        elapsed += ms
    return cfg.iterations, switch, elapsed


def saved_activation_bytes(cfg: Config, looping: bool) -> int:
    """Bytes one micro-batch's compiled training forward keeps for its backward: the step is
    traced by dynamo and AOT autograd on fake tensors (nothing runs), under bf16 autocast when
    AUTOCAST=bf16 (CPU autocast: its fp32 op list is close to CUDA's), split by the min-cut
    partitioner inductor uses, and the tensors the forward graph hands to the backward are summed.
    Attention is traced with SDPA (CPU): FA3 and flex keep their output and log-sum-exp as SDPA does."""
    from torch._functorch.aot_autograd import aot_module_simplified
    from torch._functorch.partitioners import min_cut_rematerialization_partition
    saved = []

    class Traced(Exception):
        pass

    def forward_graph(gm, example_inputs):
        out = next(n for n in gm.graph.nodes if n.op == "output").args[0]
        saved.append(sum(v.numel() * v.element_size() for a in out if isinstance(v := getattr(a, "meta", {}).get("val"), Tensor)))
        raise Traced  # the graph is all we need: nothing is compiled or run

    def backend(gm, example_inputs):
        return aot_module_simplified(gm, example_inputs, fw_compiler=forward_graph, partition_fn=min_cut_rematerialization_partition)
    model = GPT(cfg, max_len=cfg.train_row_len)
    model.looping = looping
    ids = torch.zeros(cfg.train_batch_tokens // 8 // cfg.train_row_len, cfg.train_row_len, dtype=torch.long)
    torch._dynamo.reset()
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.autocast == "bf16"):
            torch.compile(model, backend=backend, fullgraph=True, dynamic=False)(ids, ids, packed=cfg.packed)
    except Exception as e:  # dynamo wraps the backend's exception
        if not saved:
            raise
    torch._dynamo.reset()
    return saved[0]


def memory_projection(cfg: Config, model: nn.Module) -> list[str]:
    """Peak GPU memory per rank, projected: fp32 weights, gradients and optimizer state
    (AdamW m and v, Muon momentum and its bf16 update buffer, the EMA shadow), the compiled
    step's saved activations of one micro-batch (saved_activation_bytes, plain and looped), and
    on CUDA the fused loss's bf16 logits and their gradient. The caching allocator's slack and
    kernel workspaces come on top."""
    roles = params_by_role(model)
    n = count_params(model)
    muon = sum(p.numel() for r in MATRIX_ROLES for _, p in roles[r])
    static = 4 * n * 2 + 4 * 2 * (n - muon) + (4 + 2) * muon + (4 * n if cfg.ema_decay > 0 else 0)
    rows_tokens = cfg.train_batch_tokens // 8
    logits = 2 * 2 * rows_tokens * cfg.vocab_size if cfg.fused_ce else 3 * 4 * rows_tokens * cfg.vocab_size
    lines, gib = [], 2 ** 30
    for looping in ([False, True] if cfg.num_loops else [False]):
        act = saved_activation_bytes(cfg, looping)
        lines.append(f"projected_memory_per_rank {'looped' if looping else 'plain'}: total:{(static + act + logits) / gib:.1f}GiB "
                     f"weights_grads_optimizer:{static / gib:.2f}GiB saved_activations:{act / gib:.2f}GiB "
                     f"({rows_tokens} tokens per micro-batch) loss_logits:{logits / gib:.2f}GiB "
                     "(traced compiled step; allocator slack and workspaces not included)")
    return lines


def dry_run(cfg: Config, world_size: int) -> int:
    """DRY_RUN=1: everything a competitor wants to know before spending 8 GPUs, in seconds and
    without training or writing anything: parameters per role, the projected artifact size,
    the data and tokenizer checks, and whether ITERATIONS or the wallclock cap ends training."""
    t0 = time.perf_counter()
    results = []

    def check(name: str, fn) -> object:
        try:
            ok, detail, value = fn()
        except (OSError, ValueError) as e:
            ok, detail, value = False, str(e), None
        results.append(ok)
        print(f"check {name}: {'PASS' if ok else 'FAIL'} {detail}", flush=True)
        return value

    print("dry_run: no training, nothing written (DRY_RUN=1)")
    with torch.device("meta"):  # shapes only: no memory, no init time
        model = GPT(cfg, max_len=cfg.max_len)
    print(f"model_params:{count_params(model)} " + " ".join(
        f"{r}:{sum(p.numel() for _, p in ps)}" for r, ps in params_by_role(model).items() if ps))
    def attention():  # what a CUDA run of this torch picks (the same function the run calls)
        try:
            backend = resolve_attn_backend(cfg, torch.device("cuda"))
        except ImportError as e:
            return False, str(e), None
        masked = "document-masked" if cfg.attn_doc_mask else "causal"
        return True, f"attn_backend:{backend} on CUDA with torch {torch.__version__} ({masked}; ATTN_BACKEND={cfg.attn_backend})", None
    check("attention", attention)
    grad_accum = 8 // world_size
    print(f"world_size:{world_size} grad_accum_steps:{grad_accum} "
          f"micro_batch_seqs:{cfg.train_batch_tokens // (8 * cfg.train_seq_len)} (per rank and micro-step)")

    model_bytes, report = project_artifact(model, cfg)
    for r in report:
        print(f"projected role:{r['role']} params:{r['params']} bits:{r['bits']} bytes:{r['bytes']} "
              f"bits_per_param:{8 * r['bytes'] / max(r['params'], 1):.3f}")
    readable_bytes, code_bytes = code_sizes()
    total = code_bytes + model_bytes
    label = artifact_label(cfg, {p.role for p in model.parameters()})
    check("artifact_fits", lambda: (total <= ARTIFACT_CAP_BYTES,
          f"projected code_bytes:{code_bytes} (packed; readable {readable_bytes}) model_bytes:{model_bytes} "
          f"total_bytes:{total} cap:{ARTIFACT_CAP_BYTES} "
          f"margin:{ARTIFACT_CAP_BYTES - total} format:{label} (trained-like synthetic weights; a real run's "
          f"weights can compress a few percent differently)", None))

    def tokenizer():
        sp = load_tokenizer(cfg)
        build_byte_lut(sp, cfg.vocab_size)
        return True, f"{cfg.tokenizer_path}: {sp.vocab_size()} pieces = VOCAB_SIZE, has the U+2581 piece", sp
    check("tokenizer", tokenizer)

    def train_data():
        n, tokens = shard_summary(cfg, cfg.train_glob, "train")
        return True, f"{n} shards, {tokens:,} tokens", tokens
    train_tokens = check("train_shards", train_data)

    def val_data():
        tokens = load_validation_tokens(cfg, lambda m: None)
        top = int(tokens.max())
        return (top < cfg.vocab_size, f"{len(tokens):,} tokens scored, largest token id {top} "
                f"({'<' if top < cfg.vocab_size else '>='} VOCAB_SIZE={cfg.vocab_size})", None)
    check("val_shards", val_data)

    def run_inputs():  # the run's own input checks (check_inputs): the same function, so the same verdict
        lines = []
        check_inputs(cfg, Dist(0, 1, 0, torch.device("cpu")), lines.append, world_size=world_size)
        pre = next(line for line in lines if line.startswith("preflight: "))
        for line in lines:
            if line.startswith(("data_audit:", "bpb_bytes:", "tokenizer_manifest_check:", "tokenizer_shard_check:")):
                print(line)
        return True, pre.removeprefix("preflight: "), None
    check("data_preflight", run_inputs)

    def run_files():  # what the run refuses about RUN_ID and OUT_DIR, without touching anything
        problem, existing = run_files_problem(cfg, Path(cfg.out_dir), cfg.run_id) if cfg.run_id else (None, [])
        if problem:
            return False, problem, None
        return True, (f"OUT_DIR={cfg.out_dir} RUN_ID={cfg.run_id or '(a fresh id)'}" +
                      (f"; OVERWRITE_RUN=1 will delete {', '.join(p.name for p in existing)}" if existing else "")), None
    check("run_files", run_files)

    if cfg.dry_run_step_ms:
        plain_ms = looped_ms = cfg.dry_run_step_ms
        source = "DRY_RUN_STEP_MS"
    else:
        plain_ms, looped_ms = projected_step_ms(cfg, model)
        source = (f"estimate: the 1.0611 record's published {RECORD_STEP_MS['plain']:.0f}/{RECORD_STEP_MS['looped']:.0f} ms/step "
                  "on 8xH100 before/after its loop switch, scaled by this configuration's FLOPs per step; set "
                  "DRY_RUN_STEP_MS to your measured step_avg")
    steps, switch, elapsed_ms = simulate_schedule(cfg, plain_ms, looped_ms)
    step_ms = elapsed_ms / max(steps, 1)
    cap_ms = 1000 * cfg.train_cap_seconds  # the training loop's share: the cap less the GPTQ reserve
    def secs(x: float) -> str:  # 592 s, 599.5 s, 8 s, 0.5 s, 0.00097 s: never "0 s" for a real duration
        t = f"{x:.1f}" if x >= 10 else f"{x:.2g}"
        return (t.rstrip("0").rstrip(".") if "." in t and "e" not in t else t) + " s"
    loop_s = (f"{secs(cfg.train_cap_seconds)} (the {secs(cfg.max_wallclock_seconds)} cap less the "
              f"{secs(cfg.max_wallclock_seconds - cfg.train_cap_seconds)} GPTQ reserve)"
              if cfg.train_cap_seconds != cfg.max_wallclock_seconds else secs(cfg.max_wallclock_seconds))
    # the step times are 8xH100's unless DRY_RUN_STEP_MS gives this machine's: say which
    on = (f" at DRY_RUN_STEP_MS={cfg.dry_run_step_ms:g}" if cfg.dry_run_step_ms else
          " on 8xH100 (the estimate's hardware; a CPU step is far slower: set DRY_RUN_STEP_MS to a run's step_avg)")
    if not cap_ms:
        verdict = f"ITERATIONS binds (no wallclock cap): {cfg.iterations} steps take about {secs(elapsed_ms / 1000)}{on}"
    elif steps >= cfg.iterations:
        verdict = (f"ITERATIONS binds: training ends at step {cfg.iterations} after about {secs(elapsed_ms / 1000)} of "
                   f"{loop_s}{on}")
    else:
        verdict = f"the wallclock cap binds: about {steps} of ITERATIONS={cfg.iterations} steps fit in {loop_s}"
    if cfg.num_loops:
        verdict += (f"; the loop switches on at step {switch}" if switch else "; the loop never switches on")
    if cfg.train_seq_schedule:
        verdict += f"; every step priced at TRAIN_SEQ_LEN={cfg.train_seq_len} (TRAIN_SEQ_SCHEDULE's shorter stages run faster)"
    print(f"step_budget step_ms:{step_ms:.2f} plain_ms:{plain_ms:.2f} looped_ms:{looped_ms:.2f} steps:{steps} "
          f"iterations:{cfg.iterations} tokens:{steps * cfg.train_batch_tokens} "
          f"flops_per_token:{flops_per_token(cfg, model):.4g} ({source})")
    print(f"step_budget: {verdict}")
    if train_tokens:
        passes = steps * cfg.train_batch_tokens / train_tokens
        print(f"step_budget: training reads {steps * cfg.train_batch_tokens:,} tokens, {passes:.2f}x the "
              f"{train_tokens:,} in the train shards" + (" (the stream wraps around: data repeats)" if passes > 1 else ""))
    if cfg.dry_run_memory:
        for line in memory_projection(cfg, GPT(cfg, max_len=cfg.train_row_len)):
            print(line, flush=True)
    failed = results.count(False)
    print(f"dry_run_result: {'PASS' if not failed else 'FAIL'} ({failed} failed) time:{time.perf_counter() - t0:.1f}s")
    return 1 if failed else 0


# What a run writes into OUT_DIR, as suffixes after "<RUN_ID>." (the artifact's is its label, whatever
# its compressor: format_label's bits then _<compressor name><level, if any>).
RUN_OUTPUT_SUFFIX = r"txt|raw\.pt|avg\.pt|(int\d+|fp16)(-(int\d+|fp16))*_[a-z]+\d*"


def run_outputs(out_dir: Path, run_id: str) -> list[Path]:
    """The files of run `run_id` already in OUT_DIR (RUN_ID has no '.', so none is another run's)."""
    if not out_dir.is_dir():
        return []
    return sorted(p for p in out_dir.iterdir()
                  if p.name.startswith(run_id + ".") and re.fullmatch(RUN_OUTPUT_SUFFIX, p.name[len(run_id) + 1:]))


def run_files_problem(cfg: Config, out_dir: Path, run_id: str) -> tuple[str | None, list[Path]]:
    """Why RUN_ID cannot start in OUT_DIR (or None), and the earlier files OVERWRITE_RUN=1 would
    delete. Read-only: the run (claim_run_files) and DRY_RUN both ask it. An earlier run's log
    would get a second run appended, and its weights and artifact would be replaced; EVAL_ONLY
    never deletes the artifact it is asked to score, OVERWRITE_RUN or not."""
    existing = run_outputs(out_dir, run_id)
    if cfg.eval_only and any(p.resolve() == Path(cfg.eval_only).resolve() for p in existing):
        return (f"EVAL_ONLY={cfg.eval_only} is a file of RUN_ID={run_id}, which this run would "
                f"{'delete (OVERWRITE_RUN=1)' if cfg.overwrite_run else 'write over'}; choose another RUN_ID"), existing
    if existing and not cfg.overwrite_run:
        return (f"RUN_ID={run_id} already has files in {out_dir}: {', '.join(p.name for p in existing)}; "
                "choose another RUN_ID, or set OVERWRITE_RUN=1 to delete them and start again"), existing
    probe = out_dir if out_dir.is_dir() else next((p for p in out_dir.parents if p.exists()), Path("."))
    if not os.access(probe, os.W_OK):
        return f"OUT_DIR={out_dir}: {probe} is not writable", existing
    return None, existing


def claim_run_files(cfg: Config, ctx: Dist, out_dir: Path, run_id: str) -> tuple[str | None, list[str]]:
    """Rank 0 makes OUT_DIR, checks that RUN_ID can start there (run_files_problem) and that it
    can write there, and with OVERWRITE_RUN=1 deletes the earlier run's files (so no stale file
    of the old run survives). Every rank gets the verdict: (reason to refuse or None, deleted files)."""
    verdict = [None, []]
    if ctx.is_main:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            verdict[0], existing = run_files_problem(cfg, out_dir, run_id)
            if verdict[0] is None:
                probe = out_dir / f".{run_id}.{os.getpid()}.probe"  # a read-only mount passes os.access as root
                probe.write_bytes(b"")
                probe.unlink()
            for p in existing if cfg.overwrite_run and verdict[0] is None else []:
                p.unlink()
                verdict[1].append(str(p))
        except OSError as e:
            verdict[0] = f"OUT_DIR={out_dir}: cannot prepare the run's files ({e.strerror or e}: {e.filename or out_dir})"
    if ctx.enabled:
        dist.broadcast_object_list(verdict, src=0)
    return verdict[0], verdict[1]


def source_sha256() -> str:
    """sha256 of the minified source, the text the packed copy runs (so the same for this file
    and its packed copy): what ranks compare at start and what an artifact records about the code
    that wrote it. A readable run minifies itself once (a few seconds on a CPU)."""
    global SOURCE_SHA256
    if SOURCE_SHA256 is None:
        text = globals().get("PACKED_SOURCE") or minify_source(Path(__file__).read_text(encoding="utf-8"))
        SOURCE_SHA256 = hashlib.sha256(text.encode()).hexdigest()
    return SOURCE_SHA256


SOURCE_SHA256 = None


def check_ranks_agree(cfg: Config, ctx: Dist) -> None:
    """All ranks compare their resolved configuration and code before anything else: a rank
    started with other settings (another VAL_MAX_TOKENS, say) used to train and score without a
    word. Any difference is a ConfigError on every rank, naming each differing setting with
    both values."""
    if not ctx.enabled:
        return
    mine = dict(cfg.items()) | {"train_gpt.py sha256": hashlib.sha256(Path(__file__).read_bytes()).hexdigest()}
    everyone = [None] * ctx.world_size
    dist.all_gather_object(everyone, mine, group=ctx.control)
    problems = []
    for r, theirs in enumerate(everyone[1:], 1):
        for k in sorted(set(mine) | set(theirs)):
            if theirs.get(k) != everyone[0].get(k):
                problems.append(f"rank {r} runs with {k}={theirs.get(k)!r}, rank 0 with {k}={everyone[0].get(k)!r}: "
                                "every rank must be started with the same settings and code")
    if problems:
        raise ConfigError(problems)


def safe_log(log: Logger, msg: str) -> None:
    """The error line, even when the log itself is what failed (then it is only printed)."""
    try:
        log(msg)
    except OSError:
        print(msg, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__ or "Parameter Golf trainer (packed copy).")
        print(config_help())
        return 0
    if argv:
        raise SystemExit(f"train_gpt.py takes no arguments (got {argv}); configure it with environment variables, "
                         "see --help")
    notes, problems, environ, kind = [], launcher_problems(os.environ), dict(os.environ), ConfigError.kind
    try:
        if environ.get("EVAL_ONLY"):  # the model comes from the artifact, before anything is built or logged
            environ, notes = eval_only_environ(environ)
        cfg = Config.from_env(environ, notes=notes)
    except ConfigError as e:
        problems = e.problems + problems
        kind = e.kind
    if problems:
        if os.environ.get("RANK", "0") == "0":  # one report, not one per rank
            print(config_report(problems, kind if len(problems) == 1 else ConfigError.kind), file=sys.stderr, flush=True)
        return 2
    if cfg.dry_run:  # before any process group: under torchrun rank 0 checks, the others just exit
        return dry_run(cfg, int(os.environ.get("WORLD_SIZE", "1"))) if os.environ.get("RANK", "0") == "0" else 0
    ctx = setup_distributed()
    try:
        check_ranks_agree(cfg, ctx)
    except ConfigError as e:
        if ctx.is_main:
            print(config_report(e.problems), file=sys.stderr, flush=True)
        dist.destroy_process_group()
        return 2
    run_id = cfg.run_id
    if not run_id:  # every rank must agree on the run id: rank 0 picks it
        holder = [uuid.uuid4().hex[:12]]
        if ctx.enabled:
            dist.broadcast_object_list(holder, src=0)
        run_id = holder[0]
    out_dir = Path(cfg.out_dir)
    refusal, removed = claim_run_files(cfg, ctx, out_dir, run_id)
    if refusal:
        if ctx.is_main:
            print(config_report([refusal], InputError.kind), file=sys.stderr, flush=True)
        if ctx.enabled:
            dist.destroy_process_group()
        return 2
    log = Logger(out_dir / f"{run_id}.txt" if ctx.is_main else None)
    # a packed train_gpt.py (records/records_tool.py pack) runs this source minified from PACKED_SOURCE: the log
    # embeds the text that ran, while code_sha256 and code_bytes are always those of the file that ran, the counted code
    ran = Path(__file__).read_bytes()
    code = globals().get("PACKED_SOURCE") or ran.decode("utf-8")
    log(code, console=False)
    log("=" * 100, console=False)
    log(f"code_sha256:{hashlib.sha256(ran).hexdigest()} code_bytes:{len(ran)}")
    log(f"run_id:{run_id}")
    for i, line in enumerate(environment_lines(ctx)):
        log(line, console=i < 2)  # nvidia-smi output goes to the file only
    for key, value in cfg.items():
        log(f"config:{key}={value}")
    for note in notes:
        log(f"config_note:{note}")
    for path in removed:
        log(f"overwrite_run: deleted the earlier run's {path}")
    if ctx.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    signals = StopSignals().install()
    try:
        rc = run(cfg, ctx, log, out_dir / run_id, signals)
        barrier(ctx)  # no rank tears the process group down while a peer still uses it
        if log.failure:  # everything else was written; the log is incomplete (a full disk)
            print(f"train_gpt.py: {log.failure}", file=sys.stderr, flush=True)
            return rc or 1
        return rc
    except ConfigError as e:  # a problem with the inputs, found before training: no traceback, exit 2
        safe_log(log, f"error:{type(e).__name__}: {'; '.join(e.problems)}")
        if ctx.is_main:
            print(config_report(e.problems, e.kind), file=sys.stderr, flush=True)
        return 2
    except (RunStopped, Interrupted) as e:  # complete messages: an error line, no traceback
        code = e.exit_code if isinstance(e, RunStopped) else 128 + e.signum
        safe_log(log, f"error:{type(e).__name__}: {e}")
        if ctx.is_main:
            print(f"train_gpt.py: {e}", file=sys.stderr, flush=True)
        return code
    except BaseException as e:
        safe_log(log, f"error:{type(e).__name__}: {e}")
        raise
    finally:
        signals.restore()
        log.close()
        if ctx.enabled:
            gc.collect()  # DDP's reducer sits in reference cycles: free it while its group is alive
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
