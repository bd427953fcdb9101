"""Parity of this repo's train_gpt.py against a published record's train_gpt.py, on CPU.

    python bench/parity.py [--record PATH] [--steps 50] [--json OUT.json] ...

Imports the record's script as it is (never edited or copied) with stand-ins of equal math for
what needs a GPU: `flash_attn_interface` (FA3: causal SDPA, varlen through a block-diagonal
causal mask) and Triton (the record's fused softcapped cross-entropy and fused LeakyReLU^2 MLP
are replaced by the eager formulas they implement). Then, at a tiny size and in fp32:

  forward   both GPTs hold ONE set of weights (ours, copied through a name map into the record's
            banks); per virtual layer slot the max |difference| of the block outputs (each lane
            of the two-lane blocks) and of the logits, plain and looped, on packed rows with
            document-masked attention (the record's varlen layout);
  train     N optimizer steps of each code with its own optimizer, LR/momentum schedule,
            gradient clipping and loop switch, on the same batches (8 micro-batches per step,
            as both run on one process); the loss of every step;
  gptq      per quantized matrix: each code's GPTQ codes from the same Hessian (equal-code
            fraction, GPTQ objective tr(E H E^T) relative difference), the two codes' own
            Hessians from the same calibration rows, and the LQER correction of the same error;
  eval      bpb of both trained models on the same validation rows (model-level), and each
            code's own non-overlapping eval function on the slice.

Extra comparisons (TTT) register in EXTRA_COMPARISONS: functions (run) -> list of rows.
The record's LQER/quantizer settings, its hyperparameters and every difference not listed here
are described in docs/parity.md.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import importlib.util
import json
import math
import sys
import time
import types
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
DEFAULT_RECORD = REPO.parent / "shared" / "reference" / "records" / "2026-04-27_1.0611" / "train_gpt.py"
DEFAULT_DATA = REPO.parent / "shared" / "proxy8192"
PRESET = REPO / "configs" / "record_0427_1.0611.env"

# The tiny size: the record's block layout (11 blocks, loop 3-5 x2, lanes from 8, XSA on all),
# narrow (d=64, 2 heads of 32 with 16 rotary dims, GQA 2:1) and short rows.
TINY = {"MODEL_DIM": "64", "NUM_HEADS": "2", "NUM_KV_HEADS": "1", "TRAIN_SEQ_LEN": "64",
        "TRAIN_BATCH_TOKENS": "1024", "EVAL_SEQ_LEN": "64", "TTT_EVAL_SEQ_LEN": "64", "AUTOCAST": "off",
        "COMPILE": "0", "MAX_WALLCLOCK_SECONDS": "0", "WARMUP_STEPS": "0", "VAL_BATCH_SIZE": "4096",
        "ATTN_BACKEND": "sdpa", "TRAIN_LOG_EVERY": "0",
        # fp32 throughout, the record's model too (its training keeps tok_emb in bf16: EMBED_DTYPE=bf16
        # here, tested on its own in tests/test_parity.py)
        "EMBED_DTYPE": "fp32"}


def progress(msg: str) -> None:
    print(f"[parity] {msg}", file=sys.stderr, flush=True)


# ----- stand-ins for the record's GPU-only imports -----

def fa3_func(q, k, v, causal=True, **_):
    """flash_attn_func: q [B, T, H, D], k/v [B, T, Hkv, D], causal."""
    rep = q.size(2) // k.size(2)
    k, v = k.repeat_interleave(rep, dim=2), v.repeat_interleave(rep, dim=2)
    y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=causal)
    return y.transpose(1, 2)


def fa3_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal=True, **_):
    """flash_attn_varlen_func over the flattened tokens [N, H, D]: each token attends the
    earlier tokens of its own segment [cu[i], cu[i+1]) (repeated trailing entries are empty)."""
    N = q.size(0)
    seg = torch.bucketize(torch.arange(N), cu_seqlens_q.long().unique(), right=True)
    mask = (seg[:, None] == seg[None, :]) & torch.ones(N, N, dtype=torch.bool).tril()
    rep = q.size(1) // k.size(1)
    k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    y = F.scaled_dot_product_attention(q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None],
                                       attn_mask=mask[None, None])
    return y[0].transpose(0, 1)


class _Anything(types.ModuleType):
    """A module whose every attribute is a no-op decorator/placeholder: enough for the record's
    module-level `@triton.jit` definitions and `tl.constexpr` annotations to import."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _placeholder


def _placeholder(*args, **kwargs):
    if len(args) == 1 and callable(args[0]) and not kwargs:
        return args[0]  # used as a decorator
    return _placeholder


STUB_NAMES = ("flash_attn_interface", "triton", "triton.language", "triton.tools", "triton.tools.tensor_descriptor")


