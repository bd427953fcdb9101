"""Sliding-window and score-first TTT evaluation: exactly-once coverage, equivalences, legality."""
import pytest
import torch

from conftest import SAMPLE
from test_model_and_muon import cpu, randomize, tiny_cfg

BOS = 1


@pytest.mark.parametrize("n_pred", [1, 5, 31, 32, 33, 100, 257, 1000, 1023])
@pytest.mark.parametrize("win, stride", [(32, 32), (32, 16), (32, 7), (32, 1), (64, 64), (64, 5), (128, 64)])
def test_every_prediction_scored_exactly_once(tg, n_pred, win, stride):
    counts = torch.zeros(n_pred, dtype=torch.int64)
    windows = tg.sliding_windows(n_pred, win, stride)
    for k, (start, length, first) in enumerate(windows):
        assert 0 <= start and start + length <= n_pred and length <= win and 0 <= first < length
        counts[start + first:start + length] += 1
        if k:  # every later window gives its scored tokens as much left context as it can
            assert first >= min(win - stride, start + first) and length == min(win, n_pred)
    assert (counts == 1).all()


@pytest.fixture(scope="module")
def setup(tg):
    cfg = tiny_cfg(tg, EVAL_BATCH_SEQS=3, TTT_EVAL_SEQ_LEN=32, TTT_CHUNK_SIZE=8, TTT_LORA_LR=0.05,
                   TTT_TARGETS="q,v,o,up,down,head")
    torch.manual_seed(0)
    model = randomize(tg.build_model(cfg, cpu(tg))).eval()
    g = torch.Generator().manual_seed(5)
    tokens = torch.randint(2, 128, (641,), generator=g)
    for pos in (0, 40, 41, 150, 151, 152, 400):  # documents of many lengths, some empty
        tokens[pos] = BOS
    lut = tg.ByteLUT(torch.randint(1, 4, (128,), generator=g).to(torch.int16), torch.rand(128, generator=g) < 0.3,
                     torch.arange(128) < 2)
    return cfg, model, tokens, lut


def test_sliding_covers_the_tail_and_matches_per_token_sum(tg, setup):
    cfg, model, tokens, lut = setup
    r = tg.evaluate_sliding(model, tokens, lut, cfg, cpu(tg), stride=8, keep_per_token=True)
    assert r.tokens == len(tokens) - 1 and not r.per_token.isnan().any()
    assert r.loss == pytest.approx(r.per_token.mean().item(), rel=1e-9)
    assert r.bytes == int(lut.count(tokens[:-1].long(), tokens[1:].long()).sum())


def test_stride_equal_to_window_is_the_non_overlapping_eval(tg, setup):
    cfg, model, tokens, lut = setup
    t = tokens[:32 * 20 + 1]  # a whole number of windows: the non-overlapping eval drops nothing
    a = tg.evaluate(model, t, lut, cfg, cpu(tg))
    b = tg.evaluate_sliding(model, t, lut, cfg, cpu(tg), stride=32)
    assert a.tokens == b.tokens and a.bytes == b.bytes
    assert a.loss == pytest.approx(b.loss, rel=1e-6) and a.bpb == pytest.approx(b.bpb, rel=1e-6)


def test_smaller_stride_gives_more_context(tg, setup):
    cfg, model, tokens, lut = setup
    r32 = tg.evaluate_sliding(model, tokens, lut, cfg, cpu(tg), stride=32, keep_per_token=True)
    r4 = tg.evaluate_sliding(model, tokens, lut, cfg, cpu(tg), stride=4, keep_per_token=True)
    assert torch.equal(r32.per_token[:32], r4.per_token[:32])  # the first window is shared
    assert not torch.equal(r32.per_token, r4.per_token)


def test_document_spans_tile_the_predictions(tg, setup):
    _, _, tokens, _ = setup
    spans = tg.document_spans(tokens, BOS)
    covered = torch.zeros(len(tokens) - 1, dtype=torch.int64)
    for s, e in spans:
        covered[s:e] += 1
        assert tokens[s] == BOS or s == 0
    assert (covered == 1).all()
    no_bos_start = tokens.clone()
    no_bos_start[0] = 7
    assert tg.document_spans(no_bos_start, BOS)[0][0] == 0


