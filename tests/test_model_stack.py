"""The record model stack (SmearGate, BigramHash, Backout, XSA, partial RoPE, LN scale, inits):
causality for every feature, equality with the core model when all are off, BOS isolation."""
import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from test_model_and_muon import cpu, randomize, tiny_cfg

BOS = 1
OFF = {"SMEAR_GATE": "off", "BIGRAM_VOCAB_SIZE": "0", "XSA_LAST_N": "0", "ROPE_DIMS": "0", "LN_SCALE": "0",
       "BACKOUT": "0", "MLP_ACT": "relu2", "ORTHO_INIT": "0", "EMBED_INIT": "normal", "RESID_MIX_INIT": "identity",
       "SKIP_GATES_ENABLED": "0", "SPARSE_ATTN_GATE_ENABLED": "0", "NUM_LOOPS": "0", "PARALLEL_START_LAYER": "0"}
FEATURES = {  # each feature alone, on top of OFF
    "smear_blend": {"SMEAR_GATE": "blend"},
    "smear_additive": {"SMEAR_GATE": "additive"},
    "bigram": {"BIGRAM_VOCAB_SIZE": "64"},
    "backout": {"BACKOUT": "1"},
    "xsa": {"XSA_LAST_N": "2"},
    "partial_rope": {"ROPE_DIMS": "8"},
    "ln_scale": {"LN_SCALE": "1"},
    "leaky": {"MLP_ACT": "leaky_relu2"},
    "ortho": {"ORTHO_INIT": "1"},
    "spectral": {"EMBED_INIT": "spectral"},
    "phase": {"RESID_MIX_INIT": "phase"},
}


def build(tg, env, seed=0):
    model = tg.build_model(tiny_cfg(tg, **{**OFF, **env}), cpu(tg))
    torch.manual_seed(seed)
    return randomize(model).eval()


def combos():
    names = list(FEATURES)
    yield "all_off", {}
    for n in names:
        yield n, FEATURES[n]
    for a, b in itertools.combinations(["smear_blend", "smear_additive", "bigram", "backout", "xsa", "partial_rope", "ln_scale"], 2):
        if {a, b} != {"smear_blend", "smear_additive"}:
            yield f"{a}+{b}", {**FEATURES[a], **FEATURES[b]}
    full = {k: v for n in names if n != "smear_additive" for k, v in FEATURES[n].items()}
    yield "full_blend", full
    yield "full_additive", {**full, "SMEAR_GATE": "additive"}


@pytest.mark.parametrize("name, env", list(combos()), ids=[n for n, _ in combos()])
def test_causality(tg, name, env):
    """Changing tokens after position t leaves logits up to t bitwise unchanged (CPU fp32)."""
    model = build(tg, env)
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(2, 128, (2, 32), generator=g)
    ids[:, [0, 9, 20]] = BOS  # packed documents
    for t in (0, 8, 9, 19, 25):
        changed = ids.clone()
        changed[:, t + 1:] = torch.randint(2, 128, (2, 32 - t - 1), generator=g)
        with torch.no_grad():
            a, b = model(ids), model(changed)
        assert torch.equal(a[:, :t + 1], b[:, :t + 1]), (name, t)
        assert not torch.equal(a[:, t + 1:], b[:, t + 1:])


