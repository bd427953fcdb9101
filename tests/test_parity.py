"""bench/parity.py against the 1.0611 record's own script (whenever the reference records are
next to the repo), at a tiny size, and the two training knobs the record's behaviour needs:
GRAD_CLIP_SCOPE=rank and EMBED_DTYPE=bf16."""
import os
import socket
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
import parity  # noqa: E402

RECORD = parity.DEFAULT_RECORD
needs_record = pytest.mark.skipif(not RECORD.is_file(), reason="the reference records are not next to the repo")

# The record's block layout shrunk to 5 blocks (loop 1-2 x2, two lanes from block 3, XSA on all),
# d=64, synthetic 512-token vocabulary: 50 steps of both codes in about 20 s of CPU.
SMALL = ["--synthetic", "--vocab", "512", "--micro-tokens", "64", "--val-tokens", "1024", "--calib", "2",
         "--set", "NUM_LAYERS=5", "--set", "LOOP_START=1", "--set", "LOOP_END=2", "--set", "PARALLEL_START_LAYER=3",
         "--set", "XSA_LAST_N=5"]


@pytest.fixture(scope="module")
def report():
    torch.set_num_threads(1)
    try:
        return parity.run_parity(parity.parse_args(["--steps", "50"] + SMALL)).report
    finally:
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))


@needs_record
def test_forward_equals_the_record(report):
    """One set of random weights: every block output and the logits, plain and looped (two-lane
    blocks included), equal the record's to float rounding."""
    for tag in ("forward_plain", "forward_looped"):
        r = report[tag]
        assert r["logits_max_diff"] <= 1e-5 * max(1.0, r["logits_max_abs"]), (tag, r)
        assert r["max_block_diff"] <= 1e-5 * 10, (tag, r)


@needs_record
def test_training_follows_the_record(report):
    """50 steps under each code's own optimizer, schedule (warmdown, MIN_LR, momentum warmup),
    clipping and loop switch, on the same batches: losses within 1e-3 relative."""
    r = report["train"]
    assert r["steps"] == 50 and r["looping_ours"] and r["looping_record"]
    assert r["max_rel_diff"] <= 1e-3, r


@needs_record
def test_gptq_and_lqer_match_the_record(report):
    g = report["gptq"]
    assert g["codes_equal_frac"] >= 0.995 and g["objective_max_rel_diff"] <= 1e-5, g
    assert g["hessian_max_rel_diff"] <= 1e-4, g  # the same attention: the same X^T X
    assert g["own_calibration_hessian_max_rel_diff"] <= 1e-4, g  # GPTQ_CALIBRATION_DOC_MASK=0, as the preset sets
    lq = report["lqer"]
    assert lq["same_tensors"] and lq["max_rel_diff"] <= 1e-5, lq


@needs_record
def test_eval_bpb_matches_the_record(report):
    e = report["eval"]
    assert abs(e["bpb_ours"] - e["bpb_record"]) <= 1e-5, e
    t = report["train"]
    assert abs(t["bpb_ours"] - t["bpb_record"]) <= 1e-4, t  # each trained by its own code