@contextlib.contextmanager
def stub_modules():
    """The stand-in modules in sys.modules while the record's script imports, and the previous
    entries (none, or a real install) restored afterwards: torch.compile must not find a fake
    `triton`. torch._dynamo is imported first for the same reason (it probes for Triton once).
    torch.compile is the identity meanwhile: the record's @torch.compile'd Newton-Schulz runs
    eagerly (the same ops; CPU inductor would need a C++ toolchain and a minute per shape)."""
    import torch._dynamo  # noqa: F401
    saved = {name: sys.modules.get(name) for name in STUB_NAMES}
    compile_ = torch.compile
    torch.compile = lambda fn=None, **_: fn if fn is not None else (lambda f: f)
    fa = types.ModuleType("flash_attn_interface")
    fa.flash_attn_func, fa.flash_attn_varlen_func = fa3_func, fa3_varlen_func
    sys.modules["flash_attn_interface"] = fa
    for name in STUB_NAMES[1:]:
        sys.modules[name] = _Anything(name)
        if "." in name:  # `import triton.language as tl` reads the parent's attribute
            parent, child = name.rsplit(".", 1)
            setattr(sys.modules[parent], child, sys.modules[name])
    try:
        yield
    finally:
        torch.compile = compile_
        for name, mod in saved.items():
            if mod is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = mod


def softcapped_ce(logits, targets, softcap, reduction="mean"):
    """The record's fused kernel's math: cross-entropy of softcap*tanh(logits/softcap) in fp32."""
    z = softcap * torch.tanh(logits.float() / softcap)
    return F.cross_entropy(z, targets, reduction=reduction)


def fused_mlp(x, w1, w2):
    """The record's fused LeakyReLU^2 MLP: leaky_relu(x w1^T, 0.5)^2 w2^T."""
    return F.linear(F.leaky_relu(F.linear(x, w1), negative_slope=0.5).square(), w2)


_RECORDS: dict[str, types.ModuleType] = {}


def import_record(path: Path) -> types.ModuleType:
    """The record's script as a module (once per process: it registers torch custom ops)."""
    path = Path(path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"record script {path} does not exist")
    key = str(path)
    if key not in _RECORDS:
        name = "record_" + hashlib.sha1(key.encode()).hexdigest()[:10]
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        with stub_modules():
            spec.loader.exec_module(mod)
        mod.softcapped_cross_entropy = softcapped_ce
        mod.FusedLeakyReLUSquareMLP = fused_mlp
        _RECORDS[key] = mod
    return _RECORDS[key]


def import_ours(repo: Path = REPO) -> types.ModuleType:
    if str(repo) not in sys.path:
        sys.path.insert(0, str(repo))
    import train_gpt
    return train_gpt


@contextlib.contextmanager
def cpu_streams():
    """The record's optimizer step runs AdamW on a side CUDA stream; on CPU a stream is a no-op."""
    class Stream:
        def wait_stream(self, _):
            pass
    saved = torch.cuda.Stream, torch.cuda.stream, torch.cuda.current_stream
    torch.cuda.Stream, torch.cuda.stream = Stream, lambda s: contextlib.nullcontext()
    torch.cuda.current_stream = lambda *a: Stream()
    try:
        yield
    finally:
        torch.cuda.Stream, torch.cuda.stream, torch.cuda.current_stream = saved


# ----- configurations and the weight map -----

def read_env(path: Path) -> dict:
    env = {}
    for line in Path(path).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            k, v = line.split("=", 1)
            env[k] = v
    return env


def our_config(tg, overrides: dict):
    env = read_env(PRESET) if PRESET.is_file() else {}
    env.update(TINY)
    env.update(overrides)
    return tg.Config.from_env(env)


# Our Config field -> the record's Hyperparameters attribute, where the names differ or the
# record has no knob for our field's value (then the value is the record's fixed behaviour).
RECORD_FIELDS = ("vocab_size", "num_layers", "model_dim", "num_heads", "num_kv_heads", "mlp_mult", "xsa_last_n",
                 "tie_embeddings", "tied_embed_init_std", "logit_softcap", "rope_base", "rope_dims", "ln_scale",
                 "qk_gain_init", "num_loops", "loop_start", "loop_end", "enable_looping_at", "parallel_start_layer",
                 "parallel_final_lane", "skip_gates_enabled", "gate_window", "sparse_attn_gate_enabled",
                 "sparse_attn_gate_init_std", "sparse_attn_gate_scale", "attn_out_gate_enabled", "attn_out_gate_src",
                 "min_lr", "embed_lr", "tied_embed_lr", "matrix_lr", "scalar_lr", "muon_momentum",
                 "muon_backend_steps", "muon_momentum_warmup_start", "muon_momentum_warmup_steps",
                 "muon_row_normalize", "beta1", "beta2", "adam_eps", "grad_clip_norm", "adam_wd", "muon_wd",
                 "embed_wd", "ema_decay", "iterations", "warmdown_frac", "train_seq_len", "train_batch_tokens",
                 "eval_seq_len", "matrix_bits", "embed_bits", "matrix_clip_sigmas", "embed_clip_sigmas",
                 "mlp_clip_sigmas", "attn_clip_sigmas", "lqer_enabled", "lqer_rank", "lqer_top_k",
                 "lqer_factor_bits", "lqer_asym_group", "max_wallclock_seconds", "val_batch_size")