def reference_core_logits(state, cfg, ids):
    """An independent re-implementation of the naive baseline's forward pass (tied embedding,
    RMSNorm, GQA with QK-norm + full RoPE + q_gain, relu^2 MLP, branch scales, resid_mix, U-Net
    skips, softcap) reading the same weights."""
    L, H, KV, d = cfg.num_layers, cfg.num_heads, cfg.num_kv_heads, cfg.model_dim
    hd, T = d // H, ids.size(1)
    norm = lambda x: x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + torch.finfo(x.dtype).eps)
    inv = 1.0 / (cfg.rope_base ** (torch.arange(0, hd, 2).float() / hd))
    ang = torch.arange(T).float()[:, None] * inv[None]
    cos, sin = ang.cos()[None, :, None], ang.sin()[None, :, None]

    def rope(x):
        x1, x2 = x[..., :hd // 2], x[..., hd // 2:]
        return torch.cat([x1 * cos + x2 * sin, -x1 * sin + x2 * cos], -1)

    x = x0 = norm(state["tok_emb"][ids])
    skips = []
    for i in range(L):
        p = f"blocks.{i}."
        if i >= L // 2 and skips:
            x = x + state["skip_weights"][i - L // 2] * skips.pop()
        x = state[p + "resid_mix"][0] * x + state[p + "resid_mix"][1] * x0
        h = norm(x)
        q = (h @ state[p + "attn.c_q.weight"].T).view(*ids.shape, H, hd)
        k = (h @ state[p + "attn.c_k.weight"].T).view(*ids.shape, KV, hd)
        v = (h @ state[p + "attn.c_v.weight"].T).view(*ids.shape, KV, hd)
        q, k = rope(norm(q)) * state[p + "attn.q_gain"][None, None, :, None], rope(norm(k))
        k, v = k.repeat_interleave(H // KV, 2), v.repeat_interleave(H // KV, 2)
        att = (q.transpose(1, 2) @ k.permute(0, 2, 3, 1)) / math.sqrt(hd)
        att = att.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), float("-inf")).softmax(-1)
        y = (att @ v.transpose(1, 2)).transpose(1, 2).reshape(*ids.shape, d)
        x = x + state[p + "attn_scale"] * (y @ state[p + "attn.proj.weight"].T)
        u = torch.relu(norm(x) @ state[p + "mlp.fc.weight"].T).square()
        x = x + state[p + "mlp_scale"] * (u @ state[p + "mlp.proj.weight"].T)
        if i < L // 2:
            skips.append(x)
    logits = norm(x) @ state["tok_emb"].T
    return cfg.logit_softcap * torch.tanh(logits / cfg.logit_softcap)


def test_all_features_off_equals_the_core_model(tg):
    model = build(tg, {})
    cfg = model.cfg
    ids = torch.randint(0, 128, (2, 32))
    with torch.no_grad():
        ours, ref = model(ids), reference_core_logits(model.state_dict(), cfg, ids)
    assert torch.allclose(ours, ref, atol=1e-4, rtol=1e-4), (ours - ref).abs().max()
    assert not [k for k in model.state_dict() if k.split(".")[0] in ("bigram", "smear", "backout", "lm_head")]


@pytest.mark.parametrize("env", [FEATURES["smear_blend"], FEATURES["smear_additive"], FEATURES["bigram"],
                                 {**FEATURES["smear_blend"], **FEATURES["bigram"]}])
def test_bos_isolation(tg, env):
    """With attention switched off (attn_scale = 0) a position can only see earlier tokens
    through SmearGate/BigramHash: a document's logits must not depend on the previous document."""
    model = build(tg, env)
    with torch.no_grad():
        for block in model.blocks:
            block.attn_scale.zero_()
    ids = torch.randint(2, 128, (1, 32))
    ids[0, 0], ids[0, 12] = BOS, BOS  # doc 1 = [0, 12), doc 2 = [12, 32)
    other = ids.clone()
    other[0, 1:12] = torch.randint(2, 128, (11,))
    with torch.no_grad():
        a, b = model(ids), model(other)
    assert torch.equal(a[0, 12:], b[0, 12:])     # doc 2, its BOS included, is isolated
    assert not torch.equal(a[0, 2:12], b[0, 2:12])  # sanity: the features do carry earlier tokens


def test_smear_gate_is_identity_at_bos_and_sequence_start(tg):
    model = build(tg, FEATURES["smear_blend"])
    x = torch.randn(1, 6, 64)
    ids = torch.tensor([[5, 6, BOS, 7, 8, BOS]])
    has_prev = (torch.arange(6) > 0) & (ids != BOS)
    out = model.smear(x, has_prev)
    assert torch.equal(out[0, [0, 2, 5]], x[0, [0, 2, 5]])
    g = torch.sigmoid(model.smear.gate)
    assert torch.allclose(out[0, 3], x[0, 3] + g * (x[0, 2] - x[0, 3]))


@pytest.mark.parametrize("vocab, buckets", [(1024, 2048), (1024, 10240), (8192, 3072), (65535, 2), (50257, 4096), (2, 7)])
def test_hash_buckets_in_range_and_reserved_bucket(tg, vocab, buckets):
    cfg = tiny_cfg(tg, **{**OFF, "BIGRAM_VOCAB_SIZE": buckets, "VOCAB_SIZE": vocab})
    bigram = tg.BigramHash(cfg)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (4, 512), generator=g)
    ids[:, 100] = BOS
    ids[0, :] = torch.arange(512) % vocab
    has_prev = (torch.arange(512) > 0) & (ids != BOS)
    h = bigram.bucket(ids, has_prev)
    assert h.min() >= 0 and h.max() <= buckets - 1
    assert torch.equal(h == buckets - 1, ~has_prev)  # reserved bucket exactly where there is no previous token


