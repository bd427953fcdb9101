"""The 1.08-class model pieces: depth recurrence (virtual layer order, looped forward equals an
explicitly unrolled model, the switch compiles nothing in the timed run), parallel residual
lanes, sigmoid-gated skips, the attention output gate and the sparse attention gate (int8 per
row in the artifact); causality bitwise for each alone and all combined."""
import pytest
import torch

from conftest import SAMPLE, compile_counting_graphs
from test_model_and_muon import cpu, randomize, tiny_cfg
from test_model_stack import BOS, OFF

LOOP = {"NUM_LAYERS": "4", "NUM_LOOPS": "1", "LOOP_START": "1", "LOOP_END": "2", "XSA_LAST_N": "1"}
FEATURES = {
    "loop": LOOP,
    "skip_gates": {"SKIP_GATES_ENABLED": "1"},
    "parallel": {"NUM_LAYERS": "4", "PARALLEL_START_LAYER": "2"},
    "attn_out_gate": {"ATTN_OUT_GATE_ENABLED": "1"},
    "attn_out_gate_q": {"ATTN_OUT_GATE_ENABLED": "1", "ATTN_OUT_GATE_SRC": "q"},
    "sparse_gate": {"SPARSE_ATTN_GATE_ENABLED": "1", "SPARSE_ATTN_GATE_INIT_STD": "0.5"},
    "doc_mask": {"ATTN_DOC_MASK": "1"},
    "combined": {**LOOP, "SKIP_GATES_ENABLED": "1", "PARALLEL_START_LAYER": "2", "SPARSE_ATTN_GATE_ENABLED": "1",
                 "SMEAR_GATE": "additive", "BIGRAM_VOCAB_SIZE": "64", "MLP_ACT": "leaky_relu2", "LN_SCALE": "1",
                 "ROPE_DIMS": "8", "XSA_LAST_N": "4", "ATTN_DOC_MASK": "1", "ROPE_TRAIN_SEQ_LEN": "16"},
}


def build(tg, env, off=True):
    model = tg.build_model(tiny_cfg(tg, **({**OFF, **env} if off else env)), cpu(tg))
    return randomize(model).eval()


def test_virtual_layer_orders_of_the_records(tg):
    top = tg.Config.from_env({"NUM_LOOPS": "2", "LOOP_START": "3", "LOOP_END": "5"})
    order = tg.virtual_layers(top, True)
    assert order[:8] == [0, 1, 2, 3, 4, 5, 3, 4] and order[8:] == [5, 3, 4, 5, 6, 7, 8, 9, 10]  # 04-09 on: 17 slots
    r0405 = tg.Config.from_env({"NUM_LOOPS": "2", "LOOP_START": "4", "LOOP_END": "5"})
    order = tg.virtual_layers(r0405, True)
    assert order[:7] == [0, 1, 2, 3, 4, 5, 4] and order[7:] == [5, 4, 5, 6, 7, 8, 9, 10]  # 04-05: 15 slots
    assert tg.virtual_layers(top, False) == list(range(11))
    with torch.device("meta"):
        assert tg.GPT(top, max_len=64).skip_weights.shape == (8, 512)  # sized for the looped sequence
    with pytest.raises(ValueError, match="LOOP_START=5..LOOP_END=11"):
        tg.Config.from_env({"NUM_LOOPS": "1", "LOOP_START": "5", "LOOP_END": "11"})


CASES = [(n, False) for n in FEATURES] + [(n, True) for n, env in FEATURES.items() if "NUM_LOOPS" in env]


@pytest.mark.parametrize("name, looping", CASES, ids=[f"{n}-{'looped' if l else 'plain'}" for n, l in CASES])
def test_causality(tg, name, looping):
    """Changing tokens after position t leaves logits up to t bitwise unchanged (CPU fp32)."""
    model = build(tg, FEATURES[name])
    tg.set_looping(model, looping)
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(2, 128, (2, 32), generator=g)
    ids[:, [0, 9, 20]] = BOS
    for t in (0, 9, 25):
        changed = ids.clone()
        changed[:, t + 1:] = torch.randint(2, 128, (2, 32 - t - 1), generator=g)
        with torch.no_grad():
            a, b = model(ids), model(changed)
        assert torch.equal(a[:, :t + 1], b[:, :t + 1]), (name, t)
        assert not torch.equal(a[:, t + 1:], b[:, t + 1:])