def record_hparams(rec, cfg):
    h = rec.Hyperparameters()
    for name in RECORD_FIELDS:
        setattr(h, "val_batch_tokens" if name == "val_batch_size" else name, getattr(cfg, name))
    h.smear_gate_enabled = cfg.smear_gate == "additive"
    h.rope_train_seq_len, h.rope_yarn = cfg.train_seq_len, False
    h.fused_ce_enabled = True  # the record's training loss (its stand-in here has the same math)
    h.gated_attn_enabled, h.gated_attn_quant_gate, h.lqer_asym_enabled = False, True, True
    h.world_size, h.rank, h.distributed, h.grad_accum_steps = 1, 0, False, 8
    return h


def weight_map(cfg) -> list[tuple[str, str, int | None]]:
    """(our parameter, the record's parameter, bank index or None) for every parameter."""
    n, out = cfg.num_layers, [("tok_emb", "tok_emb.weight", None)]
    for i in range(n):
        b = f"blocks.{i}."
        out += [(b + "attn.c_q.weight", "qo_bank", i), (b + "attn.proj.weight", "qo_bank", n + i),
                (b + "attn.c_k.weight", "kv_bank", i), (b + "attn.c_v.weight", "kv_bank", n + i),
                (b + "mlp.fc.weight", "mlp_up_bank", i), (b + "mlp.proj.weight", "mlp_down_bank", i)]
        out += [(b + s, b + s, None) for s in ("attn.q_gain", "attn_scale", "mlp_scale", "resid_mix")]
        if cfg.sparse_attn_gate_enabled:
            out.append((b + "attn.attn_gate_w", b + "attn.attn_gate_w", None))
    out += [("skip_weights", "skip_weights", None), ("parallel_post", "parallel_post_lambdas", None),
            ("parallel_resid", "parallel_resid_lambdas", None)]
    if cfg.skip_gates_enabled:
        out.append(("skip_gates", "skip_gates", None))
    if cfg.smear_gate == "additive":
        out += [("smear.gate", "smear_gate.weight", None), ("smear.lam", "smear_lambda", None)]
    return out


@torch.no_grad()
def copy_weights(ours, rec_model, cfg) -> None:
    """Load our weights into the record's model; every record parameter must be covered."""
    mine, theirs, covered = dict(ours.named_parameters()), dict(rec_model.named_parameters()), {}
    for a, b, idx in weight_map(cfg):
        dst = theirs[b] if idx is None else theirs[b][idx]
        dst.copy_(mine[a].detach().view_as(dst))
        covered.setdefault(b, 0)
        covered[b] += mine[a].numel()
    for name, p in theirs.items():
        if covered.get(name) != p.numel():
            raise ValueError(f"the weight map leaves the record's {name} {'partly ' if name in covered else ''}unset")
    if len(set(a for a, _, _ in weight_map(cfg))) != len(mine):
        raise ValueError(f"the weight map misses our {sorted(set(mine) - {a for a, _, _ in weight_map(cfg)})}")


def unbank(rec_model, cfg) -> dict[str, torch.Tensor]:
    """The record's parameters under our names (the inverse of the map)."""
    theirs = dict(rec_model.named_parameters())
    return {a: (theirs[b] if idx is None else theirs[b][idx]).detach().reshape(-1) for a, b, idx in weight_map(cfg)}


# ----- data -----

def token_data(args, vocab: int):
    """(train tokens, val tokens, per-token val bytes, bos id) from the SP8192 proxy if present,
    else a synthetic stream (random documents, BOS=1) with one byte per token."""
    data = Path(args.data)
    if data.is_dir() and vocab == 8192 and not args.synthetic:
        import sentencepiece as spm
        tg = import_ours()
        sp = spm.SentencePieceProcessor(model_file=str(next(data.glob("*.model"))))
        train = tg.load_shard(sorted(data.glob("*train_*.bin"))[0])
        val = tg.load_shard(sorted(data.glob("*val_*.bin"))[0])[:args.val_tokens + 1]
        nbytes = tg.lut_target_bytes(val, tg.build_byte_lut(sp, vocab))
        return train, val, nbytes, sp.bos_id(), f"{data.name} (SentencePiece byte counts)"
    g = torch.Generator().manual_seed(args.seed)
    n = 4 * (args.steps * 8 + 64) * args.micro_tokens + args.val_tokens + 1
    toks = torch.randint(2, vocab, (n,), generator=g)
    toks[torch.rand(n, generator=g) < 1 / 40] = 1  # documents of ~40 tokens
    cut = n - args.val_tokens - 1
    return toks[:cut], toks[cut:], torch.ones(args.val_tokens + 1), 1, "synthetic (1 byte per token)"