def test_xsa_removes_the_self_value_component(tg):
    """After XSA each head's output is orthogonal to its own token's value vector."""
    model = build(tg, {"XSA_LAST_N": "1"})
    attn = model.blocks[-1].attn
    captured = {}
    attn.proj.register_forward_pre_hook(lambda m, a: captured.setdefault("y", a[0]))
    attn.c_v.register_forward_hook(lambda m, a, out: captured.setdefault("v", out))
    with torch.no_grad():
        attn(torch.randn(2, 16, 64), {})
    y = captured["y"].view(2, 16, 2, 2, 16)  # [B, T, kv heads, group, hd]
    v = F.normalize(captured["v"].view(2, 16, 2, 16), dim=-1).unsqueeze(3)
    assert (y * v).sum(-1).abs().max() < 1e-5


def test_partial_rope_leaves_the_other_dims_alone(tg):
    rot = tg.Rotary(head_dim=16, dims=8, base=10000.0, max_len=32)
    x = torch.randn(1, 32, 2, 16)
    out = rot(x)
    assert torch.equal(out[..., 8:], x[..., 8:]) and not torch.equal(out[..., :8], x[..., :8])
    assert torch.allclose(out.norm(dim=-1), x.norm(dim=-1), atol=1e-5)  # a rotation


def test_inits(tg):
    cfg = tiny_cfg(tg, **{**OFF, "ORTHO_INIT": "1", "BIGRAM_VOCAB_SIZE": "64", "EMBED_INIT": "spectral",
                          "RESID_MIX_INIT": "phase", "BACKOUT": "1"})
    model = tg.build_model(cfg, cpu(tg))
    w = model.blocks[0].attn.c_q.weight
    assert torch.allclose(w @ w.T, torch.eye(64), atol=1e-4)  # orthogonal
    assert (model.blocks[0].attn.proj.weight == 0).all() and (model.blocks[0].mlp.proj.weight == 0).all()
    p = model.bigram.proj.weight  # muP-style 1/sqrt(2L) on the non-zero output projection
    assert torch.allclose(torch.linalg.svdvals(p), torch.full((16,), (2 * 3) ** -0.5), atol=1e-4)
    assert (model.bigram.table == 0).all() and model.bigram.scale.item() == pytest.approx(0.05)
    s = torch.linalg.svdvals(model.tok_emb)
    assert torch.allclose(s, s[0] * torch.arange(1, 65).float() ** -0.5, rtol=1e-3)
    mixes = [b.resid_mix[0, 0].item() for b in model.blocks]
    assert mixes == sorted(mixes) and mixes[0] == pytest.approx(1 / (1 + math.exp(1.5)))
    assert model.backout.item() == pytest.approx(0.2)