def test_stand_ins_have_the_kernels_math():
    """The FA3 varlen stand-in is causal attention inside each segment (trailing repeats of the
    total length, the records' bucket padding, are empty segments)."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(10, 4, 8, generator=g) for _ in range(3))
    cu = torch.tensor([0, 3, 10, 10, 10], dtype=torch.int32)
    y = parity.fa3_varlen_func(q, k, v, cu, cu, 7, 7, causal=True)
    for a, b in ((0, 3), (3, 10)):
        ref = parity.fa3_func(q[None, a:b], k[None, a:b], v[None, a:b], causal=True)[0]
        assert torch.allclose(y[a:b], ref, atol=1e-6)
    logits, t = torch.randn(6, 11, generator=g), torch.randint(0, 11, (6,), generator=g)
    ref = torch.nn.functional.cross_entropy(30 * torch.tanh(logits / 30), t)
    assert torch.allclose(parity.softcapped_ce(logits, t, 30.0), ref)


def test_embed_dtype_bf16_trains_the_table_in_bf16(tg):
    from conftest import TINY_ENV
    cfg = tg.Config.from_env({**TINY_ENV, "EMBED_DTYPE": "bf16"})
    ctx = tg.Dist(0, 1, 0, torch.device("cpu"))
    model = tg.build_model(cfg, ctx)
    assert model.tok_emb.dtype == torch.bfloat16 and model.blocks[0].attn.c_q.weight.dtype == torch.float32
    opt = tg.Optimizers(model, cfg, ctx)
    ids = torch.randint(0, cfg.vocab_size, (2, 32))
    before = model.tok_emb.detach().clone()
    model(ids, ids).backward()
    opt.step()
    assert model.tok_emb.dtype == torch.bfloat16 and not torch.equal(model.tok_emb, before)
    assert opt.adam.state[model.tok_emb]["exp_avg"].dtype == torch.bfloat16


class SquareLoss(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 4, bias=False)

    def forward(self, x, y, packed=False):
        return (self.lin(x) ** 2).sum()


def _clip_worker(rank: int, port: int, scope: str, out: dict):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    sys.path.insert(0, str(REPO))
    import train_gpt as tg
    torch.manual_seed(0)
    model = SquareLoss()
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    x = torch.zeros(1, 4)
    x[0, rank] = 1.0 + 9.0 * rank  # orthogonal gradients, rank 1's 10x larger: both above the clip
    cfg = tg.Config.from_env({"GRAD_CLIP_NORM": "0.3", "GRAD_CLIP_SCOPE": scope, "AUTOCAST": "off"})
    ctx = tg.Dist(rank, 2, rank, torch.device("cpu"))
    loader = type("Loader", (), {"next_batch": lambda self: (x, None)})()
    opt = type("NoStep", (), {"set_schedule": lambda *a: None, "step": lambda self: None, "zero_grad": lambda self: None})()
    trainer = tg.Trainer(cfg, ctx, model, ddp, model, opt, loader, print)
    type(trainer).grad_accum = property(lambda self: 2)  # two micro-batches: the sync on the last one only
    trainer.step(0, 1.0)
    out[(scope, rank)] = model.lin.weight.grad.clone()
    dist.destroy_process_group()


def test_grad_clip_scope_rank_clips_before_the_average():
    """GRAD_CLIP_SCOPE=rank: each rank's gradient is clipped to GRAD_CLIP_NORM, then averaged
    (two orthogonal gradients of norm 0.3: the mean has norm 0.3/sqrt(2)); global: the mean is
    clipped (norm 0.3). Both leave every rank with the same gradient."""
    manager = mp.Manager()
    out = manager.dict()
    for scope in ("global", "rank"):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        mp.spawn(_clip_worker, args=(port, scope, out), nprocs=2, join=True)
    for scope in ("global", "rank"):
        assert torch.equal(out[(scope, 0)], out[(scope, 1)])
    g, r = out[("global", 0)], out[("rank", 0)]
    assert abs(float(g.norm()) - 0.3) < 1e-5
    assert abs(float(r.norm()) - 0.3 / 2 ** 0.5) < 1e-5


def test_help_runs_without_the_record(capsys):
    with pytest.raises(SystemExit) as e:
        parity.parse_args(["--help"])
    assert e.value.code == 0 and "--muon-precision" in capsys.readouterr().out


def test_weight_map_covers_both_models(tg):
    """Every parameter of our model is mapped exactly once (the record's side is checked when
    the weights are copied)."""
    cfg = parity.our_config(tg, {"NUM_LAYERS": "5", "LOOP_START": "1", "LOOP_END": "2", "PARALLEL_START_LAYER": "3",
                                 "XSA_LAST_N": "5", "VOCAB_SIZE": "512"})
    with torch.device("meta"):
        model = tg.GPT(cfg, max_len=64)
    ours = [a for a, _, _ in parity.weight_map(cfg)]
    assert sorted(ours) == sorted(n for n, _ in model.named_parameters())


def test_ttt_bpb_matches_the_record(report):
    """bench/ttt_parity.py through the EXTRA_COMPARISONS hook: each code's phased TTT on the
    trained weights (loaded into both), same whole documents: bpb equal to 1e-4."""
    r = report["ttt"]
    assert r["predictions"] > 500 and r["difference"] <= 1e-4, r


def test_calibration_without_document_masks(tg):
    """GPTQ_CALIBRATION_DOC_MASK=0: the Hessians of a document-masked model are those of the
    same weights with ATTN_DOC_MASK=0 (plain causal attention over each calibration row); with
    the default 1 they differ (the rows hold several documents)."""
    from conftest import TINY_ENV
    ctx = tg.Dist(0, 1, 0, torch.device("cpu"))
    ids = torch.randint(2, 1024, (2, 64), generator=torch.Generator().manual_seed(0))
    ids[:, [0, 20, 41]] = 1
    hs = {}
    for name, env in {"plain": {"ATTN_DOC_MASK": "0"}, "knob": {"GPTQ_CALIBRATION_DOC_MASK": "0"}, "masked": {}}.items():
        torch.manual_seed(0)
        model = tg.build_model(tg.Config.from_env({**TINY_ENV, **env}), ctx, bos_id=1)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.05)
        hs[name] = tg.collect_hessians(model, [(ids, ids)], ctx)[0]
    key = "blocks.1.attn.c_q.weight"
    assert torch.equal(hs["knob"][key], hs["plain"][key])
    assert not torch.allclose(hs["masked"][key], hs["plain"][key])