def packed_batches(train: torch.Tensor, bos: int, micro_tokens: int, count: int) -> list[tuple]:
    """`count` flat micro-batches [1, micro_tokens] in stream order from the first BOS (both
    codes' document-packing layout)."""
    start = int((train == bos).nonzero()[0])
    out = []
    for i in range(count):
        chunk = train[start + i * (micro_tokens + 1): start + (i + 1) * (micro_tokens + 1)].long()
        if chunk.numel() < micro_tokens + 1:
            raise ValueError(f"the training tokens hold only {i} micro-batches of {micro_tokens}, {count} needed")
        out.append((chunk[:-1][None], chunk[1:][None]))
    return out


def record_cu(rec, x: torch.Tensor, bos: int, seq_len: int):
    bos_pos = (x[0] == bos).nonzero().flatten().tolist()
    return rec._build_cu_seqlens(bos_pos, x.size(1), x.device, seq_len, 64)


# ----- the comparison -----

@dataclass
class Run:
    args: argparse.Namespace
    tg: types.ModuleType
    rec: types.ModuleType
    cfg: object
    h: object
    ctx: object
    bos: int
    data_label: str
    train: torch.Tensor
    val: torch.Tensor
    val_bytes: torch.Tensor
    ours: torch.nn.Module = None
    theirs: torch.nn.Module = None
    rows: list = field(default_factory=list)   # (section, item, ours, record, difference)
    report: dict = field(default_factory=dict)

    def add(self, section, item, a, b, diff):
        self.rows.append((section, item, a, b, diff))


def build_pair(run: Run):
    tg, rec, cfg = run.tg, run.rec, run.cfg
    ours = tg.build_model(cfg, run.ctx, run.bos)
    rec.BOS_ID = run.bos
    torch.manual_seed(cfg.seed)
    theirs = rec.GPT(run.h)  # fp32 (the record trains tok_emb in bf16: see docs/parity.md)
    copy_weights(ours, theirs, cfg)
    return ours, theirs


def trace_slots(ours, theirs):
    """Wrap both models' block calls to record each virtual slot's output(s)."""
    got = {"ours": [], "record": []}

    def wrap(obj, attr, sink):
        fn = getattr(obj, attr)

        def traced(*a, **k):
            out = fn(*a, **k)
            sink.append(tuple(t.detach().clone() for t in (out if isinstance(out, tuple) else (out,))))
            return out
        setattr(obj, attr, traced)
    for blk in ours.blocks:
        wrap(blk, "forward", got["ours"])
        wrap(blk, "forward_lanes", got["ours"])
    for blk in theirs.blocks:
        wrap(blk, "forward", got["record"])
    wrap(theirs, "_parallel_block", got["record"])
    return got


def untrace(ours, theirs):
    for m in list(ours.blocks) + list(theirs.blocks) + [theirs]:
        for attr in ("forward", "forward_lanes", "_parallel_block"):
            m.__dict__.pop(attr, None)


@torch.no_grad()
def compare_forward(run: Run, x: torch.Tensor) -> None:
    tg, rec = run.tg, run.rec
    ours, theirs = build_pair(run)
    # Random weights everywhere (the zero-initialized projections would make every block the
    # identity and the comparison empty), one set for both.
    g = torch.Generator().manual_seed(run.args.seed)
    for p in ours.parameters():
        p.add_(torch.randn(p.shape, generator=g) * (0.5 * p.float().std() if p.numel() > 1 and p.float().std() > 0 else 0.05))
    copy_weights(ours, theirs, run.cfg)
    cu, max_len = record_cu(rec, x, run.bos, run.cfg.train_seq_len)
    for looped in (False, True):
        tg.set_looping(ours, looped)
        theirs.looping_active = looped
        got = trace_slots(ours, theirs)
        a = ours(x, packed=True)
        b = theirs.forward_logits(x, cu_seqlens=cu, max_seqlen=max_len)
        untrace(ours, theirs)
        tag = "looped" if looped else "plain"
        if len(got["ours"]) != len(got["record"]):
            raise AssertionError(f"{tag}: {len(got['ours'])} block calls in ours, {len(got['record'])} in the record")
        worst = 0.0
        for slot, (o, r) in enumerate(zip(got["ours"], got["record"])):
            d = max(float((p - q).abs().max()) for p, q in zip(o, r))
            worst = max(worst, d)
            lanes = "two lanes" if len(o) == 2 else "one lane"
            run.add(f"forward_{tag}", f"slot {slot:2d} block {tg.virtual_layers(run.cfg, looped)[slot]:2d} ({lanes})",
                    float(torch.cat([t.flatten() for t in o]).abs().max()), float(torch.cat([t.flatten() for t in r]).abs().max()), d)
        d = float((a - b).abs().max())
        run.add(f"forward_{tag}", "logits max|.|", float(a.abs().max()), float(b.abs().max()), d)
        run.report[f"forward_{tag}"] = dict(max_block_diff=worst, logits_max_abs=float(a.abs().max()),
                                             logits_max_diff=d)