def test_ttt_scores_every_prediction_once_and_adapts(tg, setup):
    cfg, model, tokens, lut = setup
    r = tg.evaluate_ttt(model, tokens, lut, cfg, cpu(tg), print, keep_per_token=True)
    assert r.tokens == len(tokens) - 1 and not r.per_token.isnan().any()
    assert r.loss == pytest.approx(r.per_token.mean().item(), rel=1e-9)
    assert all(p.requires_grad for p in model.parameters())  # the model is handed back trainable
    # Without updates (lr 0) TTT is plain in-document scoring; with updates it differs.
    frozen = tg.evaluate_ttt(model, tokens, lut, tg.Config(**{**cfg.__dict__, "ttt_lora_lr": 0.0}), cpu(tg), print,
                             keep_per_token=True)
    assert not torch.equal(frozen.per_token, r.per_token)


def test_ttt_is_score_first(tg, setup):
    """Legality: perturbing the tokens after position t leaves every score up to t unchanged,
    with TTT on: no update ever sees a token before it has been scored."""
    cfg, model, tokens, lut = setup
    base = tg.evaluate_ttt(model, tokens, lut, cfg, cpu(tg), print, keep_per_token=True).per_token
    g = torch.Generator().manual_seed(9)
    for t in (20, 45, 160, 300, 500):
        changed = tokens.clone()
        changed[t + 1:] = torch.randint(2, 128, (len(tokens) - t - 1,), generator=g)
        changed[(changed == BOS) & (torch.arange(len(tokens)) > t)] = 5
        out = tg.evaluate_ttt(model, changed, lut, cfg, cpu(tg), print, keep_per_token=True).per_token
        # prediction p scores token p+1: predictions 0..t-1 only involve tokens 0..t
        assert torch.allclose(out[:t], base[:t], atol=1e-5, rtol=0), t
        assert not torch.allclose(out[t:], base[t:])


def test_ttt_gains_on_the_sample(tg):
    """On real text, adapting to each document's scored prefix helps an undertrained model."""
    import sentencepiece as spm
    cfg = tiny_cfg(tg, VOCAB_SIZE=1024, TTT_EVAL_SEQ_LEN=64, TTT_CHUNK_SIZE=32, TTT_LORA_LR=0.03, EVAL_BATCH_SEQS=8)
    sp = spm.SentencePieceProcessor(model_file=str(SAMPLE / "sotu_1024_bpe.model"))
    lut = tg.build_byte_lut(sp, 1024)
    tokens = tg.load_shard(SAMPLE / "sotu_val_000000.bin")[:4097]
    model = tg.build_model(cfg, cpu(tg))
    on = tg.evaluate_ttt(model, tokens, lut, cfg, cpu(tg), print)
    off = tg.evaluate_ttt(model, tokens, lut, tg.Config(**{**cfg.__dict__, "ttt_lora_lr": 0.0}), cpu(tg), print)
    assert on.bpb < off.bpb - 0.05


def test_compiled_eval_never_recompiles_after_prewarm(tg, setup):
    """Ragged last batches are padded, so each eval runs one graph; prewarm_eval builds exactly
    those graphs (shapes, strides, grad mode and train/eval mode), so the scored evals compile
    nothing inside the eval budget. The padded compiled evals equal the eager ones."""
    cfg, model, tokens, lut = setup
    cfg = cfg.__class__(**{**cfg.__dict__, "val_batch_size": 8 * 32 * 6, "eval_batch_seqs": 4})  # 6 rows per forward
    assert (len(tokens) - 1) // 32 % 6 and len(tg.sliding_windows(len(tokens) - 1, 32, 16)) % 4  # ragged last batches
    graphs = []

    def counting_backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    compiled = torch.compile(model, backend=counting_backend, dynamic=False, fullgraph=True)
    tg.prewarm_eval(compiled, cfg, cpu(tg), len(tokens))
    # non-overlapping batch shape; sliding batch with the first window (all logits) and the
    # later ones (logits of the last stride positions only)
    assert len(graphs) == 3
    a = tg.evaluate(compiled, tokens, lut, cfg, cpu(tg))
    b = tg.evaluate_sliding(compiled, tokens, lut, cfg, cpu(tg), stride=cfg.eval_stride)
    assert len(graphs) == 3
    ea, eb = tg.evaluate(model, tokens, lut, cfg, cpu(tg)), tg.evaluate_sliding(model, tokens, lut, cfg, cpu(tg), stride=16)
    assert (a.tokens, a.bytes, b.tokens, b.bytes) == (ea.tokens, ea.bytes, eb.tokens, eb.bytes) == (640, a.bytes, 640, b.bytes)
    assert a.loss == pytest.approx(ea.loss, rel=1e-6) and b.loss == pytest.approx(eb.loss, rel=1e-6)
    torch._dynamo.reset()
