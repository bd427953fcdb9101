"""The 1.08-class optimizer pieces: MuonEq-R, Polar-Express coefficients, the WARMDOWN_FRAC
schedule with its MIN_LR floor, and a separate embedding weight decay, each against a plain
re-implementation."""
import numpy as np
import pytest
import torch

from test_model_and_muon import cpu, tiny_cfg

PE_TABLE = [  # Polar Express (a, b, c) per step, as published with the 2026-04-23 record
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
]


def reference_polar(G: np.ndarray, steps: int) -> np.ndarray:
    """Plain float64 loop: normalize, iterate on the wide orientation, one tuple per step."""
    X = G / (np.linalg.norm(G) + 1e-7)
    tall = X.shape[0] > X.shape[1]
    if tall:
        X = X.T
    for a, b, c in PE_TABLE[:steps]:
        A = X @ X.T
        X = a * X + (b * A + c * A @ A) @ X
    return X.T if tall else X


@pytest.mark.parametrize("shape, steps", [((64, 32), 5), ((32, 96), 5), ((48, 48), 3)])
def test_polar_express_matches_reference(tg, shape, steps):
    torch.manual_seed(0)
    G = torch.randn(*shape)
    out = tg.polar_express(G, steps)
    ref = reference_polar(G.double().numpy(), steps)
    np.testing.assert_allclose(out.double().numpy(), ref, atol=2e-5, rtol=0)


def test_polar_express_orthogonalizes_better_than_quintic(tg):
    """Five Polar Express steps put the singular values nearer 1 than five quintic steps."""
    torch.manual_seed(0)
    G = torch.randn(128, 64)
    s_pe = torch.linalg.svdvals(tg.polar_express(G, 5))
    s_q = torch.linalg.svdvals(tg.newton_schulz5(G, 5))
    assert (s_pe - 1).abs().max() < (s_q - 1).abs().max()


def test_polar_express_refuses_more_steps_than_tuples(tg):
    with pytest.raises(ValueError, match="5 coefficient tuples"):
        tg.polar_express(torch.randn(8, 8), 6)
    with pytest.raises(ValueError, match="MUON_BACKEND_STEPS=6"):
        tg.Config.from_env({"MUON_NS_COEFFS": "polar_express", "MUON_BACKEND_STEPS": "6"})


@pytest.mark.parametrize("ns", ["quintic", "polar_express"])
def test_muoneq_r_step_matches_reference(tg, ns):
    """W <- W(1 - lr wd) - lr sqrt(max(1, r/c)) NS(rownorm(g + mu (mu buf + g))), with every row of
    the Nesterov update scaled to unit L2 norm before the orthogonalization."""
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(32, 16)), torch.nn.Parameter(torch.randn(16, 48))]
    p0 = [p.detach().clone() for p in params]
    grads = [torch.randn_like(p) for p in params]
    for p, g in zip(params, grads):
        p.grad = g.clone()
    ns_fn = tg.polar_express if ns == "polar_express" else tg.newton_schulz5
    opt = tg.Muon(params, lr=0.1, momentum=0.9, backend_steps=5, weight_decay=0.5, ctx=cpu(tg), ns_fn=ns_fn,
                  row_normalize=True)
    opt.step()
    for p, w0, g in zip(params, p0, grads):
        u = g + 0.9 * g  # momentum buffer = g after one step; Nesterov adds mu * buffer
        u = u / u.norm(dim=1, keepdim=True)
        upd = reference_polar(u.double().numpy(), 5) if ns == "polar_express" else tg.newton_schulz5(u, 5).double().numpy()
        scale = max(1.0, w0.size(0) / w0.size(1)) ** 0.5
        expected = w0.double().numpy() * (1 - 0.1 * 0.5) - 0.1 * scale * upd
        np.testing.assert_allclose(p.detach().double().numpy(), expected, atol=2e-6, rtol=0)


def test_row_normalize_changes_the_update(tg):
    """A gradient with very unequal row norms: MuonEq-R gives a different step (the knob acts)."""
    torch.manual_seed(0)
    g = torch.randn(32, 16) * torch.logspace(-2, 1, 32)[:, None]
    outs = []
    for rn in (False, True):
        p = torch.nn.Parameter(torch.zeros(32, 16))
        p.grad = g.clone()
        tg.Muon([p], lr=0.1, momentum=0.0, backend_steps=5, weight_decay=0.0, ctx=cpu(tg), row_normalize=rn).step()
        outs.append(p.detach().clone())
    assert not torch.allclose(outs[0], outs[1], atol=1e-3)
    assert tg.row_normalize(g).norm(dim=1).sub(1).abs().max() < 1e-5


