"""TTT parity: this script's phased TTT eval (evaluate_ttt) against a record's own
(eval_val_ttt_phased), on CPU, both models from one set of weights: bench/parity.py's model
pair and stand-ins, plus what TTT needs on top:

  - the record's TTT hyperparameters set from our Config (the same values on both sides);
  - the same adapter initialization: the record draws each adapter's A at random, ours come
    from a fixed seed, so the record's adapters are given our A when they are built;
  - a validation slice of whole documents (the record asserts every document has a target);
  - each code's own TTT protocol: document order, batches, exact contexts, phases and global
    SGD; the record's counters and pause flag live in files under /tmp, as it writes them.

compare_ttt(run) registers in bench/parity.py's EXTRA_COMPARISONS (after its training, on the
trained weights). Alone, on parity.py's tiny pair with random weights:

    python bench/ttt_parity.py [parity.py's options, e.g. --val-tokens 4096 --json OUT]

The TTT settings (TTT) are small so that the slice holds several batches and two global
phases; the learning rates are the configuration's (the record's): at a much higher adapter LR
a tiny random model turns float rounding into diverging trajectories (Adam normalizes tiny
gradients to full steps).
"""
from __future__ import annotations

import contextlib
import json
import math
import sys
import types
import uuid
from pathlib import Path

import torch

# Several batches and two phases on a few thousand tokens of whole documents.
TTT = {"ttt_batch_size": 2, "ttt_chunk_size": 16, "ttt_lora_rank": 4, "phased_ttt_num_phases": 2,
       "phased_ttt_prefix_docs": 4, "global_ttt_chunk_tokens": 128, "ttt_phase_extra_batches": -1}


def ttt_config(tg, cfg, **kw):
    return tg.Config(**{**cfg.__dict__, **TTT, **kw})


def record_ttt_hparams(h, cfg):
    """The record's TTT, phase and global-SGD hyperparameters from our Config."""
    for name in ("ttt_lora_rank", "ttt_lora_lr", "ttt_chunk_size", "ttt_eval_seq_len", "ttt_batch_size", "ttt_grad_steps",
                 "ttt_weight_decay", "ttt_beta1", "ttt_beta2", "phased_ttt_prefix_docs", "phased_ttt_num_phases",
                 "global_ttt_lr", "global_ttt_momentum", "global_ttt_epochs", "global_ttt_chunk_tokens",
                 "global_ttt_batch_seqs", "global_ttt_warmup_start_lr", "global_ttt_warmup_chunks", "global_ttt_grad_clip"):
        setattr(h, name, getattr(cfg, name))
    targets = set(cfg.ttt_target_list)
    if not {"q", "v", "head"} <= targets or targets - {"q", "k", "v", "o", "mlp", "head"}:
        raise ValueError(f"TTT_TARGETS={cfg.ttt_targets}: the record always adapts q, v and the head, optionally k, o, mlp")
    h.ttt_k_lora, h.ttt_o_lora, h.ttt_mlp_lora = "k" in targets, "o" in targets, "mlp" in targets
    h.ttt_optimizer, h.ttt_eval_batches, h.val_doc_fraction = "adam", "", 1.0
    h.global_ttt_respect_doc_boundaries = cfg.attn_doc_mask
    h.eval_seq_len = cfg.train_seq_len  # the record cuts global-SGD rows (and long documents) at EVAL_SEQ_LEN
    h.run_id = f"ttt_parity_{uuid.uuid4().hex[:8]}"
    return h


@contextlib.contextmanager
def our_adapters(rec, tg, ours, cfg):
    """While active, every BatchedTTTLoRA the record builds takes our adapters' A (make_lora:
    per virtual slot, the head), and the record's alpha and warm-start switches are ours."""
    init, reset = rec.BatchedTTTLoRA.__init__, rec.BatchedTTTLoRA.reset
    saved = rec.BatchedLinearLoRA._ALPHA, rec.BatchedLinearLoRA._WARM_START_A

    def init_with_our_a(self, bsz, model, rank, k_lora=True, mlp_lora=True, o_lora=True):
        init(self, bsz, model, rank, k_lora=k_lora, mlp_lora=mlp_lora, o_lora=o_lora)
        set_our_a(self)

    def reset_to_our_a(self):
        reset(self)
        if not cfg.ttt_warm_start_a:  # the record redraws A: ours starts from the same A every batch
            set_our_a(self)

    def set_our_a(self):
        mine = tg.make_lora(ours, cfg, self.bsz, torch.device("cpu"))
        prefix = "slots" if cfg.ttt_lora_per_slot and ours.looping else "blocks"
        with torch.no_grad():
            self.lm_head_lora.A.copy_(mine["head"][0])
            for kind, loras in (("q", self.q_loras), ("k", self.k_loras), ("v", self.v_loras), ("o", self.o_loras),
                                ("mlp", self.mlp_loras)):
                for slot, lora in enumerate(loras or []):
                    lora.A.copy_(mine[f"{prefix}.{slot}.{kind}"][0])

    rec.BatchedTTTLoRA.__init__, rec.BatchedTTTLoRA.reset = init_with_our_a, reset_to_our_a
    rec.BatchedLinearLoRA._ALPHA, rec.BatchedLinearLoRA._WARM_START_A = cfg.ttt_lora_alpha, cfg.ttt_warm_start_a
    try:
        yield
    finally:
        rec.BatchedTTTLoRA.__init__, rec.BatchedTTTLoRA.reset = init, reset
        rec.BatchedLinearLoRA._ALPHA, rec.BatchedLinearLoRA._WARM_START_A = saved