@pytest.mark.parametrize("gates", ["0", "1"])
def test_looped_forward_equals_an_unrolled_model(tg, gates):
    """A 4-block model looping blocks 1-2 once more runs [0,1,2,1,2,3]; a plain 6-block model
    holding copies of those blocks (each keeping its physical LN factor and XSA flag), with the
    same embedding and skip weights, gives the same logits."""
    env = {**LOOP, "SKIP_GATES_ENABLED": gates, "LN_SCALE": "1", "BIGRAM_VOCAB_SIZE": "64", "SMEAR_GATE": "blend"}
    looped = build(tg, env, off=False)
    order = tg.virtual_layers(looped.cfg, True)
    assert order == [0, 1, 2, 1, 2, 3]
    unrolled = tg.build_model(tiny_cfg(tg, **{**env, "NUM_LAYERS": "6", "NUM_LOOPS": "0", "XSA_LAST_N": "0"}), cpu(tg)).eval()
    state = {k: v for k, v in looped.state_dict().items() if not k.startswith("blocks.")}
    for slot, i in enumerate(order):
        state.update({f"blocks.{slot}.{k}": v for k, v in looped.blocks[i].state_dict().items()})
        unrolled.blocks[slot].ln_scale = looped.blocks[i].ln_scale
        unrolled.blocks[slot].attn.xsa = looped.blocks[i].attn.xsa
    unrolled.load_state_dict(state, strict=True)
    ids = torch.randint(0, 128, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(looped(ids), unrolled(ids), atol=1e-6, rtol=0)
        tg.set_looping(looped, False)  # the plain graph: blocks 0..3 with the first skip weights
        plain = tg.build_model(tiny_cfg(tg, **{**env, "NUM_LOOPS": "0"}), cpu(tg)).eval()
        pstate = {k: v for k, v in looped.state_dict().items()}
        pstate["skip_weights"] = pstate["skip_weights"][:2]
        if gates == "1":
            pstate["skip_gates"] = pstate["skip_gates"][:2]
        plain.load_state_dict(pstate, strict=True)
        assert torch.equal(looped(ids), plain(ids))


def test_parallel_block_equals_its_formula(tg):
    cfg = tiny_cfg(tg, **{**OFF, "PARALLEL_START_LAYER": "1", "LN_SCALE": "1"})
    model = build(tg, {"PARALLEL_START_LAYER": "1", "LN_SCALE": "1"})
    block = model.blocks[2]
    g = torch.Generator().manual_seed(0)
    l0, l1, x0 = (torch.randn(2, 32, 64, generator=g) for _ in range(3))
    post, resid = torch.randn(2, 2, generator=g), torch.randn(2, generator=g)
    norm = lambda x: x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + torch.finfo(x.dtype).eps)
    with torch.no_grad():
        out0, out1 = block.forward_lanes((l0, l1), x0, {}, post, resid)
        m0, m1 = block.resid_mix
        a = block.attn_scale * block.attn(norm(m0 * l0 + m1 * x0) * block.ln_scale, {})
        m = block.mlp_scale * block.mlp(norm(l1) * block.ln_scale, {})
        assert torch.allclose(out0, resid[0] * l0 + post[0, 0] * a + post[1, 0] * m, atol=1e-6)
        assert torch.allclose(out1, resid[1] * l1 + post[0, 1] * a + post[1, 1] * m, atol=1e-6)
    assert cfg.parallel_start_layer == 1


def test_parallel_lanes_start_at_the_given_decoder_layer(tg):
    """A two-lane model whose MLPs output zero, with all lane lambdas 1 and no skip into the
    two-lane region (skips merge into lane 0 only), keeps both lanes equal to the sequential
    stream, so it equals the sequential model; then a lambda of a two-lane block changes the
    output and one of a block before PARALLEL_START_LAYER does not."""
    env = {"NUM_LAYERS": "4", "PARALLEL_START_LAYER": "2"}
    par = build(tg, env)
    seq = tg.build_model(tiny_cfg(tg, **{**OFF, "NUM_LAYERS": "4"}), cpu(tg)).eval()
    with torch.no_grad():
        for b in par.blocks:
            b.mlp.proj.weight.zero_()  # MLP branch = 0
        par.parallel_post.fill_(1.0)
        par.parallel_resid.fill_(1.0)
        par.skip_weights.zero_()  # decoder slots 0 and 1 are two-lane: their skips would reach lane 0 only
        seq.load_state_dict({k: v for k, v in par.state_dict().items() if not k.startswith("parallel_")}, strict=True)
        ids = torch.randint(0, 128, (2, 32), generator=torch.Generator().manual_seed(0))
        # resid_mix back to the identity (x only): randomize() moved it, and x0 would enter lane 0 only
        for m in (par, seq):
            for b in m.blocks:
                b.resid_mix.copy_(torch.stack([torch.ones(64), torch.zeros(64)]))
        assert torch.allclose(par(ids), seq(ids), atol=1e-5)
        par.parallel_resid[3, 1] = 0.5  # a lambda of a two-lane block matters ...
        assert not torch.allclose(par(ids), seq(ids), atol=1e-5)
        par.parallel_resid[3, 1] = 1.0
        par.parallel_resid[1, 0] = 0.5  # ... one of a sequential block (layer 1 < 2) does not
        assert torch.allclose(par(ids), seq(ids), atol=1e-5)