def ours_step(run: Run, trainer, step: int) -> float:
    tg, cfg = run.tg, run.cfg
    loss = float(trainer.step(step, tg.schedule_scale(cfg, step, 0.0)))
    if not trainer.model.looping and tg.looping_due(cfg, step + 1, 0.0):
        tg.set_looping(trainer.model, True)
    return loss


def record_step(run: Run, model, opts, batches, step: int) -> float:
    """The record's train_model step_fn (and the loop switch before it), with its wallclock
    cap off (MAX_WALLCLOCK_SECONDS=0: progress is step/ITERATIONS) on one process."""
    h = run.h
    frac = step / max(h.iterations, 1)
    scale = 1.0
    if h.warmdown_frac > 0 and frac >= 1.0 - h.warmdown_frac:
        scale = max((1.0 - frac) / h.warmdown_frac, h.min_lr)
    if h.num_loops > 0 and not model.looping_active and frac >= h.enable_looping_at:
        model.looping_active = True
    total = 0.0
    for x, y in batches:
        cu, _ = record_cu(run.rec, x, run.bos, h.train_seq_len)
        loss = model(x, y, cu_seqlens=cu, max_seqlen=h.train_seq_len)
        total += float(loss.detach())
        (loss / h.grad_accum_steps).backward()
    if step <= h.muon_momentum_warmup_steps:
        f = min(step / h.muon_momentum_warmup_steps, 1.0) if h.muon_momentum_warmup_steps > 0 else 1.0
        for group in opts.optimizer_muon.param_groups:
            group["momentum"] = (1 - f) * h.muon_momentum_warmup_start + f * h.muon_momentum
    for opt in opts:
        for group in opt.param_groups:
            group["lr"] = group["base_lr"] * scale
    if h.grad_clip_norm > 0:
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], h.grad_clip_norm)
    with cpu_streams(), (contextlib.nullcontext() if run.args.muon_precision == "bf16" else bf16_as_fp32()):
        opts.step(distributed=False)
    return total / h.grad_accum_steps


@contextlib.contextmanager
def bf16_as_fp32():
    """Tensor.bfloat16() returns fp32 meanwhile: the record's Muon (bf16 momentum and
    Newton-Schulz, hard-coded) runs its own steps in fp32."""
    saved = torch.Tensor.bfloat16
    torch.Tensor.bfloat16 = lambda self, *a, **k: self.float()
    try:
        yield
    finally:
        torch.Tensor.bfloat16 = saved


class ListLoader:
    def __init__(self, batches):
        self.batches, self.i = batches, 0

    def next_batch(self):
        b = self.batches[self.i]
        self.i += 1
        return b

    def reset(self):
        self.i = 0


def compare_training(run: Run) -> None:
    tg, rec, cfg = run.tg, run.rec, run.cfg
    n = run.args.steps
    batches = packed_batches(run.train, run.bos, run.args.micro_tokens, 8 * n)
    ours, theirs = build_pair(run)
    tg.set_looping(ours, cfg.enable_looping_at == 0)
    theirs.looping_active = False
    loader = ListLoader(batches)
    trainer = tg.Trainer(cfg, run.ctx, ours, ours, ours, tg.Optimizers(ours, cfg, run.ctx), loader, lambda *a: None)
    with cpu_streams():
        opts = rec.Optimizers(run.h, theirs)
    la, lb = [], []
    t0 = time.perf_counter()
    # Muon precision, the same for both: fp32 (the record's bf16 casts made fp32, ours as on CPU),
    # or bf16 (the record's own; ours: Newton-Schulz in bf16 as on CUDA, momentum fp32). In bf16
    # one Newton-Schulz call moves an update by ~6% of its largest entry, and the trajectories
    # drift apart by that noise, not by any difference of the algorithms.
    ns_dtype = tg.CPU_NS_DTYPE
    tg.CPU_NS_DTYPE = torch.bfloat16 if run.args.muon_precision == "bf16" else torch.float32
    try:
        for step in range(n):
            la.append(ours_step(run, trainer, step))
            lb.append(record_step(run, theirs, opts, batches[8 * step: 8 * step + 8], step))
            rel = abs(la[-1] - lb[-1]) / abs(lb[-1])
            run.add("train", f"step {step + 1:3d} loss", la[-1], lb[-1], rel)
            if (step + 1) % 10 == 0 or step + 1 == n:
                progress(f"train step {step + 1}/{n}: loss {la[-1]:.6f} vs {lb[-1]:.6f} ({time.perf_counter() - t0:.1f}s)")
    finally:
        tg.CPU_NS_DTYPE = ns_dtype
    mine, rec_w = dict(ours.named_parameters()), unbank(theirs, cfg)
    wdiff, wname = max((float((mine[k].detach().reshape(-1) - v).abs().max() / v.abs().max().clamp_min(1e-12)), k)
                       for k, v in rec_w.items())
    run.add("train", f"weights after training: max |diff| / max |w| ({wname})", float("nan"), float("nan"), wdiff)
    run.report["train"] = dict(steps=n, ours=la, record=lb, max_rel_diff=max(abs(a - b) / abs(b) for a, b in zip(la, lb)),
                               weights_max_rel_diff=wdiff, looping_ours=ours.looping, looping_record=theirs.looping_active)
    run.ours, run.theirs = ours, theirs
    a, b = same_rows_bpb(run)
    run.add("eval", "bpb, each code's trained weights, same rows", a, b, abs(a - b))
    run.report["train"].update(bpb_ours=a, bpb_record=b)