def test_optimizers_route_the_muon_knobs(tg):
    model = tg.build_model(tiny_cfg(tg), cpu(tg))
    opt = tg.Optimizers(model, tiny_cfg(tg, MUON_NS_COEFFS="polar_express", MUON_ROW_NORMALIZE=1), cpu(tg))
    assert opt.muon.ns_fn is tg.polar_express and all(g["row_normalize"] for g in opt.muon.param_groups)
    opt = tg.Optimizers(model, tiny_cfg(tg, MUON_ROW_NORMALIZE=0), cpu(tg))
    assert opt.muon.ns_fn is tg.newton_schulz5 and not any(g["row_normalize"] for g in opt.muon.param_groups)
    assert all(g["row_normalize"] for g in tg.Optimizers(model, tiny_cfg(tg), cpu(tg)).muon.param_groups)  # the default: MuonEq-R


def test_warmdown_frac_schedule_and_min_lr(tg):
    cfg = tg.Config.from_env({"ITERATIONS": "100", "WARMDOWN_FRAC": "0.4", "MAX_WALLCLOCK_SECONDS": "0"})
    assert cfg.warmdown_iters == 0  # the fraction replaces the step count
    s = lambda c, step, ms=0.0: tg.schedule_scale(c, step, ms)
    assert s(cfg, 0) == 1.0 and s(cfg, 60) == 1.0
    assert s(cfg, 80) == pytest.approx(0.5) and s(cfg, 100) == 0.0
    floored = tg.Config.from_env({"ITERATIONS": "100", "WARMDOWN_FRAC": "0.4", "MIN_LR": "0.1", "MAX_WALLCLOCK_SECONDS": "0"})
    assert s(floored, 80) == pytest.approx(0.5) and s(floored, 97) == pytest.approx(0.1) and s(floored, 100) == pytest.approx(0.1)
    timed = tg.Config.from_env({"WARMDOWN_FRAC": "0.5", "MAX_WALLCLOCK_SECONDS": "10", "QUANT_METHOD": "rtn"})  # by time under a cap (no GPTQ reserve)
    assert s(timed, 1, 4000) == 1.0 and s(timed, 1, 7500) == pytest.approx(0.5)
    iters = tg.Config.from_env({"ITERATIONS": "100", "WARMDOWN_ITERS": "20", "MIN_LR": "0.25", "MAX_WALLCLOCK_SECONDS": "0"})
    assert s(iters, 90) == pytest.approx(0.5) and s(iters, 99) == pytest.approx(0.25)  # the floor holds for both rules


def test_warmdown_frac_and_iters_are_exclusive(tg):
    """The default warmdown is a fraction; WARMDOWN_ITERS alone (the March command lines) turns
    the fraction off, an explicit 0 for the other is fine, and both non-zero is an error."""
    with pytest.raises(ValueError, match="WARMDOWN_FRAC and WARMDOWN_ITERS"):
        tg.Config.from_env({"WARMDOWN_FRAC": "0.7", "WARMDOWN_ITERS": "3000"})
    with pytest.raises(ValueError, match="exclusive"):
        tg.Config(**{**tg.Config.from_env({}).__dict__, "warmdown_iters": 3000}).validate()
    assert tg.Config.from_env({}).warmdown_frac == 0.72
    for env in ({"WARMDOWN_ITERS": "3000"}, {"WARMDOWN_ITERS": "3000", "WARMDOWN_FRAC": "0"}):
        cfg = tg.Config.from_env(env)
        assert (cfg.warmdown_iters, cfg.warmdown_frac) == (3000, 0.0)
    assert tg.Config.from_env({"WARMDOWN_ITERS": "0", "WARMDOWN_FRAC": "0.5"}).warmdown_frac == 0.5


def test_embed_wd_applies_to_the_embedding_only(tg):
    """With zero gradients AdamW only decays: W <- W (1 - lr wd), the embedding by EMBED_WD and
    every other AdamW tensor by ADAM_WD."""
    cfg = tiny_cfg(tg, EMBED_WD=0.5, ADAM_WD=0.1, TIED_EMBED_LR=0.2, SCALAR_LR=0.2)
    model = tg.build_model(cfg, cpu(tg))
    opt = tg.Optimizers(model, cfg, cpu(tg))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.adam.step()
    emb = dict(model.named_parameters())["tok_emb"]
    assert torch.allclose(emb, before["tok_emb"] * (1 - 0.2 * 0.5))
    gain = dict(model.named_parameters())["blocks.0.attn.q_gain"]
    assert torch.allclose(gain, before["blocks.0.attn.q_gain"] * (1 - 0.2 * 0.1))
