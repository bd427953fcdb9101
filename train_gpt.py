"""Parameter Golf trainer: one file that trains, exports, reloads and scores a small GPT.

Launch (8xH100):  torchrun --standalone --nproc_per_node=8 train_gpt.py
Single process:   python train_gpt.py            (CPU or one GPU; RANK unset)
Every knob is an environment variable; `python train_gpt.py --help` lists them all with
their defaults and meanings. The run writes logs/<RUN_ID>.txt (the log is the record: it
holds this source, versions, the resolved config and one key:value line per event).

Sections (grep -n '^# =====' prints this table of contents):
  1 CONFIG  2 DISTRIBUTED+LOGGING  3 DATA  4 BPB  5 MODEL  6 MUON  7 EXPORT  8 EVAL
  9 TRAIN  10 MAIN
Hard cap: 1500 lines.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import glob
import hashlib
import io
import json
import math
import os
import platform
import struct
import subprocess
import sys
import time
import uuid
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import sentencepiece as spm
import torch
import torch.distributed as dist
import torch.nn.functional as F
import zstandard  # required: the artifact is zstd-22; there is deliberately no zlib fallback
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel as DDP

ARTIFACT_CAP_BYTES = 16_000_000  # decimal bytes: code + compressed model (challenge rule)


# ===== 1. CONFIG =====
# One typed dataclass; each field is an environment variable named like the field in upper
# case. Field metadata carries the help text and the validation rule, so --help, parsing
# and validation all read the same table.

def knob(default, help: str, *, lo=None, hi=None, choices=None, group: str = "misc"):
    return field(default=default, metadata=dict(help=help, lo=lo, hi=hi, choices=choices, group=group))


@dataclass(frozen=True)
class Config:
    # --- data and run ---
    data_path: str = knob("./data/datasets/fineweb10B_sp1024", "directory holding the token shards", group="data")
    train_glob: str = knob("fineweb_train_*.bin", "glob (relative to DATA_PATH) of training shards", group="data")
    val_glob: str = knob("fineweb_val_*.bin", "glob (relative to DATA_PATH) of validation shards", group="data")
    tokenizer_path: str = knob("./data/tokenizers/fineweb_1024_bpe.model", "SentencePiece model used for the BPB byte count", group="data")
    vocab_size: int = knob(1024, "vocabulary size; must equal the tokenizer's", lo=2, group="data")
    run_id: str = knob("", "name of the run's log and outputs (default: a fresh uuid)", group="data")
    out_dir: str = knob("logs", "directory for the log, raw weights and artifact (rank 0 writes)", group="data")
    seed: int = knob(1337, "random seed (init and nothing else: the data order is fixed)", lo=0, group="data")
    # --- schedule ---
    iterations: int = knob(20000, "maximum number of training steps", lo=0, group="schedule")
    max_wallclock_seconds: float = knob(600.0, "training-time cap in seconds (0 = no cap, iteration-based warmdown)", lo=0.0, group="schedule")
    warmdown_iters: int = knob(1200, "length of the final linear LR decay, in steps (converted to time when capped)", lo=0, group="schedule")
    warmup_steps: int = knob(20, "compile-priming steps whose weights/optimizer/data state are then restored", lo=0, group="schedule")
    train_batch_tokens: int = knob(524288, "global tokens per optimizer step (identical for any world size dividing 8)", lo=1, group="schedule")
    train_seq_len: int = knob(1024, "training sequence length", lo=2, group="schedule")
    train_log_every: int = knob(200, "print a step line every N steps (0 = never)", lo=0, group="schedule")
    val_loss_every: int = knob(1000, "validate every N steps (0 = only at the end)", lo=0, group="schedule")
    val_batch_size: int = knob(524288, "global tokens per validation forward batch", lo=1, group="schedule")
    val_max_tokens: int = knob(0, "score only the first N validation tokens (0 = all; quick local runs only)", lo=0, group="schedule")
    # --- model ---
    num_layers: int = knob(9, "transformer blocks", lo=1, group="model")
    model_dim: int = knob(512, "residual width", lo=8, group="model")
    num_heads: int = knob(8, "query heads", lo=1, group="model")
    num_kv_heads: int = knob(4, "key/value heads (GQA); must divide NUM_HEADS", lo=1, group="model")
    mlp_mult: float = knob(2.0, "MLP hidden width as a multiple of MODEL_DIM", lo=0.0, group="model")
    tie_embeddings: bool = knob(True, "share the token embedding with the output head", group="model")
    tied_embed_init_std: float = knob(0.005, "std of the token-embedding init", lo=0.0, group="model")
    rope_base: float = knob(10000.0, "RoPE base frequency", lo=1.0, group="model")
    logit_softcap: float = knob(30.0, "logits = C*tanh(z/C) (0 disables)", lo=0.0, group="model")
    qk_gain_init: float = knob(1.5, "initial per-head query gain after QK RMS-norm", group="model")
    # --- optimizer ---
    matrix_lr: float = knob(0.04, "Muon LR for block matrices", lo=0.0, group="optim")
    scalar_lr: float = knob(0.04, "AdamW LR for vectors and scalar controls", lo=0.0, group="optim")
    tied_embed_lr: float = knob(0.05, "AdamW LR for the tied embedding", lo=0.0, group="optim")
    embed_lr: float = knob(0.6, "AdamW LR for the untied input embedding", lo=0.0, group="optim")
    head_lr: float = knob(0.008, "AdamW LR for the untied output head", lo=0.0, group="optim")
    muon_momentum: float = knob(0.95, "Muon momentum after warmup", lo=0.0, hi=1.0, group="optim")
    muon_momentum_warmup_start: float = knob(0.85, "Muon momentum at step 0", lo=0.0, hi=1.0, group="optim")
    muon_momentum_warmup_steps: int = knob(500, "steps of linear momentum warmup", lo=0, group="optim")
    muon_backend_steps: int = knob(5, "Newton-Schulz iterations", lo=1, group="optim")
    muon_wd: float = knob(0.0, "Muon decoupled weight decay (W *= 1 - lr*wd)", lo=0.0, group="optim")
    adam_wd: float = knob(0.0, "AdamW weight decay on embeddings and scalars", lo=0.0, group="optim")
    beta1: float = knob(0.9, "AdamW beta1", lo=0.0, hi=1.0, group="optim")
    beta2: float = knob(0.95, "AdamW beta2", lo=0.0, hi=1.0, group="optim")
    adam_eps: float = knob(1e-8, "AdamW epsilon", lo=0.0, group="optim")
    grad_clip_norm: float = knob(0.0, "global grad-norm clip (0 = off)", lo=0.0, group="optim")
    # --- speed path ---
    compile: str = knob("auto", "torch.compile the model: auto (CUDA only), 1, 0", choices=("auto", "0", "1"), group="speed")

    # Env-var families we own: a set variable with one of these prefixes that is not a field
    # is a typo, and a typo that silently does nothing is worse than an error.
    FAMILIES = ("TRAIN_", "VAL_", "EVAL_", "MUON_", "QAT_", "EMA_", "SWA_", "TTT_", "QUANT_",
                "BIGRAM_", "SMEAR_", "WARMUP_", "WARMDOWN_", "TIED_", "MATRIX_", "SCALAR_",
                "EMBED_", "HEAD_", "ROPE_", "MLP_", "MODEL_", "ADAM_", "LOGIT_", "QK_", "XSA_",
                "EXPORT_", "NUM_", "TOKENIZER_")

    @staticmethod
    def env_name(f: dataclasses.Field) -> str:
        return f.name.upper()

    @classmethod
    def from_env(cls, environ: dict | None = None) -> "Config":
        environ = dict(os.environ if environ is None else environ)
        names = {cls.env_name(f) for f in dataclasses.fields(cls)}
        for key in sorted(environ):
            if key.startswith(cls.FAMILIES) and key not in names:
                hint = difflib.get_close_matches(key, sorted(names), n=1)
                raise ValueError(f"unknown environment variable {key}" + (f" (did you mean {hint[0]}?)" if hint else "")
                                 + "; see `python train_gpt.py --help`")
        values = {}
        for f in dataclasses.fields(cls):
            raw = environ.get(cls.env_name(f))
            values[f.name] = f.default if raw is None else _parse(cls.env_name(f), raw, f.type)
        cfg = cls(**values)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        for f in dataclasses.fields(self):
            v, m, name = getattr(self, f.name), f.metadata, self.env_name(f)
            if m["choices"] is not None and v not in m["choices"]:
                raise ValueError(f"{name}={v!r}: must be one of {', '.join(m['choices'])}")
            if isinstance(v, float) and not math.isfinite(v):
                raise ValueError(f"{name}={v}: must be finite")
            if m["lo"] is not None and v < m["lo"]:
                raise ValueError(f"{name}={v}: must be >= {m['lo']}")
            if m["hi"] is not None and v > m["hi"]:
                raise ValueError(f"{name}={v}: must be <= {m['hi']}")
        if self.model_dim % self.num_heads:
            raise ValueError(f"MODEL_DIM={self.model_dim} must be divisible by NUM_HEADS={self.num_heads}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"NUM_HEADS={self.num_heads} must be divisible by NUM_KV_HEADS={self.num_kv_heads}")
        if (self.model_dim // self.num_heads) % 2:
            raise ValueError(f"head dim MODEL_DIM/NUM_HEADS={self.model_dim // self.num_heads} must be even for RoPE")
        if self.train_batch_tokens % (8 * self.train_seq_len):
            raise ValueError(f"TRAIN_BATCH_TOKENS={self.train_batch_tokens} must be a multiple of 8*TRAIN_SEQ_LEN="
                             f"{8 * self.train_seq_len} (the global batch is split into 8 equal micro-batches)")
        if self.mlp_hidden < 1:
            raise ValueError(f"MLP_MULT={self.mlp_mult}: MLP hidden width would be {self.mlp_hidden}")
        if self.val_max_tokens and self.val_max_tokens <= self.train_seq_len:
            raise ValueError(f"VAL_MAX_TOKENS={self.val_max_tokens} must exceed TRAIN_SEQ_LEN={self.train_seq_len}")

    @property
    def mlp_hidden(self) -> int:
        return int(self.mlp_mult * self.model_dim)

    def items(self) -> list[tuple[str, object]]:
        return sorted((self.env_name(f), getattr(self, f.name)) for f in dataclasses.fields(self))


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


def config_help() -> str:
    lines = ["Environment variables of train_gpt.py (name, default, meaning):"]
    group = None
    for f in dataclasses.fields(Config):
        if f.metadata["group"] != group:
            group = f.metadata["group"]
            lines.append(f"\n[{group}]")
        default = int(f.default) if isinstance(f.default, bool) else f.default
        lines.append(f"  {Config.env_name(f):<28} {str(default)!r:<40} {f.metadata['help']}")
    lines.append("\nSet by torchrun: RANK, WORLD_SIZE, LOCAL_RANK (single process when RANK is unset).")
    return "\n".join(lines)


# ===== 2. DISTRIBUTED+LOGGING =====

@dataclass
class Dist:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup_distributed() -> Dist:
    """Single process when RANK is unset; otherwise NCCL on CUDA and gloo on CPU."""
    if "RANK" not in os.environ:
        device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
        if device.type == "cuda":
            torch.cuda.set_device(device)
        return Dist(0, 1, 0, device)
    rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
    if 8 % world:
        raise ValueError(f"WORLD_SIZE={world} must divide 8 (the global batch is 8 micro-batches)")
    if torch.cuda.is_available():
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
    else:
        device = torch.device("cpu")
        dist.init_process_group("gloo")
    return Dist(rank, world, local, device)


def all_reduce_(t: Tensor, ctx: Dist, op=dist.ReduceOp.SUM) -> Tensor:
    if ctx.enabled:
        dist.all_reduce(t, op=op)
    return t


def barrier(ctx: Dist) -> None:
    if ctx.enabled:
        dist.barrier()


class Logger:
    """Rank 0 appends every line to logs/<RUN_ID>.txt and flushes it at once (nothing lost
    on a crash); console=False keeps bulky blocks (the source) out of the terminal."""

    def __init__(self, path: Path | None):
        self.file = open(path, "a", encoding="utf-8") if path is not None else None

    def __call__(self, msg: str, console: bool = True) -> None:
        if self.file is None:
            return
        if console:
            print(msg, flush=True)
        self.file.write(msg + "\n")
        self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


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
    tokens = np.fromfile(path, dtype="<u2", count=n, offset=HEADER_INTS * 4)
    return torch.from_numpy(tokens.astype(np.int32))


def shard_files(data_path: str, pattern: str, what: str) -> list[str]:
    if not Path(data_path).is_dir():
        raise FileNotFoundError(f"DATA_PATH={data_path} is not a directory")
    files = sorted(glob.glob(os.path.join(data_path, pattern)))
    if not files:
        raise FileNotFoundError(f"no {what} shards match {os.path.join(data_path, pattern)} "
                                f"(set DATA_PATH and {what.upper()}_GLOB)")
    return files


class TokenStream:
    """Reads shards in order, forever (wrapping around), handing out contiguous spans."""

    def __init__(self, files: list[str]):
        self.files = files
        self.reset()

    def reset(self) -> None:
        self.file_idx, self.pos = 0, 0
        self.tokens = load_shard(self.files[0])

    def take(self, n: int) -> Tensor:
        parts = []
        while n > 0:
            if self.pos == len(self.tokens):
                self.file_idx = (self.file_idx + 1) % len(self.files)
                self.tokens, self.pos = load_shard(self.files[self.file_idx]), 0
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

    def next_batch(self) -> tuple[Tensor, Tensor]:
        span = self.micro_tokens + 1
        chunk = self.stream.take(span * self.ctx.world_size)[self.ctx.rank * span:(self.ctx.rank + 1) * span]
        chunk = chunk.to(self.ctx.device, dtype=torch.int64, non_blocking=True)
        return chunk[:-1].view(-1, self.seq_len), chunk[1:].view(-1, self.seq_len)


def load_validation_tokens(cfg: Config, log: Logger) -> Tensor:
    tokens = torch.cat([load_shard(f) for f in shard_files(cfg.data_path, cfg.val_glob, "val")])
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


# ===== 5. MODEL =====
# Every parameter gets a role when it is created; optimizers and the exporter route by role
# (never by name patterns). Roles: "matrix" (block weights: Muon), "embed" (token table),
# "head" (untied output head), "scalar" (vectors and gains: AdamW, tiny at export).

ROLES = ("matrix", "embed", "head", "scalar")


def with_role(p: nn.Parameter, role: str) -> nn.Parameter:
    assert role in ROLES, role
    p.role = role
    return p


def rms_norm(x: Tensor) -> Tensor:
    return F.rms_norm(x, (x.size(-1),))


class Linear(nn.Module):
    """Bias-free linear layer holding an fp32 master weight (autocast runs it in bf16)."""

    def __init__(self, d_in: int, d_out: int, zero_init: bool = False):
        super().__init__()
        self.weight = with_role(nn.Parameter(torch.empty(d_out, d_in)), "matrix")
        if zero_init:  # output projections start at zero so each block starts as the identity
            nn.init.zeros_(self.weight)
        else:
            nn.init.normal_(self.weight, std=d_in ** -0.5)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight.to(x.dtype))


class Rotary(nn.Module):
    """Half-split RoPE tables, built once for the longest sequence the model will see."""

    def __init__(self, head_dim: int, base: float, max_len: int):
        super().__init__()
        inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        angles = torch.outer(torch.arange(max_len, dtype=torch.float32), inv_freq)
        self.register_buffer("cos", angles.cos()[None, :, None, :], persistent=False)  # [1, T, 1, hd/2]
        self.register_buffer("sin", angles.sin()[None, :, None, :], persistent=False)

    def forward(self, x_BTHD: Tensor) -> Tensor:
        T = x_BTHD.size(1)
        cos, sin = self.cos[:, :T].to(x_BTHD.dtype), self.sin[:, :T].to(x_BTHD.dtype)
        x1, x2 = x_BTHD.chunk(2, dim=-1)
        return torch.cat([x1 * cos + x2 * sin, x2 * cos - x1 * sin], dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg: Config, max_len: int):
        super().__init__()
        self.h, self.h_kv, self.hd = cfg.num_heads, cfg.num_kv_heads, cfg.model_dim // cfg.num_heads
        self.c_q = Linear(cfg.model_dim, self.h * self.hd)
        self.c_k = Linear(cfg.model_dim, self.h_kv * self.hd)
        self.c_v = Linear(cfg.model_dim, self.h_kv * self.hd)
        self.proj = Linear(self.h * self.hd, cfg.model_dim, zero_init=True)
        self.q_gain = with_role(nn.Parameter(torch.full((self.h,), cfg.qk_gain_init)), "scalar")
        self.rotary = Rotary(self.hd, cfg.rope_base, max_len)

    def forward(self, x: Tensor) -> Tensor:
        B, T, _ = x.shape
        q = self.c_q(x).view(B, T, self.h, self.hd)
        k = self.c_k(x).view(B, T, self.h_kv, self.hd)
        v = self.c_v(x).view(B, T, self.h_kv, self.hd)
        q, k = self.rotary(rms_norm(q)), self.rotary(rms_norm(k))  # QK-norm, then RoPE
        q = q * self.q_gain.to(q.dtype)[None, None, :, None]      # learned per-head temperature
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                           is_causal=True, enable_gqa=self.h != self.h_kv)
        return self.proj(y.transpose(1, 2).reshape(B, T, self.h * self.hd))


class MLP(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.fc = Linear(cfg.model_dim, cfg.mlp_hidden)
        self.proj = Linear(cfg.mlp_hidden, cfg.model_dim, zero_init=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(F.relu(self.fc(x)).square())  # relu^2


class Block(nn.Module):
    def __init__(self, cfg: Config, max_len: int):
        super().__init__()
        d = cfg.model_dim
        self.attn, self.mlp = Attention(cfg, max_len), MLP(cfg)
        self.attn_scale = with_role(nn.Parameter(torch.ones(d)), "scalar")
        self.mlp_scale = with_role(nn.Parameter(torch.ones(d)), "scalar")
        # x_in = m0*x + m1*x0: each block may re-read the embedding output x0 directly.
        self.resid_mix = with_role(nn.Parameter(torch.stack([torch.ones(d), torch.zeros(d)])), "scalar")

    def forward(self, x: Tensor, x0: Tensor) -> Tensor:
        mix = self.resid_mix.to(x.dtype)
        x = mix[0] * x + mix[1] * x0
        x = x + self.attn_scale.to(x.dtype) * self.attn(rms_norm(x))
        return x + self.mlp_scale.to(x.dtype) * self.mlp(rms_norm(x))


class GPT(nn.Module):
    """Tied-embedding GPT with U-Net skips: the first half of the blocks push their outputs,
    the second half pops them (LIFO) and adds them with learned per-dim weights."""

    def __init__(self, cfg: Config, max_len: int):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = with_role(nn.Parameter(torch.randn(cfg.vocab_size, cfg.model_dim) * cfg.tied_embed_init_std), "embed")
        self.blocks = nn.ModuleList(Block(cfg, max_len) for _ in range(cfg.num_layers))
        self.n_enc = cfg.num_layers // 2
        n_skip = min(self.n_enc, cfg.num_layers - self.n_enc)
        self.skip_weights = with_role(nn.Parameter(torch.ones(n_skip, cfg.model_dim)), "scalar")
        self.lm_head = None
        if not cfg.tie_embeddings:
            self.lm_head = with_role(nn.Parameter(torch.zeros(cfg.vocab_size, cfg.model_dim)), "head")

    def forward(self, ids: Tensor, targets: Tensor | None = None) -> Tensor:
        """The only path through the network: logits [B, T, V] (fp32, softcapped), or the mean
        cross-entropy when targets are given."""
        x = x0 = rms_norm(F.embedding(ids, self.tok_emb))
        skips = []
        for i, block in enumerate(self.blocks):
            if i >= self.n_enc and skips:
                x = x + self.skip_weights[i - self.n_enc].to(x.dtype) * skips.pop()
            x = block(x, x0)
            if i < self.n_enc:
                skips.append(x)
        x = rms_norm(x)
        head = self.tok_emb if self.lm_head is None else self.lm_head
        logits = F.linear(x, head.to(x.dtype)).float()
        if self.cfg.logit_softcap > 0:
            c = self.cfg.logit_softcap
            logits = c * torch.tanh(logits / c)
        if targets is None:
            return logits
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))


def params_by_role(model: nn.Module) -> dict[str, list[tuple[str, nn.Parameter]]]:
    out = {r: [] for r in ROLES}
    for name, p in model.named_parameters():
        role = getattr(p, "role", None)
        if role not in out:
            raise AssertionError(f"parameter {name} has no role; tag it with with_role() where it is created")
        out[role].append((name, p))
    return out


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ===== 6. MUON =====

@torch.no_grad()
def newton_schulz5(G: Tensor, steps: int, eps: float = 1e-7) -> Tensor:
    """Approximately orthogonalize G (push its singular values towards 1) with the quintic
    Newton-Schulz iteration of modded-nanogpt. Runs in bf16 on CUDA, fp32 on CPU."""
    a, b, c = 3.4445, -4.7750, 2.0315
    X = G.to(torch.bfloat16 if G.is_cuda else torch.float32)
    X = X / (X.norm() + eps)
    transposed = X.size(0) > X.size(1)
    if transposed:  # iterate on the wide orientation: the Gram matrix is the smaller one
        X = X.T
    for _ in range(steps):
        A = X @ X.T
        X = a * X + (b * A + c * A @ A) @ X
    return X.T if transposed else X


class Muon(torch.optim.Optimizer):
    """Momentum + Nesterov, then Newton-Schulz orthogonalization, shape scale
    sqrt(max(1, rows/cols)) and decoupled weight decay. Ranks split the NS work round-robin
    and share the results with one all-reduce over a flat buffer (each slot is written by
    exactly one rank, so the sum is exact)."""

    def __init__(self, params, lr: float, momentum: float, backend_steps: int, weight_decay: float, ctx: Dist,
                 ns_fn=newton_schulz5):
        super().__init__(params, dict(lr=lr, base_lr=lr, momentum=momentum, backend_steps=backend_steps,
                                      weight_decay=weight_decay))
        self.ctx, self.ns_fn = ctx, ns_fn

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            params = group["params"]
            if not params:
                continue
            buf_dtype = torch.bfloat16 if params[0].is_cuda else torch.float32
            flat = torch.zeros(sum(p.numel() for p in params), device=params[0].device, dtype=buf_dtype)
            offset = 0
            for i, p in enumerate(params):
                n = p.numel()
                if i % self.ctx.world_size == self.ctx.rank and p.grad is not None:
                    g = p.grad
                    mom = self.state[p].setdefault("momentum_buffer", torch.zeros_like(g))
                    mom.mul_(group["momentum"]).add_(g)
                    u = self.ns_fn(g.add(mom, alpha=group["momentum"]), group["backend_steps"])
                    u = u * max(1.0, p.size(0) / p.size(1)) ** 0.5
                    flat[offset:offset + n] = u.reshape(-1).to(buf_dtype)
                offset += n
            all_reduce_(flat, self.ctx)
            offset = 0
            for p in params:
                n = p.numel()
                if group["weight_decay"]:
                    p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(flat[offset:offset + n].view_as(p).to(p.dtype), alpha=-group["lr"])
                offset += n


class Optimizers:
    """Muon for block matrices, AdamW for everything else, built from the role table."""

    def __init__(self, model: GPT, cfg: Config, ctx: Dist):
        groups = params_by_role(model)
        fused = ctx.device.type == "cuda"
        embed_lr = cfg.tied_embed_lr if cfg.tie_embeddings else cfg.embed_lr
        adam_groups = [dict(params=[p for _, p in groups[role]], lr=lr, base_lr=lr, role=role)
                       for role, lr in (("embed", embed_lr), ("head", cfg.head_lr), ("scalar", cfg.scalar_lr))
                       if groups[role]]
        self.adam = torch.optim.AdamW(adam_groups, betas=(cfg.beta1, cfg.beta2), eps=cfg.adam_eps,
                                      weight_decay=cfg.adam_wd, fused=fused)
        ns_fn = torch.compile(newton_schulz5) if use_compile(cfg, ctx) else newton_schulz5
        self.muon = Muon([p for _, p in groups["matrix"]], lr=cfg.matrix_lr, momentum=cfg.muon_momentum,
                         backend_steps=cfg.muon_backend_steps, weight_decay=cfg.muon_wd, ctx=ctx, ns_fn=ns_fn)
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


# ===== 7. EXPORT =====
# The artifact is a self-describing container, compressed with zstd level 22:
#   b"PGAT" | u32 header length | JSON header | payload
# The header lists each tensor's encoding, shape and byte ranges, so loading needs no
# unpickling and a corrupt or truncated file fails with a clear error.
#   int8_row: per-row symmetric int8 codes q = round(w/s), s = amax(row)/127 stored as fp16.
#   fp16:     small tensors (role "scalar").

ARTIFACT_MAGIC = b"PGAT"
ENCODING_BY_ROLE = {"matrix": "int8_row", "embed": "int8_row", "head": "int8_row", "scalar": "fp16"}
ZSTD_LEVEL = 22


def quantize_int8_rows(w: Tensor) -> tuple[Tensor, Tensor]:
    w = w.detach().float()
    scale = (w.abs().amax(dim=1) / 127.0).clamp_min(1e-12).to(torch.float16)
    q = torch.clamp(torch.round(w / scale.float()[:, None]), -127, 127).to(torch.int8)
    return q, scale


def dequantize_int8_rows(q: Tensor, scale: Tensor) -> Tensor:
    return q.float() * scale.float()[:, None]


def encode_state(state: dict[str, Tensor], roles: dict[str, str]) -> bytes:
    """Serialize a state dict into the (uncompressed) container."""
    entries, chunks, offset = [], [], 0

    def put(arr: np.ndarray) -> list[int]:
        nonlocal offset
        data = np.ascontiguousarray(arr).tobytes()
        chunks.append(data)
        offset += len(data)
        return [offset - len(data), len(data)]

    for name in sorted(state):
        t, enc = state[name].detach().cpu(), ENCODING_BY_ROLE[roles[name]]
        entry = dict(name=name, encoding=enc, shape=list(t.shape))
        if enc == "int8_row":
            q, s = quantize_int8_rows(t.reshape(t.size(0), -1))
            entry["codes"], entry["scales"] = put(q.numpy()), put(s.numpy())
        else:
            entry["data"] = put(t.to(torch.float16).numpy())
        entries.append(entry)
    header = json.dumps(dict(version=1, tensors=entries)).encode()
    return ARTIFACT_MAGIC + struct.pack("<I", len(header)) + header + b"".join(chunks)


def decode_state(raw: bytes, where: str = "artifact") -> dict[str, Tensor]:
    """Inverse of encode_state; returns float32 tensors. Raises ValueError on any corruption."""
    if raw[:4] != ARTIFACT_MAGIC or len(raw) < 8:
        raise ValueError(f"{where}: not a train_gpt.py artifact (bad magic)")
    (hlen,) = struct.unpack("<I", raw[4:8])
    try:
        header = json.loads(raw[8:8 + hlen])
        tensors = header["tensors"]
    except (ValueError, KeyError) as e:
        raise ValueError(f"{where}: corrupt header ({e})") from None
    payload = memoryview(raw)[8 + hlen:]

    def get(rng: list[int], dtype, count: int) -> np.ndarray:
        start, n = rng
        if start < 0 or start + n > len(payload) or n != count * np.dtype(dtype).itemsize:
            raise ValueError(f"{where}: tensor {name} byte range {rng} is outside the payload or has the wrong size")
        return np.frombuffer(payload[start:start + n], dtype=dtype)

    out = {}
    for e in tensors:
        name, shape = e["name"], tuple(e["shape"])
        numel = int(np.prod(shape)) if shape else 1
        if e["encoding"] == "int8_row":
            rows = shape[0]
            q = torch.from_numpy(get(e["codes"], np.int8, numel).copy()).view(rows, -1)
            s = torch.from_numpy(get(e["scales"], np.float16, rows).copy())
            out[name] = dequantize_int8_rows(q, s).view(shape)
        elif e["encoding"] == "fp16":
            out[name] = torch.from_numpy(get(e["data"], np.float16, numel).copy()).float().view(shape)
        else:
            raise ValueError(f"{where}: tensor {name} has unknown encoding {e['encoding']!r}")
    return out


def compress(raw: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(raw)


def decompress(blob: bytes, where: str = "artifact") -> bytes:
    try:
        return zstandard.ZstdDecompressor().decompress(blob, max_output_size=1 << 32)
    except zstandard.ZstdError as e:
        raise ValueError(f"{where}: zstd decompression failed ({e}); the file is truncated or corrupt") from None


def artifact_label() -> str:
    """Name of the export format, built from the real encodings and codec (labels must not lie)."""
    matrix_enc = sorted({e for r, e in ENCODING_BY_ROLE.items() if r != "scalar"})
    return "+".join(e.split("_")[0] for e in matrix_enc) + f"_zstd{ZSTD_LEVEL}"


# ===== 8. EVAL =====

@dataclass
class EvalResult:
    loss: float
    bpb: float
    tokens: int
    bytes: int
    ms: float


def evaluate(model: nn.Module, val_tokens: Tensor, lut: ByteLUT, cfg: Config, ctx: Dist) -> EvalResult:
    """Non-overlapping eval: the split is cut into seq_len windows (a final partial window
    is dropped), windows are divided contiguously across ranks, and the nat and byte sums
    are accumulated in fp64 and all-reduced."""
    t0 = time.perf_counter()
    seq = cfg.train_seq_len
    n_seqs = (len(val_tokens) - 1) // seq
    lo, hi = n_seqs * ctx.rank // ctx.world_size, n_seqs * (ctx.rank + 1) // ctx.world_size
    batch = max(1, cfg.val_batch_size // (seq * ctx.world_size))
    sums = torch.zeros(3, dtype=torch.float64, device=ctx.device)  # nats, tokens, bytes
    was_training = model.training
    model.eval()
    with torch.inference_mode(), autocast(ctx):
        for s in range(lo, hi, batch):
            e = min(s + batch, hi)
            chunk = val_tokens[s * seq:e * seq + 1].to(ctx.device, dtype=torch.int64)
            x, y = chunk[:-1].view(-1, seq), chunk[1:].view(-1, seq)
            logits = model(x)
            nll = F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.reshape(-1), reduction="sum")
            sums += torch.stack([nll.double(), torch.tensor(y.numel(), dtype=torch.float64, device=ctx.device),
                                 lut.count(x, y).sum().double()])
    model.train(was_training)
    all_reduce_(sums, ctx)
    nats, tokens, nbytes = sums.tolist()
    return EvalResult(nats / tokens, nats / (math.log(2) * nbytes), int(tokens), int(nbytes),
                      1000 * (time.perf_counter() - t0))


# ===== 9. TRAIN =====

def use_compile(cfg: Config, ctx: Dist) -> bool:
    return cfg.compile == "1" or (cfg.compile == "auto" and ctx.device.type == "cuda")


def autocast(ctx: Dist):
    # bf16 autocast on CUDA; CPU runs fp32 (CPU bf16 is slow and tests want exact numbers).
    return torch.autocast("cuda", dtype=torch.bfloat16) if ctx.device.type == "cuda" else nullcontext()


def lr_scale(cfg: Config, step: int, elapsed_ms: float) -> float:
    """1 until the warmdown, then linear to 0. With a wallclock cap the warmdown is the last
    WARMDOWN_ITERS steps' worth of time at the current average step time."""
    if cfg.warmdown_iters == 0:
        return 1.0
    if cfg.max_wallclock_seconds > 0:
        step_ms = elapsed_ms / max(step, 1)
        remaining = 1000 * cfg.max_wallclock_seconds - elapsed_ms
        return max(remaining / (cfg.warmdown_iters * step_ms), 0.0) if remaining <= cfg.warmdown_iters * step_ms else 1.0
    start = cfg.iterations - cfg.warmdown_iters
    return max((cfg.iterations - step) / cfg.warmdown_iters, 0.0) if step >= start else 1.0