def test_skips_into_two_lane_blocks_join_lane_0_only(tg):
    """The stream splits into lanes before the first two-lane block's skip merges (the 1.0611
    record's order): with zero attention outputs nothing moves from lane 0 to lane 1, so the
    MLP lane, the one that leaves with PARALLEL_FINAL_LANE=mlp, never sees a skip. Merging the
    skip before the split (the old order) would put the first one into both lanes."""
    for gates in ("0", "1"):
        model = build(tg, {"NUM_LAYERS": "4", "PARALLEL_START_LAYER": "2", "PARALLEL_FINAL_LANE": "mlp",
                           "SKIP_GATES_ENABLED": gates})
        ids = torch.randint(0, 128, (2, 32), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            for b in model.blocks[2:]:
                b.attn.proj.weight.zero_()
            before = model(ids)
            model.skip_weights.mul_(3.0)
            assert torch.equal(model(ids), before)


def test_gates_at_init(tg):
    """Zero-init gates: the output gate (2 sigmoid(0) = 1) is the identity, the sparse gate
    (sigmoid(0) = 0.5) halves every head, the skip gate mixes evenly: lerp(w skip, x, 0.5)."""
    ids = torch.randint(0, 128, (2, 32), generator=torch.Generator().manual_seed(0))
    base = build(tg, {})
    x = torch.randn(2, 32, 64)
    for env, factor in (({"ATTN_OUT_GATE_ENABLED": "1"}, 1.0), ({"SPARSE_ATTN_GATE_ENABLED": "1"}, 0.5)):
        gated = tg.build_model(tiny_cfg(tg, **{**OFF, **env}), cpu(tg)).eval()
        state = gated.state_dict()
        state.update(base.state_dict())
        gated.load_state_dict(state, strict=True)
        with torch.no_grad():
            attn, ref = gated.blocks[0].attn, base.blocks[0].attn
            y, y_ref = attn(x, {}), ref(x, {})
            saved = ref.proj.weight.clone()
            ref.proj.weight.mul_(factor)
            assert torch.allclose(y, ref(x, {}), atol=1e-6)
            ref.proj.weight.copy_(saved)
            assert factor == 1.0 or not torch.allclose(y, y_ref)
    gated = tg.build_model(tiny_cfg(tg, **{**OFF, "SKIP_GATES_ENABLED": "1"}), cpu(tg))
    assert gated.skip_gates.shape == gated.skip_weights.shape and not gated.skip_gates.any()


def test_gate_roles_and_int8_export(tg):
    cfg = tiny_cfg(tg, SPARSE_ATTN_GATE_ENABLED=1, SPARSE_ATTN_GATE_INIT_STD=0.3, PRUNE_FRAC=0.2)
    model = tg.build_model(cfg, cpu(tg))
    roles = {n: p.role for n, p in model.named_parameters()}
    gate_names = [n for n, r in roles.items() if r == "gate"]
    assert gate_names == [f"blocks.{i}.attn.attn_gate_w" for i in range(3)]
    opt = tg.Optimizers(model, cfg, cpu(tg))
    group = next(g for g in opt.adam.param_groups if g["role"] == "gate")
    assert group["lr"] == cfg.scalar_lr and len(group["params"]) == 3
    ids = torch.randint(0, 128, (2, 32))
    hessians = tg.collect_hessians(model, [(ids, ids)], cpu(tg))[0]  # the default exporter is GPTQ: gates still round to nearest
    assert not set(gate_names) & set(hessians)
    q = tg.quantize_state(model.state_dict(), roles, cfg, hessians=hessians)
    for n in gate_names:
        w = model.state_dict()[n]
        assert q[n].bits == 8 and q[n].codes.dtype == torch.int8 and q[n].codes.shape == (4, 12)
        scale = (w.abs().amax(1) / 127).to(torch.float16)  # max|row|/127, no clip search, no pruning
        assert torch.equal(q[n].scales, scale)
        assert torch.equal(q[n].codes.float(), torch.clamp(torch.round(w / scale.float()[:, None]), -127, 127))
    blob, _ = tg.encode_artifact(q, "auto")
    back = tg.decode_artifact(blob)
    for n in gate_names:
        assert (back[n] - model.state_dict()[n]).abs().max() <= q[n].scales.float().max() / 2 + 1e-6


def test_gates_are_exclusive(tg):
    with pytest.raises(ValueError, match="exclusive"):
        tg.Config.from_env({"ATTN_OUT_GATE_ENABLED": "1", "SPARSE_ATTN_GATE_ENABLED": "1"})


def test_loop_switch_compiles_nothing_inside_the_timed_run(tg, tmp_path):
    """The warmup builds the plain and the looped training graphs, prewarm_eval the eval graph
    (looped: the final scores loop); the timed run switches the loop on mid-way (logged) and
    its steps and its final eval build no graph. The final model loops."""
    cfg = tiny_cfg(tg, **{**LOOP, "TRAIN_SEQ_LEN": "64", "TRAIN_BATCH_TOKENS": "1024", "VOCAB_SIZE": "1024",
                          "ITERATIONS": "6", "WARMUP_STEPS": "1", "ENABLE_LOOPING_AT": "0.5", "MAX_WALLCLOCK_SECONDS": "0",
                          "TRAIN_LOG_EVERY": "0", "QAT_MODE": "off", "VAL_BATCH_SIZE": "512"})
    lines = []
    ctx = cpu(tg)
    model = tg.build_model(cfg, ctx)
    compiled, graphs = compile_counting_graphs(model)
    files = tg.shard_files(str(SAMPLE), "sotu_train_*.bin", "train")
    loader = tg.DistributedTokenLoader(files, ctx, cfg.train_batch_tokens // 8, cfg.train_seq_len)
    val = tg.load_shard(SAMPLE / "sotu_val_000000.bin")[:2049]
    import sentencepiece as spm
    lut = tg.build_byte_lut(spm.SentencePieceProcessor(model_file=str(SAMPLE / "sotu_1024_bpe.model")), 1024)
    tg.set_looping(model, False)
    trainer = tg.Trainer(cfg, ctx, model, compiled, compiled, tg.Optimizers(model, cfg, ctx), loader, lines.append)
    trainer.warmup_and_restore()
    tg.prewarm_eval(compiled, cfg, ctx, len(val))
    built = len(graphs)
    assert built >= 3 and not model.looping  # plain train, looped train, looped eval
    trainer.run(val, tg.lut_target_bytes(val, lut), tg.WeightAverager(model, cfg))
    assert len(graphs) == built, "the timed run compiled a graph"
    assert model.looping and any(l.startswith("looping_start step:3 ") for l in lines), lines
    assert any("warmup_graphs:plain+looped" in l for l in lines)
    torch._dynamo.reset()


def test_rope_ntk_rescale_rule(tg):
    """ROPE_TRAIN_SEQ_LEN=1024 with 16 rotary dims: at 2048 tokens the base is
    10000 * 2^(16/14) ~ 22,082 (the 1.1248 record); at or below 1024 nothing changes."""
    plain, ntk = tg.Rotary(64, 16, 10000.0, 2048), tg.Rotary(64, 16, 10000.0, 2048, train_len=1024)
    base = 10000.0 * 2 ** (16 / 14)
    assert round(base) == 22082
    inv = base ** (-torch.arange(0, 16, 2, dtype=torch.float64) / 16)
    ang = torch.arange(2048, dtype=torch.float64)[:, None] * inv[None]
    cos, sin = ntk.tables(2048, "cpu")
    assert torch.allclose(cos[0, :, 0].double(), ang.cos(), atol=1e-4) and torch.allclose(sin[0, :, 0].double(), ang.sin(), atol=1e-4)
    for T in (1024, 100):
        assert all(torch.equal(a, b) for a, b in zip(ntk.tables(T, "cpu"), plain.tables(T, "cpu")))
    assert not torch.allclose(ntk.tables(2048, "cpu")[0], plain.tables(2048, "cpu")[0])
    model = build(tg, {"ROPE_DIMS": "8", "ROPE_TRAIN_SEQ_LEN": "16"})
    ref = build(tg, {"ROPE_DIMS": "8"})
    ids = torch.randint(0, 128, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(ids[:, :16]), ref(ids[:, :16])) and not torch.allclose(model(ids), ref(ids))


def test_late_qat_fires_on_the_lr_scale(tg):
    cfg = tg.Config.from_env({"LATE_QAT_THRESHOLD": "0.1"})
    assert not tg.late_qat_due(cfg, 0.99, 0.1) and tg.late_qat_due(cfg, 0.5, 0.0999)  # the scale decides, not progress
    by_frac = tg.Config.from_env({"QAT_START_FRAC": "0.9"})
    assert tg.late_qat_due(by_frac, 0.9, 1.0) and not tg.late_qat_due(by_frac, 0.89, 0.0)
    with pytest.raises(ValueError, match="MIN_LR"):
        tg.Config.from_env({"LATE_QAT_THRESHOLD": "0.1", "MIN_LR": "0.1", "WARMDOWN_FRAC": "0.5"})


def test_residual_stream_in_the_autocast_dtype(tg):
    """Under bf16 autocast every block reads and writes a bf16 stream (the records' CUDA
    numerics); without autocast (CPU runs) the stream stays fp32."""
    model = build(tg, {"PARALLEL_START_LAYER": "2", "SKIP_GATES_ENABLED": "1", "BIGRAM_VOCAB_SIZE": "64", "SMEAR_GATE": "additive"})
    seen = []
    hooks = [b.register_forward_hook(lambda m, args, out: seen.append((args[0].dtype, out.dtype))) for b in model.blocks]
    ids = torch.randint(0, 128, (2, 32))
    with torch.no_grad():
        model(ids)
        assert seen and all(d == (torch.float32, torch.float32) for d in seen)
        seen.clear()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model(ids)
    assert len(seen) == 2 and all(d == (torch.bfloat16, torch.bfloat16) for d in seen), seen  # blocks 0-1 sequential
    for h in hooks:
        h.remove()


def test_attn_backend_resolution(tg):
    assert tg.resolve_attn_backend(tiny_cfg(tg), torch.device("cpu")) == "sdpa"
    assert tg.resolve_attn_backend(tiny_cfg(tg, ATTN_BACKEND="sdpa"), torch.device("cuda")) == "sdpa"
    try:
        import flash_attn_interface  # noqa: F401
        pytest.skip("flash_attn_interface is installed here")
    except ImportError:
        pass
    with pytest.raises(ImportError, match="ATTN_BACKEND=fa3"):
        tg.resolve_attn_backend(tiny_cfg(tg, ATTN_BACKEND="fa3"), torch.device("cuda"))
    assert tg.resolve_attn_backend(tiny_cfg(tg, ATTN_DOC_MASK="0"), torch.device("cuda")) == "sdpa"  # auto without FA3
    assert tg.resolve_attn_backend(tiny_cfg(tg, ATTN_DOC_MASK="1"), torch.device("cuda")) == "flex"  # masked: flex


def test_document_masked_attention(tg):
    """ATTN_DOC_MASK=1: a token's logits depend only on its own document's earlier tokens, so
    changing another document leaves them bitwise unchanged (and causality holds); with a
    single document per row the model equals plain causal attention."""
    env = {"ATTN_DOC_MASK": "1", "BIGRAM_VOCAB_SIZE": "64", "SMEAR_GATE": "additive", "PARALLEL_START_LAYER": "2", **LOOP}
    model = build(tg, env)
    g = torch.Generator().manual_seed(5)
    ids = torch.randint(2, 128, (2, 32), generator=g)
    ids[:, [0, 12, 22]] = BOS  # documents [0,12), [12,22), [22,32)
    changed = ids.clone()
    changed[:, 1:12] = torch.randint(2, 128, (2, 11), generator=g)  # rewrite the first document
    changed[:, 23:] = torch.randint(2, 128, (2, 9), generator=g)    # and the tail of the last
    with torch.no_grad():
        a, b = model(ids), model(changed)
        assert torch.equal(a[:, 12:23], b[:, 12:23])  # the middle document and the last one's BOS
        assert not torch.equal(a[:, :12], b[:, :12])
        plain = build(tg, {**env, "ATTN_DOC_MASK": "0"})
        plain.load_state_dict(model.state_dict())
        one_doc = ids.clone()
        one_doc[:, 1:] = torch.where(one_doc[:, 1:] == BOS, 5, one_doc[:, 1:])
        assert torch.allclose(model(one_doc), plain(one_doc), atol=1e-5)
        assert not torch.allclose(model(ids), plain(ids), atol=1e-5)
    m = tg.attention_layout(ids[:1], BOS, "sdpa").mask[0, 0]
    assert m[13, 12] and m[13, 13] and not m[13, 11] and not m[13, 14] and m[11, 0]