def record_hessians(run: Run, batches) -> dict[str, torch.Tensor]:
    """The record's collect_hessians on the same rows: its own hooks and forward_logits."""
    rows = iter(batches)
    loader = types.SimpleNamespace(next_batch=lambda *_: next(rows))
    return run.rec.collect_hessians(run.theirs, loader, run.h, torch.device("cpu"), n_calibration_batches=len(batches))


def gptq_objective(w: torch.Tensor, deq: torch.Tensor, H: torch.Tensor) -> float:
    e = (w - deq).double()
    return float(torch.einsum("ij,jk,ik->", e, H.double(), e))


def compare_gptq(run: Run) -> None:
    tg, rec, cfg, h = run.tg, run.rec, run.cfg, run.h
    batches = packed_batches(run.train, run.bos, run.args.micro_tokens, 8 * run.args.steps + run.args.calib)[-run.args.calib:]
    ours, theirs = run.ours, run.theirs
    copy_weights(ours, theirs, cfg)  # one set of weights (ours, trained) from here on
    tg.set_looping(ours, True)
    theirs.looping_active = True
    # The record calibrates with forward_logits on the packed rows without cu_seqlens: plain
    # causal attention over the whole row. Ours ("own") calibrates as its config says
    # (GPTQ_CALIBRATION_DOC_MASK; the preset's 0 is the record's way), and once more with
    # document masks off altogether ("same attention").
    hs_rec = record_hessians(run, batches)
    hs_own, _ = tg.collect_hessians(ours, list(batches), run.ctx)
    ours.cfg = dataclasses.replace(cfg, attn_doc_mask=False)
    try:
        hs_ours, _ = tg.collect_hessians(ours, list(batches), run.ctx)
    finally:
        ours.cfg = cfg
    state = {k: v.detach() for k, v in ours.state_dict().items()}
    roles = {k: p.role for k, p in ours.named_parameters()}
    mats = [k for k in state if roles.get(k) in ("attn", "mlp", "embed")]
    eq_all = tot_all = 0
    worst_obj = worst_h = worst_own = 0.0
    ours_q, rec_q, errs = {}, {}, {}
    for name in mats:
        role, w = roles[name], state[name].float()
        key = name if name != "tok_emb" else "tok_emb.weight"
        Hr, Ho = hs_rec[key], hs_ours[name]
        hdiff = float((Ho - Hr).abs().max() / Hr.abs().max())
        hown = float((hs_own[name] - Hr).abs().max() / Hr.abs().max())
        bits = cfg.bits(role)
        s = tg.row_scales(w, bits, cfg.quant_clip, cfg.clip_sigmas(role))
        qa = tg.gptq_quantize(w, Hr, s, bits, cfg.gptq_damp, cfg.gptq_block_size, cfg.gptq_act_order)
        cs = h.embed_clip_sigmas if role == "embed" else h.mlp_clip_sigmas if role == "mlp" else h.attn_clip_sigmas
        qb, sb = rec.gptq_quantize_weight(w, Hr, clip_sigmas=cs, clip_range=2 ** ((h.embed_bits if role == "embed" else h.matrix_bits) - 1) - 1)
        same = int((qa == qb).sum())
        da, db = qa.float() * s.float(), qb.float() * sb.float()[:, None]
        oa, ob = gptq_objective(w, da, Hr), gptq_objective(w, db, Hr)
        rel = abs(oa - ob) / ob
        eq_all, tot_all = eq_all + same, tot_all + qa.numel()
        worst_obj, worst_h = max(worst_obj, rel), max(worst_h, hdiff)
        run.add("gptq", f"{name} codes equal / objective", same / qa.numel(), float("nan"), rel)
        run.add("gptq", f"{name} Hessian (same attention) max rel |diff|", float("nan"), float("nan"), hdiff)
        run.add("gptq", f"{name} Hessian (own calibration) max rel |diff|", float("nan"), float("nan"), hown)
        worst_own = max(worst_own, hown)
        ours_q[name], rec_q[name] = tg.Quantized(role, bits, tuple(w.shape), codes=qa, scales=s.squeeze(1).half()), (qb, sb)
        errs[name] = w - db
    # LQER: each code's selection and factors on the same (record) codes.
    lq_rec = {}
    if cfg.lqer_enabled:
        top = sorted(errs, key=lambda n: -float(errs[n].norm()))[:h.lqer_top_k]
        for n in top:
            U, S, Vh = torch.linalg.svd(errs[n], full_matrices=False)
            r = min(h.lqer_rank, S.numel())
            qA, sA, qB, sB = rec._lqer_pack_asym((U[:, :r] * S[:r]).contiguous(), Vh[:r].contiguous(), h.lqer_asym_group)
            lq_rec[n] = (qA.float() * float(sA)) @ (qB.reshape(-1, h.lqer_asym_group).float() * sB.float()[:, None]).reshape(qB.shape)
        qs = {n: tg.Quantized(roles[n], cfg.bits(roles[n]), tuple(state[n].shape), codes=rec_q[n][0], scales=rec_q[n][1]) for n in mats}
        tg.add_lqer(qs, state, cfg)
        ours_top = sorted(n for n in qs if qs[n].lqer is not None)
        run.add("lqer", f"tensors corrected: {','.join(sorted(top))}", len(ours_top), len(top), float(ours_top != sorted(top)))
        worst_lq = 0.0
        for n in top:
            mine = tg.dequantize(qs[n]) - rec_q[n][0].float() * rec_q[n][1].float()[:, None]
            d = float((mine - lq_rec[n]).abs().max() / lq_rec[n].abs().max())
            worst_lq = max(worst_lq, d)
            run.add("lqer", f"{n} correction A@B max rel |diff|", float(mine.abs().max()), float(lq_rec[n].abs().max()), d)
        run.report["lqer"] = dict(same_tensors=ours_top == sorted(top), max_rel_diff=worst_lq)
    run.report["gptq"] = dict(matrices=len(mats), codes_equal_frac=eq_all / tot_all, objective_max_rel_diff=worst_obj,
                              hessian_max_rel_diff=worst_h, own_calibration_hessian_max_rel_diff=worst_own)
    run.add("gptq", "all matrices: codes equal (fraction)", eq_all / tot_all, float("nan"), worst_obj)


