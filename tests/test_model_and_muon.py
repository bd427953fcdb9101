"""Model structure, causality, role routing and the Muon optimizer."""
import pytest
import torch

CPU = None


def tiny_cfg(tg, **kw):
    env = {"NUM_LAYERS": "3", "MODEL_DIM": "64", "NUM_HEADS": "4", "NUM_KV_HEADS": "2", "TRAIN_SEQ_LEN": "32",
           "TRAIN_BATCH_TOKENS": "256", "VOCAB_SIZE": "128", "XSA_LAST_N": "1", "BIGRAM_VOCAB_SIZE": "64",
           "BIGRAM_DIM": "16", "EVAL_STRIDE": "16", "AUTOCAST": "off", "COMPILE": "0",
           "NUM_LOOPS": "0", "PARALLEL_START_LAYER": "0"}  # the unit tests' base is the plain stack; recurrence and lanes opt in
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


def preset(name: str) -> dict:
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "configs" / name
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if line)


# The March stack: the 1.1248 record's full configuration (configs/record_0321_1.1248.env).
MARCH_ENV = preset("record_0321_1.1248.env")
# The naive baseline's architecture: every feature added after it switched off.
CORE_ENV = {**MARCH_ENV, "NUM_LAYERS": "9", "MLP_MULT": "2", "SMEAR_GATE": "off", "BIGRAM_VOCAB_SIZE": "0",
            "XSA_LAST_N": "0", "ROPE_DIMS": "0", "LN_SCALE": "0", "ORTHO_INIT": "0"}
# Record 2026-03-20_10L_Int5MLP_MuonWD04_SWA50 (1.1428): 10 layers, BigramHash(10240), blend SmearGate.
RECORD_0320_ENV = {**MARCH_ENV, "NUM_LAYERS": "10", "BIGRAM_VOCAB_SIZE": "10240", "XSA_LAST_N": "0", "ROPE_DIMS": "0",
                   "LN_SCALE": "0"}


@pytest.mark.parametrize("env, count", [
    (CORE_ENV, 17_059_912),        # 2026-03-17_NaiveBaseline logs model_params:17059912
    (RECORD_0320_ENV, 25_517_137),  # 2026-03-20_10L_Int5MLP_MuonWD04_SWA50 logs 25,517,137
    (MARCH_ENV, 26_829_913),       # 2026-03-21_11L_XSA4_EMA_PartialRoPE_LateQAT_1.1248: 26,829,913
    # the default: the 1.0611 record's model, input-dependent SmearGate included (its log: 35,945,671)
    ({}, 35_945_671),
])
def test_parameter_counts_match_published_records(tg, env, count):
    cfg = tg.Config.from_env(env)
    with torch.device("meta"):
        model = tg.GPT(cfg, max_len=cfg.train_seq_len)
    assert tg.count_params(model) == count


def test_every_parameter_has_a_role(tg):
    model = tg.build_model(tiny_cfg(tg, TIE_EMBEDDINGS=0, QUANT_BITS_HEAD=8), cpu(tg))
    groups = tg.params_by_role(model)
    names = [n for g in groups.values() for n, _ in g]
    assert sorted(names) == sorted(n for n, _ in model.named_parameters())
    assert {n for r in tg.MATRIX_ROLES for n, _ in groups[r]} == {n for n, p in model.named_parameters() if n.endswith(".weight")}
    assert all(".attn." in n for n, _ in groups["attn"]) and all(".mlp." in n for n, _ in groups["mlp"])
    assert [n for n, _ in groups["proj"]] == ["bigram.proj.weight"] and [n for n, _ in groups["bigram"]] == ["bigram.table"]
    assert [n for n, _ in groups["embed"]] == ["tok_emb"] and [n for n, _ in groups["head"]] == ["lm_head"]
    opt = tg.Optimizers(model, tiny_cfg(tg, TIE_EMBEDDINGS=0), cpu(tg))
    in_muon = {id(p) for g in opt.muon.param_groups for p in g["params"]}
    in_adam = {id(p) for g in opt.adam.param_groups for p in g["params"]}
    assert not in_muon & in_adam and in_muon | in_adam == {id(p) for p in model.parameters()}


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
    timed = tg.Config.from_env({"MAX_WALLCLOCK_SECONDS": "10", "WARMDOWN_ITERS": "20", "QUANT_METHOD": "rtn"})  # no GPTQ reserve
    # 100 ms/step: the warmdown is the last 2 s of the 10 s budget.
    assert tg.lr_scale(timed, 50, 5000) == 1.0
    assert tg.lr_scale(timed, 90, 9000) == pytest.approx(0.5)
    assert tg.lr_scale(timed, 101, 10100) == 0.0


def test_momentum_warmup(tg):
    cfg = tg.Config.from_env({})  # 0.92 -> 0.97 over 1500 steps
    assert tg.muon_momentum(cfg, 0) == pytest.approx(0.92)
    assert tg.muon_momentum(cfg, 750) == pytest.approx(0.945)
    assert tg.muon_momentum(cfg, 10_000) == pytest.approx(0.97)


def test_muon_foreach_step_is_bitwise_the_per_parameter_loop(tg):
    """Muon's foreach implementation must be exactly the plain per-parameter algorithm
    (momentum, Nesterov, NS, decoupled decay, shape scale), over steps and mixed shapes."""
    torch.manual_seed(0)
    shapes = [(32, 16), (16, 32), (48, 16), (16, 16)]  # shape scales sqrt(2), 1, sqrt(3), 1
    params = [torch.nn.Parameter(torch.randn(*s)) for s in shapes]
    ref = [p.detach().clone() for p in params]
    moms = [torch.zeros_like(p) for p in ref]
    opt = tg.Muon(params, lr=0.05, momentum=0.9, backend_steps=5, weight_decay=0.1, ctx=cpu(tg))
    for _ in range(3):
        grads = [torch.randn(*s) for s in shapes]
        for p, g in zip(params, grads):
            p.grad = g.clone()
        opt.step()
        for w, m, g in zip(ref, moms, grads):
            m.mul_(0.9).add_(g)
            u = tg.newton_schulz5(g.clone().add_(m, alpha=0.9), 5)  # the old per-parameter code's exact ops
            w.mul_(1 - 0.05 * 0.1).add_(u, alpha=-0.05 * max(1.0, w.size(0) / w.size(1)) ** 0.5)
    for p, w in zip(params, ref):
        assert torch.equal(p.detach(), w)


def test_gptq_reserve_shortens_the_schedule(tg):
    """With QUANT_METHOD=gptq the warmdown (and every wallclock decision) ends GPTQ_RESERVE_SECONDS
    before the cap, leaving the reserve for calibration."""
    timed = tg.Config.from_env({"MAX_WALLCLOCK_SECONDS": "10", "WARMDOWN_ITERS": "20", "QUANT_METHOD": "gptq",
                                "GPTQ_RESERVE_SECONDS": "2"})
    assert timed.train_cap_seconds == 8.0
    assert tg.lr_scale(timed, 70, 7000) == pytest.approx(0.5) and tg.lr_scale(timed, 81, 8100) == 0.0
    assert tg.progress(timed, 40, 4000) == pytest.approx(0.5)
