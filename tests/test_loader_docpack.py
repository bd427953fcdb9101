"""TRAIN_LOADER=docpack (the VarLen records' layout): the stream loader's spans as one flat row
per micro-batch, attention inside documents cut every TRAIN_SEQ_LEN tokens. The packed forward
equals running each segment alone, is causal bitwise, and the FA3 varlen route gets the same
segments; the NTK RoPE rule reads the attention span, not the packed row's length."""
import pytest
import torch

from conftest import SAMPLE, compile_counting_graphs
from test_frontier_model import LOOP
from test_model_and_muon import cpu, randomize, tiny_cfg
from test_model_stack import BOS, OFF

FILES = sorted(str(p) for p in SAMPLE.glob("sotu_train_*.bin"))
SEQ = 32  # tiny_cfg's TRAIN_SEQ_LEN: the segment cap of a packed row
PACKED = {**OFF, "ATTN_DOC_MASK": "1", "TRAIN_LOADER": "docpack", "XSA_LAST_N": "2", "ROPE_DIMS": "8",
          "PARALLEL_START_LAYER": "2", "SKIP_GATES_ENABLED": "1", **LOOP}


def build(tg, env):
    return randomize(tg.build_model(tiny_cfg(tg, **env), cpu(tg))).eval()


def packed_row(g, n=4 * SEQ):
    """One packed row: a partial document, then documents of 10, 45 and 66 tokens (the last two longer than SEQ: cut)."""
    ids = torch.randint(2, 128, (1, n), generator=g)
    ids[0, [7, 17, 62]] = BOS
    return ids


def segments_of(starts):
    cuts = starts.nonzero().flatten().tolist() + [starts.numel()]
    return list(zip(cuts[:-1], cuts[1:]))


def test_segments_start_at_rows_documents_and_every_cap_tokens(tg):
    ids = packed_row(torch.Generator().manual_seed(0))
    starts = tg.segment_starts(ids, BOS, SEQ)[0]
    assert segments_of(starts) == [(0, 7), (7, 17), (17, 49), (49, 62), (62, 94), (94, 126), (126, 128)]
    rows = tg.segment_starts(ids.view(4, SEQ), BOS, SEQ)  # as rows: only row and document starts
    assert rows[:, 0].all() and rows.sum() == 4 + 3


def test_loader_hands_out_the_stream_spans_as_one_row(tg):
    cfg = tiny_cfg(tg, ATTN_DOC_MASK="1", TRAIN_LOADER="docpack")
    packed = tg.make_loader(cfg, FILES, cpu(tg), 256)
    stream = tg.DistributedTokenLoader(FILES, cpu(tg), 256, SEQ)
    assert isinstance(packed, tg.DocumentPackingLoader)
    for _ in range(3):
        (x, y), (xs, ys) = packed.next_batch(), stream.next_batch()
        assert x.shape == y.shape == (1, 256) and torch.equal(x, xs.reshape(1, -1)) and torch.equal(y, ys.reshape(1, -1))
    assert cfg.packed and cfg.train_row_len == 256 // 8 and tiny_cfg(tg).train_row_len == SEQ


def test_config_needs_the_document_mask(tg):
    with pytest.raises(ValueError, match="TRAIN_LOADER=docpack needs ATTN_DOC_MASK=1"):
        tiny_cfg(tg, TRAIN_LOADER="docpack", ATTN_DOC_MASK="0")
    tiny_cfg(tg, ATTN_DOC_MASK="1", ATTN_BACKEND="fa3")  # the masked path now exists on fa3 (varlen)


@pytest.mark.parametrize("looping", [False, True])
def test_packed_row_equals_each_segment_alone(tg, looping):
    """Every packed position's logits equal those of its segment run as a row of its own: no
    attention across documents or cuts, and RoPE positions only ever meet as differences."""
    model = build(tg, PACKED)
    tg.set_looping(model, looping)
    ids = packed_row(torch.Generator().manual_seed(1))
    with torch.no_grad():
        packed = model(ids, packed=True)[0]
        for a, b in segments_of(tg.segment_starts(ids, BOS, SEQ)[0]):
            alone = model(ids[:, a:b])[0]
            assert torch.allclose(packed[a:b], alone, atol=2e-5), (a, b)