@torch.no_grad()
def same_rows_bpb(run: Run) -> tuple[float, float]:
    """bpb of both models (looped, eval mode) on the validation slice cut into packed rows of one
    micro-batch's length, document-masked (the record's varlen layout, cut every TRAIN_SEQ_LEN)."""
    tg, rec, cfg, ours, theirs = run.tg, run.rec, run.cfg, run.ours, run.theirs
    tg.set_looping(ours, True)
    theirs.looping_active = True
    ours.eval(), theirs.eval()
    row = run.args.micro_tokens  # our model's RoPE tables cover one micro-batch
    n = (len(run.val) - 1) // row * row
    nll_a, nll_b = [], []
    for s in range(0, n, row):
        x, y = run.val[s:s + row].long()[None], run.val[s + 1:s + row + 1].long()[None]
        cu, mx = record_cu(rec, x, run.bos, cfg.train_seq_len)
        nll_a.append(F.cross_entropy(ours(x, packed=True)[0].float(), y[0], reduction="none").double())
        nll_b.append(F.cross_entropy(theirs.forward_logits(x, cu_seqlens=cu, max_seqlen=mx)[0].float(), y[0], reduction="none").double())
    ours.train(), theirs.train()
    nb = run.val_bytes[1:n + 1].double().sum()
    return float(torch.cat(nll_a).sum() / math.log(2) / nb), float(torch.cat(nll_b).sum() / math.log(2) / nb)


@torch.no_grad()
def compare_eval(run: Run) -> None:
    """With one set of weights (ours, trained, loaded into both): the same rows, then each
    code's own non-overlapping eval function (their window protocols differ: docs/parity.md)."""
    tg, rec, cfg, h = run.tg, run.rec, run.cfg, run.h
    copy_weights(run.ours, run.theirs, cfg)
    a, b = same_rows_bpb(run)
    run.add("eval", "bpb, same weights, same rows", a, b, abs(a - b))
    tg.set_looping(run.ours, True)
    run.theirs.looping_active = True
    own_a = tg.evaluate(run.ours, run.val, run.val_bytes, cfg, run.ctx).bpb
    vd = types.SimpleNamespace(val_tokens=run.val, val_bytes=run.val_bytes)
    with warnings_off():
        own_b = rec.eval_val(h, torch.device("cpu"), vd, run.theirs)[1]
    run.add("eval", "bpb, same weights, each code's own eval function", own_a, own_b, abs(own_a - own_b))
    run.report["eval"] = dict(tokens=(len(run.val) - 1) // run.args.micro_tokens * run.args.micro_tokens,
                              bpb_ours=a, bpb_record=b, own_eval_ours=own_a, own_eval_record=own_b)


