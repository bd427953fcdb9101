"""Model structure, causality, role routing and the Muon optimizer."""
import pytest
import torch

CPU = None


def tiny_cfg(tg, **kw):
    env = {"NUM_LAYERS": "3", "MODEL_DIM": "64", "NUM_HEADS": "4", "NUM_KV_HEADS": "2", "TRAIN_SEQ_LEN": "32",
           "TRAIN_BATCH_TOKENS": "256", "VOCAB_SIZE": "128"}
    env.update({k: str(v) for k, v in kw.items()})
    return tg.Config.from_env(env)


def cpu(tg):
    return tg.Dist(0, 1, 0, torch.device("cpu"))


def randomize(model):
    """Zero-init output projections would hide most of the network from the tests."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def test_baseline_parameter_count(tg):
    """Default config = the naive baseline's architecture, which logs 17,059,912 parameters."""
    cfg = tg.Config.from_env({})
    with torch.device("meta"):
        model = tg.GPT(cfg, max_len=cfg.train_seq_len)
    assert tg.count_params(model) == 17_059_912


def test_every_parameter_has_a_role(tg):
    model = tg.build_model(tiny_cfg(tg, TIE_EMBEDDINGS=0), cpu(tg))
    groups = tg.params_by_role(model)
    names = [n for g in groups.values() for n, _ in g]
    assert sorted(names) == sorted(n for n, _ in model.named_parameters())
    assert {n for n, _ in groups["matrix"]} == {n for n, p in model.named_parameters() if n.startswith("blocks.") and n.endswith(".weight")}
    assert [n for n, _ in groups["embed"]] == ["tok_emb"] and [n for n, _ in groups["head"]] == ["lm_head"]


@pytest.mark.parametrize("tie", [1, 0])
def test_causality(tg, tie):
    cfg = tiny_cfg(tg, TIE_EMBEDDINGS=tie)
    model = randomize(tg.build_model(cfg, cpu(tg))).eval()
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 128, (2, 32), generator=g)
    t = 17
    changed = ids.clone()
    changed[:, t + 1:] = torch.randint(0, 128, (2, 32 - t - 1), generator=g)
    a, b = model(ids), model(changed)
    assert torch.equal(a[:, :t + 1], b[:, :t + 1])
    assert not torch.allclose(a[:, t + 1:], b[:, t + 1:])


def test_loss_is_cross_entropy_of_logits(tg):
    model = randomize(tg.build_model(tiny_cfg(tg), cpu(tg)))
    ids = torch.randint(0, 128, (2, 32))
    tgt = torch.randint(0, 128, (2, 32))
    logits = model(ids)
    assert logits.abs().max() <= 30.0
    ref = torch.nn.functional.cross_entropy(logits.view(-1, 128), tgt.view(-1))
    assert torch.allclose(model(ids, tgt), ref)


def conditioned(rows, cols, cond):
    """A matrix with random singular vectors and singular values spread over [1, cond]."""
    U, _ = torch.linalg.qr(torch.randn(rows, min(rows, cols)))
    V, _ = torch.linalg.qr(torch.randn(cols, min(rows, cols)))
    return U @ torch.diag(torch.linspace(1, cond, min(rows, cols))) @ V.T


@pytest.mark.parametrize("G", [lambda: torch.randn(256, 64) * 3, lambda: torch.randn(64, 384),
                               lambda: conditioned(512, 512, 2.0), lambda: conditioned(96, 160, 5.0)])
def test_newton_schulz_singular_values_near_one(tg, G):
    """The quintic iteration trades exactness for speed: it maps every singular value of a
    reasonably conditioned matrix into roughly [0.68, 1.13] (modded-nanogpt's design)."""
    torch.manual_seed(0)
    G = G()
    X = tg.newton_schulz5(G, steps=5)
    s = torch.linalg.svdvals(X)
    assert X.shape == G.shape
    assert s.min() > 0.6 and s.max() < 1.25, (s.min(), s.max())
    # The orthogonalized update keeps G's singular vectors: X ~ U V^T.
    U, _, Vh = torch.linalg.svd(G, full_matrices=False)
    assert torch.nn.functional.cosine_similarity(X.flatten(), (U @ Vh).flatten(), dim=0) > 0.98


def test_muon_step_matches_reference_formula(tg):
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(32, 16))
    p0 = p.detach().clone()
    g = torch.randn(32, 16)
    p.grad = g.clone()
    opt = tg.Muon([p], lr=0.1, momentum=0.9, backend_steps=5, weight_decay=0.5, ctx=cpu(tg))
    opt.step()
    u = tg.newton_schulz5(g + 0.9 * g, 5) * (32 / 16) ** 0.5
    expected = p0 * (1 - 0.1 * 0.5) - 0.1 * u
    assert torch.allclose(p.detach(), expected, atol=1e-6)


def test_lr_schedule(tg):
    cfg = tg.Config.from_env({"ITERATIONS": "100", "WARMDOWN_ITERS": "20", "MAX_WALLCLOCK_SECONDS": "0"})
    assert tg.lr_scale(cfg, 0, 0) == 1.0 and tg.lr_scale(cfg, 80, 0) == 1.0
    assert tg.lr_scale(cfg, 90, 0) == pytest.approx(0.5) and tg.lr_scale(cfg, 100, 0) == 0.0
    timed = tg.Config.from_env({"MAX_WALLCLOCK_SECONDS": "10", "WARMDOWN_ITERS": "20"})
    # 100 ms/step: the warmdown is the last 2 s of the 10 s budget.
    assert tg.lr_scale(timed, 50, 5000) == 1.0
    assert tg.lr_scale(timed, 90, 9000) == pytest.approx(0.5)
    assert tg.lr_scale(timed, 101, 10100) == 0.0


def test_momentum_warmup(tg):
    cfg = tg.Config.from_env({})
    assert tg.muon_momentum(cfg, 0) == pytest.approx(0.85)
    assert tg.muon_momentum(cfg, 250) == pytest.approx(0.90)
    assert tg.muon_momentum(cfg, 10_000) == pytest.approx(0.95)