def whole_documents(val: torch.Tensor, val_bytes: torch.Tensor, bos: int):
    """The slice from its first BOS up to (not including) its last one: whole documents, the
    last one ending where the slice does (the record's document finder needs every document,
    the last one too, to hold a target)."""
    at = (val == bos).nonzero().flatten().tolist()
    while len(at) >= 3 and at[-1] - at[-2] < 2:
        at.pop()
    if len(at) < 3:
        raise ValueError("the validation slice holds fewer than two whole documents")
    return val[at[0]:at[-1]], val_bytes[at[0]:at[-1]]


def ttt_bpb_pair(tg, rec, cfg, h, ours, theirs, val, val_bytes, bos) -> tuple[float, float]:
    """bpb of each code's phased TTT on the same tokens, both models starting from the same
    weights (restored afterwards: the phases train them)."""
    ctx = tg.Dist(0, 1, 0, torch.device("cpu"))
    saved = ({k: v.clone() for k, v in ours.state_dict().items()}, {k: v.clone() for k, v in theirs.state_dict().items()})
    tg.set_looping(ours, cfg.num_loops > 0)
    theirs.looping_active = cfg.num_loops > 0
    rec.BOS_ID = bos
    try:
        a = tg.evaluate_ttt(ours, val, val_bytes, cfg, ctx, lambda msg: None).bpb
        vd = types.SimpleNamespace(val_tokens=val, val_bytes=val_bytes, caseops_enabled=True,  # per-token bytes
                                   base_bytes_lut=None, has_leading_space_lut=None, is_boundary_token_lut=None)
        with our_adapters(rec, tg, ours, cfg), contextlib.redirect_stdout(None):
            b = rec.eval_val_ttt_phased(record_ttt_hparams(h, cfg), theirs, torch.device("cpu"), vd, theirs.forward_ttt)[1]
    finally:
        ours.load_state_dict(saved[0])
        theirs.load_state_dict(saved[1])
    return a, b


def compare_ttt(run) -> None:
    """parity.py's extra comparison: TTT bpb of both codes from one set of weights (ours,
    trained, loaded into both) on the validation slice's whole documents."""
    import parity
    cfg = ttt_config(run.tg, run.cfg)
    parity.copy_weights(run.ours, run.theirs, run.cfg)
    val, vb = whole_documents(run.val[:run.args.ttt_tokens + 1], run.val_bytes[:run.args.ttt_tokens + 1], run.bos)
    with parity.warnings_off():
        a, b = ttt_bpb_pair(run.tg, run.rec, cfg, run.h, run.ours, run.theirs, val, vb, run.bos)
    run.add("ttt", f"phased TTT bpb, same weights, {len(val) - 1} predictions", a, b, abs(a - b))
    run.report["ttt"] = dict(predictions=len(val) - 1, bpb_ours=a, bpb_record=b, difference=abs(a - b),
                             settings={k.upper(): v for k, v in TTT.items()}, within_1e4=abs(a - b) <= 1e-4)
    if not math.isfinite(a - b):
        raise AssertionError(f"TTT bpb not finite: ours {a}, record {b}")


def standalone(argv=None):
    """parity.py's model pair with one set of random weights (no training), then compare_ttt."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import parity
    args = parity.parse_args(argv)
    tg, rec = parity.import_ours(), parity.import_record(args.record)
    overrides = {"SEED": str(args.seed), "VOCAB_SIZE": str(args.vocab), "TRAIN_BATCH_TOKENS": str(8 * args.micro_tokens)}
    cfg = parity.our_config(tg, overrides | dict(kv.split("=", 1) for kv in args.set))
    train, val, vb, bos, label = parity.token_data(args, cfg.vocab_size)
    run = parity.Run(args, tg, rec, cfg, parity.record_hparams(rec, cfg), tg.Dist(0, 1, 0, torch.device("cpu")), bos,
                     label, train, val, vb)
    torch.set_num_threads(args.threads)
    run.ours, run.theirs = parity.build_pair(run)
    g = torch.Generator().manual_seed(args.seed)
    with torch.no_grad():  # random weights everywhere: the zero-initialized projections would hide the blocks
        for p in run.ours.parameters():
            p.add_(torch.randn(p.shape, generator=g) * (0.5 * p.float().std() if p.numel() > 1 and p.float().std() > 0 else 0.05))
    parity.progress(f"TTT parity: record {args.record}; data {label}; d={cfg.model_dim} layers={cfg.num_layers}")
    compare_ttt(run)
    return run


def main(argv=None) -> int:
    import parity
    run = standalone(argv)
    print(parity.format_table(run))
    if run.args.json:
        Path(run.args.json).write_text(json.dumps(dict(report=run.report, rows=run.rows), indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