def test_packed_row_is_causal_bitwise(tg):
    model = build(tg, PACKED)
    g = torch.Generator().manual_seed(2)
    ids = packed_row(g)
    for t in (5, 40, 100):
        changed = ids.clone()
        changed[:, t + 1:] = torch.randint(2, 128, (1, ids.size(1) - t - 1), generator=g)
        with torch.no_grad():
            assert torch.equal(model(ids, packed=True)[0, :t + 1], model(changed, packed=True)[0, :t + 1])


def reference_varlen(calls):
    """A plain-PyTorch flash_attn_varlen_func: causal SDPA over each cu_seqlens segment."""
    def varlen(q, k, v, cu_q, cu_k, max_q, max_k, causal):
        calls.append((cu_q.clone(), max_q))
        assert torch.equal(cu_q, cu_k) and max_q == max_k and causal and q.dtype == torch.bfloat16
        out = torch.empty_like(q)
        for a, b in zip(cu_q[:-1].tolist(), cu_q[1:].tolist()):
            if a == b:  # the padding of a fixed-length cu_seqlens: empty segments
                continue
            t = lambda x: x[a:b].float().transpose(0, 1)[None]
            out[a:b] = torch.nn.functional.scaled_dot_product_attention(
                t(q), t(k), t(v), is_causal=True, enable_gqa=q.size(1) != k.size(1))[0].transpose(0, 1).to(q.dtype)
        return out
    return varlen


@pytest.mark.parametrize("packed", [False, True])
def test_fa3_varlen_route_gets_the_same_segments(tg, monkeypatch, packed):
    """On fa3, document masking runs flash_attn_varlen_func over the flattened batch with one
    cu_seqlens entry per segment; with a reference varlen kernel it matches the SDPA masks
    (bf16 inputs, so to bf16 tolerance)."""
    calls = []
    monkeypatch.setattr(tg, "FLASH_ATTN_VARLEN_FUNC", reference_varlen(calls))
    model = build(tg, PACKED)
    ids = packed_row(torch.Generator().manual_seed(3))
    ids = ids if packed else ids.view(4, SEQ)
    with torch.no_grad():
        want = model(ids, packed=packed)
        tg.set_attn_backend(model, "fa3")
        got = model(ids, packed=packed)
    starts = tg.segment_starts(ids, BOS, SEQ).flatten()
    cu, span = calls[0]
    real = starts.nonzero().flatten().tolist()
    assert len(cu) == tg.fa3_segment_cap(*ids.shape) + 1 and span == SEQ  # a fixed length: padded with empty segments
    assert cu.tolist() == real + [ids.numel()] * (len(cu) - len(real))
    assert len(calls) == len(tg.virtual_layers(model.cfg, model.looping))  # one per attention layer
    assert torch.allclose(got, want, atol=0.1) and (got - want).abs().mean() < 0.01


def test_ntk_rope_reads_the_span(tg):
    rot = tg.Rotary(16, 8, 10000.0, 256, train_len=32)
    plain_cos, _ = rot.tables(256, "cpu", span=32)   # packed: segments of 32 -> no rescale
    assert torch.equal(plain_cos, rot.cos[:, :256])
    long_cos, _ = rot.tables(64, "cpu")             # a 64-token row: rescaled for 64
    base = 10000.0 * 2 ** (8 / 6)
    want = torch.outer(torch.arange(64.0), base ** (-torch.arange(0, 8, 2.0) / 8)).cos()
    assert torch.allclose(long_cos[0, :, 0], want, atol=1e-6)