def muon_momentum(cfg: Config, step: int) -> float:
    frac = min(step / cfg.muon_momentum_warmup_steps, 1.0) if cfg.muon_momentum_warmup_steps else 1.0
    return (1 - frac) * cfg.muon_momentum_warmup_start + frac * cfg.muon_momentum


@dataclass
class Trainer:
    cfg: Config
    ctx: Dist
    model: GPT             # the raw module (owns the parameters)
    train_model: nn.Module  # compiled and/or DDP-wrapped view used for training steps
    eval_model: nn.Module  # compiled (not DDP) view used for evaluation
    opt: Optimizers
    loader: DistributedTokenLoader
    log: Logger

    @property
    def grad_accum(self) -> int:
        return 8 // self.ctx.world_size

    def step(self, step: int, scale: float) -> Tensor:
        """One optimizer step over 8/world_size micro-batches; returns the mean loss (a tensor:
        no host sync here)."""
        total = torch.zeros((), device=self.ctx.device)
        for micro in range(self.grad_accum):
            x, y = self.loader.next_batch()
            if isinstance(self.train_model, DDP):  # all-reduce gradients only on the last micro-batch
                self.train_model.require_backward_grad_sync = micro == self.grad_accum - 1
            with autocast(self.ctx):
                loss = self.train_model(x, y)
            (loss / self.grad_accum).backward()
            total += loss.detach()
        self.opt.set_schedule(scale, muon_momentum(self.cfg, step))
        if self.cfg.grad_clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip_norm)
        self.opt.step()
        self.opt.zero_grad()
        return total / self.grad_accum

    def warmup_and_restore(self) -> None:
        """Run WARMUP_STEPS real steps so every compiled graph and kernel is built before the
        timer starts, then restore the initial weights, optimizer state and data position:
        measured training starts from the true init on the first batch."""
        if self.cfg.warmup_steps == 0:
            return
        model_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        opt_states = self.opt.state_dicts()
        t0 = time.perf_counter()
        for i in range(self.cfg.warmup_steps):
            self.step(i, 1.0)
        sync(self.ctx)
        self.model.load_state_dict(model_state, strict=True)
        self.opt.load_state_dicts(opt_states)
        self.opt.zero_grad()
        self.loader.reset()
        self.log(f"warmup_steps:{self.cfg.warmup_steps} warmup_time:{1000 * (time.perf_counter() - t0):.0f}ms "
                 "(weights, optimizer state and data position restored)")

    def run(self, val_tokens: Tensor, lut: ByteLUT) -> dict:
        cfg, ctx, log = self.cfg, self.ctx, self.log
        tokens_per_step = cfg.train_batch_tokens
        train_ms, step, stop_reason = 0.0, 0, "iterations"
        sync(ctx)
        t0 = time.perf_counter()
        while True:
            last = step == cfg.iterations or stop_reason == "wallclock_cap"
            if last or (cfg.val_loss_every and step % cfg.val_loss_every == 0):
                sync(ctx)
                train_ms += 1000 * (time.perf_counter() - t0)  # the timer pauses during validation
                r = evaluate(self.eval_model, val_tokens, lut, cfg, ctx)
                log(f"step:{step}/{cfg.iterations} val_loss:{r.loss:.4f} val_bpb:{r.bpb:.4f} "
                    f"train_time:{train_ms:.0f}ms step_avg:{train_ms / max(step, 1):.2f}ms")
                sync(ctx)
                t0 = time.perf_counter()
            if last:
                break
            elapsed = train_ms + 1000 * (time.perf_counter() - t0)
            loss = self.step(step, lr_scale(cfg, step, elapsed))
            step += 1
            elapsed = train_ms + 1000 * (time.perf_counter() - t0)
            if cfg.max_wallclock_seconds > 0:
                # Every rank must stop on the same step: agree through a collective.
                flag = torch.tensor(float(elapsed >= 1000 * cfg.max_wallclock_seconds), device=ctx.device)
                if all_reduce_(flag, ctx, dist.ReduceOp.MAX).item() > 0:
                    stop_reason = "wallclock_cap"
            if cfg.train_log_every and (step % cfg.train_log_every == 0 or step == 1 or stop_reason != "iterations"):
                avg = elapsed / step
                stop_step = cfg.iterations
                if cfg.max_wallclock_seconds > 0:
                    stop_step = min(stop_step, int(1000 * cfg.max_wallclock_seconds / avg))
                log(f"step:{step}/{cfg.iterations} train_loss:{loss.item():.4f} "
                    f"lr_scale:{lr_scale(cfg, step, elapsed):.4f} train_time:{elapsed:.0f}ms step_avg:{avg:.2f}ms "
                    f"tok_s:{tokens_per_step * 1000 / avg:.0f} eta_stop:{max(stop_step - step, 0) * avg:.0f}ms "
                    f"proj_stop_step:{stop_step}")
        if stop_reason == "wallclock_cap":
            log(f"stopping_early: wallclock_cap train_time:{train_ms:.0f}ms step:{step}/{cfg.iterations}")
        return dict(steps=step, train_ms=train_ms)