@contextlib.contextmanager
def warnings_off():
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the record's eval autocasts device_type="cuda": a no-op on CPU
        yield


# Further comparisons, each a function (run: Run) -> None that adds rows (run.add) and a
# run.report entry, run after the eval comparison with both trained models in run.ours/run.theirs.
import ttt_parity  # noqa: E402  (bench/ttt_parity.py: each code's phased TTT from the same weights)

EXTRA_COMPARISONS: list = [ttt_parity.compare_ttt]


def run_parity(args: argparse.Namespace) -> Run:
    tg, rec = import_ours(), import_record(args.record)
    torch.manual_seed(args.seed)
    overrides = {"SEED": str(args.seed), "ITERATIONS": str(args.iterations or args.steps),
                 "TRAIN_BATCH_TOKENS": str(8 * args.micro_tokens), "VOCAB_SIZE": str(args.vocab)}
    overrides.update(dict(kv.split("=", 1) for kv in args.set))
    cfg = our_config(tg, overrides)
    h = record_hparams(rec, cfg)
    ctx = tg.Dist(0, 1, 0, torch.device("cpu"))
    train, val, val_bytes, bos, label = token_data(args, cfg.vocab_size)
    run = Run(args, tg, rec, cfg, h, ctx, bos, label, train, val, val_bytes)
    torch.set_num_threads(args.threads)
    progress(f"record {args.record}; data {label}; d={cfg.model_dim} layers={cfg.num_layers} vocab={cfg.vocab_size} "
             f"micro-batch {args.micro_tokens} tokens x 8 per step")
    t0 = time.perf_counter()
    x, _ = packed_batches(train, bos, args.micro_tokens, 1)[0]
    compare_forward(run, x)
    progress(f"forward done ({time.perf_counter() - t0:.1f}s)")
    compare_training(run)
    progress(f"training done ({time.perf_counter() - t0:.1f}s)")
    compare_gptq(run)
    progress(f"gptq done ({time.perf_counter() - t0:.1f}s)")
    compare_eval(run)
    for fn in EXTRA_COMPARISONS:
        fn(run)
    progress(f"all done ({time.perf_counter() - t0:.1f}s)")
    run.report["setup"] = dict(record=Path(args.record).parent.name,
                               data=label, model_dim=cfg.model_dim, num_layers=cfg.num_layers, vocab=cfg.vocab_size,
                               params=tg.count_params(run.ours), micro_tokens=args.micro_tokens, steps=args.steps,
                               seed=args.seed, threads=args.threads, overrides=dict(kv.split("=", 1) for kv in args.set))
    return run


def format_table(run: Run) -> str:
    fmt = lambda v: "" if isinstance(v, float) and math.isnan(v) else f"{v:.9g}" if isinstance(v, float) else str(v)
    lines = [f"{'section':<16} {'item':<58} {'ours':>16} {'record':>16} {'difference':>12}"]
    for sec, item, a, b, d in run.rows:
        lines.append(f"{sec:<16} {item:<58} {fmt(a):>16} {fmt(b):>16} {fmt(d):>12}")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Writes the table to stdout, progress to stderr.")
    p.add_argument("--record", default=str(DEFAULT_RECORD), help="the record's train_gpt.py (default: the 1.0611 record)")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="SP8192 token shards + tokenizer (else synthetic tokens)")
    p.add_argument("--synthetic", action="store_true", help="use synthetic tokens even if --data exists")
    p.add_argument("--vocab", type=int, default=8192, help="vocabulary (8192 reads --data; other sizes are synthetic)")
    p.add_argument("--steps", type=int, default=50, help="training steps compared (each 8 micro-batches)")
    p.add_argument("--iterations", type=int, default=0, help="ITERATIONS of the schedule (default: --steps)")
    p.add_argument("--micro-tokens", type=int, default=128, help="tokens per packed micro-batch (a multiple of TRAIN_SEQ_LEN)")
    p.add_argument("--muon-precision", choices=("fp32", "bf16"), default="fp32",
                   help="Muon's arithmetic in both codes: fp32 (compares the algorithms) or bf16 (as on CUDA: rounding noise)")
    p.add_argument("--calib", type=int, default=4, help="calibration micro-batches for the Hessians")
    p.add_argument("--val-tokens", type=int, default=4096, help="validation tokens scored")
    p.add_argument("--ttt-tokens", type=int, default=4096, help="of those, the tokens the TTT comparison scores (whole documents)")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: a loaded machine stalls multi-threaded small ops)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one of our knobs (repeatable)")
    p.add_argument("--json", default="", help="also write the report as JSON here")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    run = run_parity(args)
    print(format_table(run))
    if args.json:
        Path(args.json).write_text(json.dumps(dict(report=run.report, rows=run.rows), indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