def test_trainer_steps_on_packed_rows_under_compile(tg):
    """Trainer.step hands the loader's packed rows to the model as packed, and the packed
    forward (block masks built from the tokens) compiles as one graph (fullgraph=True)."""
    cfg = tiny_cfg(tg, **{**PACKED, "TRAIN_BATCH_TOKENS": "1024", "VOCAB_SIZE": "1024", "QAT_MODE": "off"})
    ctx = cpu(tg)
    model = tg.build_model(cfg, ctx)
    compiled, graphs = compile_counting_graphs(model)
    loader = tg.make_loader(cfg, FILES, ctx, cfg.train_batch_tokens // 8)
    trainer = tg.Trainer(cfg, ctx, model, compiled, compiled, tg.Optimizers(model, cfg, ctx), loader, lambda line: None)
    before = [p.detach().clone() for p in model.parameters()]
    loss = trainer.step(0, 1.0)
    shapes = {tuple(t.shape) for _, inputs in graphs for t in inputs if isinstance(t, torch.Tensor)}
    assert torch.isfinite(loss) and (1, 128) in shapes  # the packed row [1, TRAIN_BATCH_TOKENS/8]
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
    torch._dynamo.reset()


@torch.library.custom_op("pgtest::varlen", mutates_args=())
def varlen_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_q: torch.Tensor, cu_k: torch.Tensor,
              max_q: int, max_k: int, causal: bool) -> torch.Tensor:
    return reference_varlen([])(q, k, v, cu_q, cu_k, max_q, max_k, causal)


@varlen_op.register_fake
def _(q, k, v, cu_q, cu_k, max_q, max_k, causal):
    return torch.empty_like(q)


def test_fa3_varlen_route_compiles_once_for_any_segment_count(tg, monkeypatch):
    """FA3 registers its kernels as custom ops with shape functions; with such an op standing in,
    the fa3 document-masked forward compiles as one graph (fullgraph=True), and batches with
    another number of segments (another cu_seqlens length) reuse it."""
    monkeypatch.setattr(tg, "FLASH_ATTN_VARLEN_FUNC", lambda q, k, v, cq, ck, mq, mk, causal: varlen_op(q, k, v, cq, ck, mq, mk, causal))
    model = build(tg, PACKED)
    tg.set_attn_backend(model, "fa3")
    compiled, graphs = compile_counting_graphs(model)
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for extra_bos in ((), (100,), (30, 90, 120)):
            ids = packed_row(g)
            ids[0, list(extra_bos)] = BOS
            assert torch.equal(compiled(ids, packed=True), model(ids, packed=True))
    assert len(graphs) == 1
    torch._dynamo.reset()


@pytest.mark.parametrize("packed", [False, True])
def test_masked_attention_never_asks_sdpa_for_grouped_kv_heads(tg, monkeypatch, packed):
    """On CUDA a masked SDPA call with enable_gqa can only run on the math kernel ([B, H, T, T]
    scores in memory): the memory-efficient kernel takes masks but not grouped KV heads. Every
    masked call (rows and packed rows) gets K/V repeated to the query heads instead, and gives
    what SDPA's own GQA gives."""
    import torch.nn.functional as F
    env = PACKED if packed else {**OFF, "ATTN_DOC_MASK": "1", "XSA_LAST_N": "2"}
    model = build(tg, env)
    assert model.cfg.num_heads != model.cfg.num_kv_heads
    calls, plain = [], F.scaled_dot_product_attention

    def recording(q, k, v, attn_mask=None, is_causal=False, enable_gqa=False, **kw):
        calls.append((q.size(1), k.size(1), v.size(1), attn_mask is not None, enable_gqa))
        return plain(q, k, v, attn_mask=attn_mask, is_causal=is_causal, enable_gqa=enable_gqa, **kw)

    ids = packed_row(torch.Generator().manual_seed(3))
    ids = ids if packed else ids.view(4, SEQ)
    monkeypatch.setattr(tg.F, "scaled_dot_product_attention", recording)
    with torch.no_grad():
        model(ids, packed=packed)
    assert calls and all(h == hk == hv and masked and not gqa for h, hk, hv, masked, gqa in calls), calls
    q, k, v = torch.randn(2, 4, 16, 8), torch.randn(2, 2, 16, 8), torch.randn(2, 2, 16, 8)
    mask = torch.rand(2, 1, 16, 16) > 0.3
    mask[..., 0] = True  # every query sees at least one key
    torch.testing.assert_close(tg.masked_sdpa(q, k, v, mask), plain(q, k, v, attn_mask=mask, enable_gqa=True))