def sync(ctx: Dist) -> None:
    if ctx.device.type == "cuda":
        torch.cuda.synchronize(ctx.device)


# ===== 10. MAIN =====

def build_model(cfg: Config, ctx: Dist) -> GPT:
    torch.manual_seed(cfg.seed)
    return GPT(cfg, max_len=cfg.train_seq_len).to(ctx.device)


def wrap_for_training(model: GPT, cfg: Config, ctx: Dist) -> tuple[nn.Module, nn.Module]:
    compiled = torch.compile(model, dynamic=False, fullgraph=True) if use_compile(cfg, ctx) else model
    train_model = compiled
    if ctx.enabled:
        train_model = DDP(compiled, device_ids=[ctx.local_rank] if ctx.device.type == "cuda" else None,
                          broadcast_buffers=False)
    return train_model, compiled


def export_artifact(model: GPT, out: Path, log: Logger) -> Path:
    """Rank 0: raw weights first (nothing is lost if export fails), then the artifact."""
    raw_path = Path(f"{out}.raw.pt")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save(state, raw_path)
    log(f"raw_model:{raw_path} bytes:{raw_path.stat().st_size}")
    roles = {name: p.role for name, p in model.named_parameters()}
    t0 = time.perf_counter()
    blob = compress(encode_state(state, roles))
    art_path = Path(f"{out}.{artifact_label()}")
    art_path.write_bytes(blob)
    log(f"artifact:{art_path} format:{artifact_label()} export_time:{1000 * (time.perf_counter() - t0):.0f}ms")
    return art_path


def load_artifact(path: Path, cfg: Config, ctx: Dist) -> GPT:
    """Read the artifact back from disk into a fresh model with strict key matching."""
    state = decode_state(decompress(path.read_bytes(), str(path)), str(path))
    model = build_model(cfg, ctx)
    model.load_state_dict({k: v.to(ctx.device) for k, v in state.items()}, strict=True)
    return model


def log_eval(log: Logger, label: str, r: EvalResult) -> None:
    log(f"{label} val_loss:{r.loss:.4f} val_bpb:{r.bpb:.4f} eval_time:{r.ms:.0f}ms tokens:{r.tokens} bytes:{r.bytes}")
    log(f"{label}_exact val_loss:{r.loss:.8f} val_bpb:{r.bpb:.8f}")


def run(cfg: Config, ctx: Dist, log: Logger, out: Path) -> int:
    sp = load_tokenizer(cfg)
    lut = build_byte_lut(sp, cfg.vocab_size).to(ctx.device)
    val_tokens = load_validation_tokens(cfg, log)
    train_files = shard_files(cfg.data_path, cfg.train_glob, "train")
    log(f"train_shards:{len(train_files)} val_tokens:{len(val_tokens)}")

    model = build_model(cfg, ctx)
    train_model, eval_model = wrap_for_training(model, cfg, ctx)
    opt = Optimizers(model, cfg, ctx)
    grad_accum = 8 // ctx.world_size
    micro_tokens = cfg.train_batch_tokens // (ctx.world_size * grad_accum)
    loader = DistributedTokenLoader(train_files, ctx, micro_tokens, cfg.train_seq_len)
    log(f"model_params:{count_params(model)}")
    log(f"world_size:{ctx.world_size} grad_accum_steps:{grad_accum} micro_batch_seqs:{micro_tokens // cfg.train_seq_len} "
        f"compile:{int(use_compile(cfg, ctx))} autocast:{'bf16' if ctx.device.type == 'cuda' else 'off'}")

    trainer = Trainer(cfg, ctx, model, train_model, eval_model, opt, loader, log)
    trainer.warmup_and_restore()
    stats = trainer.run(val_tokens, lut)
    if ctx.device.type == "cuda":
        log(f"peak_memory_allocated_mib:{torch.cuda.max_memory_allocated() // 2**20} "
            f"peak_memory_reserved_mib:{torch.cuda.max_memory_reserved() // 2**20}")

    pre = evaluate(eval_model, val_tokens, lut, cfg, ctx)
    log_eval(log, "final_prequant", pre)

    code_bytes = len(Path(__file__).read_bytes())
    art_path = Path(f"{out}.{artifact_label()}")
    if ctx.is_main:
        export_artifact(model, out, log)
    barrier(ctx)  # the artifact is on disk before any rank reads it
    t0 = time.perf_counter()
    model_bytes = art_path.stat().st_size
    total = code_bytes + model_bytes
    log(f"code_bytes:{code_bytes} model_bytes:{model_bytes} total_bytes:{total} cap:{ARTIFACT_CAP_BYTES}")
    reloaded = load_artifact(art_path, cfg, ctx)
    reloaded_eval = torch.compile(reloaded, dynamic=False, fullgraph=True) if use_compile(cfg, ctx) else reloaded
    final = evaluate(reloaded_eval, val_tokens, lut, cfg, ctx)
    metric = f"final_{artifact_label()}_roundtrip"
    log_eval(log, metric, final)
    eval_ms = 1000 * (time.perf_counter() - t0)
    log(f"train_time_total_ms:{stats['train_ms']:.0f} eval_time_total_ms:{eval_ms:.0f} steps:{stats['steps']}")
    log(f"final_score_exact metric:{metric} val_loss:{final.loss:.8f} val_bpb:{final.bpb:.8f}")
    if total > ARTIFACT_CAP_BYTES:
        raise RuntimeError(f"artifact total {total} bytes (code {code_bytes} + model {model_bytes}) exceeds the "
                           f"{ARTIFACT_CAP_BYTES}-byte cap; everything was saved under {out.parent}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        print(config_help())
        return 0
    if argv:
        raise SystemExit(f"train_gpt.py takes no arguments (got {argv}); configure it with environment variables, "
                         "see --help")
    cfg = Config.from_env()
    ctx = setup_distributed()
    run_id = cfg.run_id or (uuid.uuid4().hex[:12] if not ctx.enabled else None)
    if ctx.enabled and not cfg.run_id:  # every rank must agree on the run id: rank 0 picks it
        holder = [uuid.uuid4().hex[:12] if ctx.is_main else None]
        dist.broadcast_object_list(holder, src=0)
        run_id = holder[0]
    out_dir = Path(cfg.out_dir)
    if ctx.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    log = Logger(out_dir / f"{run_id}.txt" if ctx.is_main else None)
    code = Path(__file__).read_text(encoding="utf-8")
    log(code, console=False)
    log("=" * 100, console=False)
    log(f"code_sha256:{hashlib.sha256(code.encode()).hexdigest()} code_bytes:{len(code.encode())}")
    log(f"run_id:{run_id}")
    for i, line in enumerate(environment_lines(ctx)):
        log(line, console=i < 2)  # nvidia-smi output goes to the file only
    for key, value in cfg.items():
        log(f"config:{key}={value}")
    if ctx.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    try:
        return run(cfg, ctx, log, out_dir / run_id)
    except BaseException as e:
        log(f"error:{type(e).__name__}: {e}")
        raise
    finally:
        log.close()
        if ctx.enabled:
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
