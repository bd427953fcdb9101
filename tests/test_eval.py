"""Sliding-window and score-first TTT evaluation: exactly-once coverage, equivalences, legality."""
import pytest
import torch

from conftest import SAMPLE, compile_counting_graphs
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


# Small TTT settings: 2 documents per batch, 16-token chunks, 32-token context, rank-4 adapters
# on every target, 2 global phases over 2 and 4 documents. The 7 documents (lengths 40, 1, 109,
# 1, 1, 248, 240) make 4 batches handed out longest first: [248], [109, 240], [1, 40], [1, 1];
# phase 1 runs after 2 batches on (41,150) and (400,640), phase 2 after 3 on those and (151,152),
# (0,40). TTT_PHASE_EXTRA_BATCHES=0: the plan does not depend on the number of ranks.
TTT_ENV = dict(TTT_BATCH_SIZE=2, TTT_EVAL_SEQ_LEN=32, TTT_CHUNK_SIZE=16, TTT_LORA_LR=0.05, TTT_LORA_RANK=4,
               TTT_LORA_ALPHA=8, TTT_TARGETS="q,k,v,o,mlp,up,down,head", TTT_WARM_START_A=0, TTT_BETA1=0.9,
               PHASED_TTT_NUM_PHASES=2, PHASED_TTT_PREFIX_DOCS=4, GLOBAL_TTT_LR=0.05, GLOBAL_TTT_CHUNK_TOKENS=64,
               TTT_PHASE_EXTRA_BATCHES=0)
PHASE_DOCS = [[(41, 150), (400, 640)], [(151, 152), (0, 40), (41, 150), (400, 640)]]

def with_(tg, cfg, **kw):
    return tg.Config(**{**cfg.__dict__, **kw})


@pytest.fixture(scope="module")
def setup(tg):
    cfg = tiny_cfg(tg, **TTT_ENV)
    torch.manual_seed(0)
    model = randomize(tg.build_model(cfg, cpu(tg))).eval()
    g = torch.Generator().manual_seed(5)
    tokens = torch.randint(2, 128, (641,), generator=g)
    for pos in (0, 40, 41, 150, 151, 152, 400):  # documents of many lengths, some empty
        tokens[pos] = BOS
    lut = tg.ByteLUT(torch.randint(1, 4, (128,), generator=g).to(torch.int16), torch.rand(128, generator=g) < 0.3,
                     torch.arange(128) < 2)
    return cfg, model, tokens, tg.lut_target_bytes(tokens, lut), lut


def test_sliding_covers_the_tail_and_matches_per_token_sum(tg, setup):
    cfg, model, tokens, vb, lut = setup
    r = tg.evaluate_sliding(model, tokens, vb, cfg, cpu(tg), stride=8, keep_per_token=True)
    assert r.tokens == len(tokens) - 1 and not r.per_token.isnan().any()
    assert r.loss == pytest.approx(r.per_token.mean().item(), rel=1e-9)
    assert r.bytes == int(lut.count(tokens[:-1].long(), tokens[1:].long()).sum())


def test_stride_equal_to_window_is_the_non_overlapping_eval(tg, setup):
    cfg, model, tokens, vb, lut = setup
    t = tokens[:32 * 20 + 1]  # a whole number of windows: the non-overlapping eval drops nothing
    a = tg.evaluate(model, t, vb, cfg, cpu(tg))
    b = tg.evaluate_sliding(model, t, vb, cfg, cpu(tg), stride=32)
    assert a.tokens == b.tokens and a.bytes == b.bytes
    assert a.loss == pytest.approx(b.loss, rel=1e-6) and a.bpb == pytest.approx(b.bpb, rel=1e-6)


def test_smaller_stride_gives_more_context(tg, setup):
    cfg, model, tokens, vb, lut = setup
    r32 = tg.evaluate_sliding(model, tokens, vb, cfg, cpu(tg), stride=32, keep_per_token=True)
    r4 = tg.evaluate_sliding(model, tokens, vb, cfg, cpu(tg), stride=4, keep_per_token=True)
    # the first window is shared (to float rounding: batched with other windows, its matmuls may sum in another order)
    torch.testing.assert_close(r32.per_token[:32], r4.per_token[:32], rtol=0, atol=1e-5)
    assert not torch.equal(r32.per_token, r4.per_token)


def test_document_spans_tile_the_predictions(tg, setup):
    _, _, tokens, _, _ = setup
    spans = tg.document_spans(tokens, BOS)
    covered = torch.zeros(len(tokens) - 1, dtype=torch.int64)
    for s, e in spans:
        covered[s:e] += 1
        assert tokens[s] == BOS or s == 0
    assert (covered == 1).all()
    no_bos_start = tokens.clone()
    no_bos_start[0] = 7
    assert tg.document_spans(no_bos_start, BOS)[0][0] == 0


def ttt(tg, model, tokens, lut, cfg, trace=None, log=print, **kw):
    """Per-token TTT scores; the model's weights are restored afterwards (phases change them)."""
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        return tg.evaluate_ttt(model, tokens, tg.lut_target_bytes(tokens, lut), with_(tg, cfg, **kw), cpu(tg), log, keep_per_token=True, trace=trace)
    finally:
        model.load_state_dict(saved)


def test_queue_and_phases_follow_the_record(tg):
    """The record's plan on its 50,000 validation documents: batches of 64 cut from the
    shortest (the longest 16 make a short batch, handed out first), longest batch first;
    phases of 833/1,666/2,500 documents. On 8 ranks they run after 21/34/47 batches, i.e. after
    1,296/2,128/2,960 documents scored (the record's log: pd:1296, 2128, 2960); on one rank
    after 14/27/40. Each trains on the shortest of the documents scored by then."""
    spans, s = [], 0
    for n in torch.randperm(50_000, generator=torch.Generator().manual_seed(0)).tolist():
        spans.append((s, s + 10 + n))
        s += 10 + n
    cfg = tiny_cfg(tg, TTT_BATCH_SIZE=64, PHASED_TTT_NUM_PHASES=3, PHASED_TTT_PREFIX_DOCS=2500)
    queue = tg.ttt_queue(spans, cfg)
    assert [len(d) for _, d in queue[:2]] == [16, 64] and queue[0][0] == 781 and len(queue) == 782
    longest = [max(e - s for s, e in d) for _, d in queue]
    assert longest == sorted(longest, reverse=True)
    for world, points in ((8, [21, 34, 47]), (1, [14, 27, 40])):
        phases = tg.ttt_phases(queue, len(spans), cfg, world)
        assert [p for p, _ in phases] == points and [len(d) for _, d in phases] == [833, 1666, 2500]
        for point, docs in phases:
            scored = sorted((e - s for _, d in queue[:point] for s, e in d))
            assert sorted(e - s for s, e in docs) == scored[:len(docs)]
    assert [p for p, _ in tg.ttt_phases(queue, len(spans), tg.Config(**{**cfg.__dict__, "ttt_phase_extra_batches": 3}), 8)] == [17, 30, 43]
    short = queue[:47]  # 2,960 documents: phase 3 would run after the last batch, helping no document
    assert [p for p, _ in tg.ttt_phases(short, sum(len(d) for _, d in short), cfg, 8)] == [21, 34]
    assert tg.ttt_phases(queue, len(spans), tg.Config(**{**cfg.__dict__, "phased_ttt_num_phases": 0}), 8) == []


def test_ttt_contexts_are_exact(tg):
    """Chunk c of a batch runs at the record's context (c+1)*TTT_CHUNK_SIZE up to
    TTT_EVAL_SEQ_LEN, shorter only when every live row ends sooner; the rows are the batch's
    documents (no padding rows)."""
    cfg = tiny_cfg(tg, TTT_CHUNK_SIZE=48, TTT_EVAL_SEQ_LEN=2048)
    plan = tg.ttt_chunk_plan([(0, 100), (500, 3000)], cfg, adapt=True)
    assert [L for *_, L in plan] == [min((c + 1) * 48, 2048) for c in range(53)]
    assert [L for *_, L in tg.ttt_chunk_plan([(0, 100), (200, 250)], cfg, adapt=True)] == [48, 96, 100]
    assert len(plan[0][0]) == 2 and tg.ttt_batch_work([(0, 100)], cfg, True) == 48 + 96 + 100


def test_global_phase_lr_schedule(tg):
    """The record's per-chunk schedule: a cosine from GLOBAL_TTT_LR over n_chunks - 1 (the
    last chunk is never trained, so the last LR used is small but not 0); with
    GLOBAL_TTT_WARMUP_CHUNKS=w a linear rise from GLOBAL_TTT_WARMUP_START_LR reaching GLOBAL_TTT_LR
    at chunk w-1, then the cosine over the rest."""
    import math
    plain = tiny_cfg(tg, GLOBAL_TTT_LR=1e-3)
    assert [tg.global_ttt_lr(plain, c, 131) for c in (0, 65, 129)] == pytest.approx(
        [1e-3, 0.5e-3, 1e-3 * 0.5 * (1 + math.cos(math.pi * 129 / 130))])
    warm = tiny_cfg(tg, GLOBAL_TTT_LR=1e-3, GLOBAL_TTT_WARMUP_CHUNKS=2, GLOBAL_TTT_WARMUP_START_LR=1e-4)
    assert [tg.global_ttt_lr(warm, c, 7) for c in range(6)] == pytest.approx(
        [1e-4, 1e-3] + [1e-3 * 0.5 * (1 + math.cos(math.pi * k / 4)) for k in range(4)])


@pytest.mark.parametrize("kw", [{}, dict(ttt_warm_start_a=True, ttt_batch_size=1)])
def test_ttt_scores_every_prediction_once_and_adapts(tg, setup, kw):
    cfg, model, tokens, vb, lut = setup
    trace = []
    r = ttt(tg, model, tokens, lut, cfg, trace, **kw)
    assert r.tokens == len(tokens) - 1 and not r.per_token.isnan().any()
    assert r.loss == pytest.approx(r.per_token.mean().item(), rel=1e-9)
    assert r.bytes == int(lut.count(tokens[:-1].long(), tokens[1:].long()).sum())
    counts = torch.zeros(len(tokens) - 1, dtype=torch.int64)
    for kind, lo, hi in trace:
        if kind == "score":
            counts[lo:hi] += 1
    assert (counts == 1).all()  # every prediction scored exactly once
    assert all(p.requires_grad for p in model.parameters())  # the model is handed back trainable
    frozen = ttt(tg, model, tokens, lut, cfg, ttt_lora_lr=0.0, global_ttt_lr=0.0, **kw)
    assert not torch.allclose(frozen.per_token, r.per_token)  # the updates change the scores


@pytest.mark.parametrize("kw", [dict(ttt_warm_start_a=True), {}])
def test_no_update_reads_an_unscored_prediction(tg, setup, kw):
    """Every adapter step and every global step trains only on predictions already scored; the
    two phases run on their documents (the record's order) and the last batch comes after."""
    cfg, model, tokens, vb, lut = setup
    trace, lines = [], []
    ttt(tg, model, tokens, lut, cfg, trace, log=lines.append, **kw)
    scored = torch.zeros(len(tokens) - 1, dtype=torch.bool)
    for kind, lo, hi in trace:
        if kind == "score":
            assert not scored[lo:hi].any()
            scored[lo:hi] = True
        else:
            assert scored[lo:hi].all(), (kind, lo, hi)
    assert sum("ttt_phase:" in line for line in lines) == 2
    phase_trains = [ev[1:] for ev in trace if ev[0] == "train" and ev[1:] in {d for p in PHASE_DOCS for d in p}]
    assert phase_trains[:2] == PHASE_DOCS[0] and phase_trains[2:] == PHASE_DOCS[1]
    last_train = max(i for i, ev in enumerate(trace) if ev == ("train", 400, 640))
    assert {ev[1:] for ev in trace[last_train + 1:]} == {(40, 41), (150, 151)}  # the last batch, after phase 2


@pytest.mark.parametrize("kw", [{}, dict(phased_ttt_num_phases=0, ttt_batch_size=1, ttt_grad_steps=2)])
def test_ttt_is_score_first(tg, setup, kw):
    """Legality: changing a document's tokens after offset t (its length kept, so the plan is
    the same) leaves its scores up to t unchanged, and those of every batch scored before its
    own (the record's order: by length, so document lengths set the order, never content):
    no update, per-document or global, ever sees a token before it has been scored."""
    cfg, model, tokens, vb, lut = setup
    cfg = with_(tg, cfg, **kw)
    base = ttt(tg, model, tokens, lut, cfg).per_token
    queue = tg.ttt_queue(tg.document_spans(tokens, BOS), cfg)
    g = torch.Generator().manual_seed(9)
    for t in (160, 300, 420, 600):
        (s, e), = [d for d in tg.document_spans(tokens, BOS) if d[0] <= t < d[1]]
        changed = tokens.clone()
        changed[t + 1:e] = torch.randint(2, 128, (e - t - 1,), generator=g)
        out = ttt(tg, model, changed, lut, cfg).per_token
        assert torch.allclose(out[s:t], base[s:t], atol=1e-5, rtol=0), t  # prediction p scores token p+1
        own = next(i for i, (_, docs) in enumerate(queue) if (s, e) in docs)
        for _, docs in queue[:own]:
            for a, b in docs:
                assert torch.allclose(out[a:b], base[a:b], atol=1e-5, rtol=0), (t, a, b)
        assert not torch.allclose(out[t:e], base[t:e])


def test_adapters_restart_per_document(tg, setup):
    """Without warm start a document's scores do not depend on the documents batched with it;
    with warm start only B restarts, so a full batch after another full one differs."""
    cfg, model, tokens, vb, lut = setup
    one = ttt(tg, model, tokens, lut, cfg, ttt_batch_size=1, phased_ttt_num_phases=0).per_token
    two = ttt(tg, model, tokens, lut, cfg, phased_ttt_num_phases=0).per_token
    assert torch.allclose(one, two, atol=1e-5, rtol=0)
    warm = ttt(tg, model, tokens, lut, cfg, phased_ttt_num_phases=0, ttt_warm_start_a=True).per_token
    queue = tg.ttt_queue(tg.document_spans(tokens, BOS), cfg)  # [248] (short batch: fresh), [109, 240], [1, 40], [1, 1]
    first_full = torch.zeros(len(tokens) - 1, dtype=torch.bool)
    for lo, hi in queue[0][1] + queue[1][1]:
        first_full[lo:hi] = True
    assert torch.allclose(warm[first_full], two[first_full], atol=1e-6, rtol=0)
    assert not torch.allclose(warm[~first_full], two[~first_full], atol=1e-4, rtol=0)


def test_lr0_is_plain_in_document_scoring(tg, setup):
    """With both learning rates 0 (phases and weight decay still run) each prediction gets
    the plain score of its chunk's window: in-document context of up to TTT_EVAL_SEQ_LEN."""
    cfg, model, tokens, vb, lut = setup
    r = ttt(tg, model, tokens, lut, cfg, ttt_lora_lr=0.0, global_ttt_lr=0.0, ttt_warm_start_a=True)
    ref = torch.full((len(tokens) - 1,), float("nan"), dtype=torch.float64)
    with torch.no_grad():
        for s, e in tg.document_spans(tokens, BOS):
            for a in range(s, e, cfg.ttt_chunk_size):
                z = min(a + cfg.ttt_chunk_size, e)
                w0 = max(s, z - cfg.ttt_eval_seq_len)
                x, y = tokens[None, w0:z].long(), tokens[None, w0 + 1:z + 1].long()
                ref[a:z] = tg.token_nll(model, x, y)[0, a - w0:].double()
    assert torch.allclose(r.per_token, ref, atol=1e-5, rtol=0)


def test_budget_projection_drops_phases_then_adaptation(tg, setup):
    """A projected eval over EVAL_BUDGET_SECONDS drops the global phases (last first) at the
    first phase point, and a rank projecting over it with no phase left scores the rest without
    adaptation; every prediction is still scored once and the decisions are logged."""
    cfg, model, tokens, vb, lut = setup
    lines, trace = [], []
    r = ttt(tg, model, tokens, lut, cfg, trace, log=lines.append, eval_budget_seconds=0.0)
    assert r.tokens == len(tokens) - 1 and not r.per_token.isnan().any()
    drops = [line for line in lines if "dropping global phase" in line]
    assert [d.split("phase ")[1].split(":")[0] for d in drops] == ["2", "1"]
    assert any("without adaptation" in line for line in lines) and not any("ttt_phase:" in line for line in lines)
    trains = {ev[1:] for ev in trace if ev[0] == "train"}
    adapted = [(152, 400), (41, 150), (400, 640)]  # the two batches before the phase point, where the phases were dropped
    assert trains and all(any(a <= lo and hi <= b for a, b in adapted) for lo, hi in trains)
    lines.clear()
    ttt(tg, model, tokens, lut, cfg, log=lines.append, eval_budget_seconds=1e6)
    assert not any("ttt_budget" in line for line in lines) and sum("ttt_phase:" in line for line in lines) == 2


def test_ttt_gains_on_the_sample(tg):
    """On real text, adapting to each document's scored prefix helps an undertrained model."""
    import sentencepiece as spm
    cfg = tiny_cfg(tg, VOCAB_SIZE=1024, TTT_EVAL_SEQ_LEN=64, TTT_CHUNK_SIZE=32, TTT_LORA_LR=0.03, TTT_BATCH_SIZE=1,
                   TTT_LORA_RANK=8, TTT_LORA_ALPHA=0, TTT_TARGETS="q,v,head", TTT_BETA1=0.9, TTT_BETA2=0.95,
                   TTT_WEIGHT_DECAY=0, TTT_WARM_START_A=0, PHASED_TTT_NUM_PHASES=0)
    sp = spm.SentencePieceProcessor(model_file=str(SAMPLE / "sotu_1024_bpe.model"))
    tokens = tg.load_shard(SAMPLE / "sotu_val_000000.bin")[:4097]
    vb = tg.lut_target_bytes(tokens, tg.build_byte_lut(sp, 1024))
    model = tg.build_model(cfg, cpu(tg))
    on = tg.evaluate_ttt(model, tokens, vb, cfg, cpu(tg), print)
    off = tg.evaluate_ttt(model, tokens, vb, tg.Config(**{**cfg.__dict__, "ttt_lora_lr": 0.0}), cpu(tg), print)
    assert on.bpb < off.bpb - 0.05


def test_compiled_ttt_never_recompiles_after_prewarm(tg, setup):
    """prewarm_ttt builds every TTT graph (adapters over dynamic row counts and exact context
    lengths, forward and backward, and the global-SGD step) on random tokens; the phased TTT
    eval (a one-document batch, contexts 16 and 32 and shorter ones) then compiles nothing, and
    its scores equal the eager ones."""
    cfg, model, tokens, vb, lut = setup
    compiled, graphs = compile_counting_graphs(model)
    tg.prewarm_ttt(compiled, cfg, cpu(tg))
    built = len(graphs)
    assert built == 2  # adapters at every context length and row count (dynamic sizes), and the global step
    a = ttt(tg, compiled, tokens, lut, cfg, ttt_warm_start_a=True)
    assert len(graphs) == built
    b = ttt(tg, model, tokens, lut, cfg, ttt_warm_start_a=True)
    assert torch.allclose(a.per_token, b.per_token, atol=1e-4, rtol=0)
    torch._dynamo.reset()


def test_compiled_eval_never_recompiles_after_prewarm(tg, setup):
    """Ragged last batches are padded, so each eval runs one graph; prewarm_eval builds exactly
    those graphs (shapes, strides, grad mode and train/eval mode), so the scored evals compile
    nothing inside the eval budget. The padded compiled evals equal the eager ones."""
    cfg, model, tokens, vb, lut = setup
    cfg = cfg.__class__(**{**cfg.__dict__, "val_batch_size": 8 * 32 * 6, "eval_batch_seqs": 4})  # 6 rows per forward
    assert (len(tokens) - 1) // 32 % 6 and len(tg.sliding_windows(len(tokens) - 1, 32, 16)) % 4  # ragged last batches
    compiled, graphs = compile_counting_graphs(model)
    tg.prewarm_eval(compiled, cfg, cpu(tg), len(tokens))
    # non-overlapping batch shape; sliding batch with the first window (all logits) and the
    # later ones (logits of the last stride positions only)
    assert len(graphs) == 3
    a = tg.evaluate(compiled, tokens, vb, cfg, cpu(tg))
    b = tg.evaluate_sliding(compiled, tokens, vb, cfg, cpu(tg), stride=cfg.eval_stride)
    assert len(graphs) == 3
    ea, eb = tg.evaluate(model, tokens, vb, cfg, cpu(tg)), tg.evaluate_sliding(model, tokens, vb, cfg, cpu(tg), stride=16)
    assert (a.tokens, a.bytes, b.tokens, b.bytes) == (ea.tokens, ea.bytes, eb.tokens, eb.bytes) == (640, a.bytes, 640, b.bytes)
    assert a.loss == pytest.approx(ea.loss, rel=1e-6) and b.loss == pytest.approx(eb.loss, rel=1e-6)
    torch._dynamo.reset()


def test_ttt_scores_the_looped_model(tg, setup):
    """With depth recurrence TTT goes through the model's own forward, so it scores (and
    adapts) the looped network: with learning rates 0 it equals the looped plain score and
    differs from the unlooped one; with updates it stays score-first."""
    _, _, tokens, _, lut = setup
    cfg = tiny_cfg(tg, **{**TTT_ENV, "NUM_LOOPS": 1, "LOOP_START": 1, "LOOP_END": 1, "PHASED_TTT_NUM_PHASES": 0})
    torch.manual_seed(0)
    model = randomize(tg.build_model(cfg, cpu(tg))).eval()
    assert model.looping
    frozen = ttt(tg, model, tokens, lut, cfg, ttt_lora_lr=0.0).per_token
    doc = tokens[None, 152:185].long()  # one chunk-sized window of a long document, no earlier context
    with torch.no_grad():
        looped = tg.token_nll(model, doc[:, :16], doc[:, 1:17])[0].double()
        tg.set_looping(model, False)
        plain = tg.token_nll(model, doc[:, :16], doc[:, 1:17])[0].double()
        tg.set_looping(model, True)
    assert torch.allclose(frozen[152:168], looped, atol=1e-5, rtol=0) and not torch.allclose(looped, plain, atol=1e-3)
    base = ttt(tg, model, tokens, lut, cfg).per_token
    changed = tokens.clone()
    changed[301:] = 7
    assert torch.allclose(ttt(tg, model, changed, lut, cfg).per_token[:300], base[:300], atol=1e-5, rtol=0)


def test_ttt_adapters_per_virtual_slot(tg, setup):
    """With depth recurrence each virtual layer slot gets its own adapters (the record's 17 for
    11 blocks): a block run twice has two independent adapter sets, each getting its own
    gradient. TTT_LORA_PER_SLOT=0 shares one set per block; without looping both are the same."""
    cfg = tiny_cfg(tg, **{**TTT_ENV, "NUM_LOOPS": 1, "LOOP_START": 1, "LOOP_END": 1, "PHASED_TTT_NUM_PHASES": 0})
    torch.manual_seed(0)
    model = randomize(tg.build_model(cfg, cpu(tg))).eval()
    assert tg.virtual_layers(cfg, True) == [0, 1, 1, 2]
    lora = tg.make_lora(model, cfg, 2, torch.device("cpu"))
    targets = len(cfg.ttt_target_list) - 1  # all but the head
    assert len(lora) == 4 * targets + 1 and {k.rsplit(".", 1)[0] for k in lora} == {"slots.0", "slots.1", "slots.2", "slots.3", "head"}
    for _, B in lora.values():  # B = 0 is a no-op whatever A: perturb B to see each slot's effect
        B.data.normal_(0, 0.05)
    x = torch.randint(0, 128, (2, 16))
    tg.token_nll(model, x, x, tg.scaled_lora(lora, cfg)).sum().backward()
    g1, g2 = lora["slots.1.q"][1].grad, lora["slots.2.q"][1].grad  # block 1's two passes
    assert g1.abs().sum() > 0 and g2.abs().sum() > 0 and not torch.allclose(g1, g2)
    shared = tg.make_lora(model, with_(tg, cfg, ttt_lora_per_slot=False), 2, torch.device("cpu"))
    assert {k.rsplit(".", 1)[0] for k in shared} == {"blocks.0", "blocks.1", "blocks.2", "head"}
    tg.set_looping(model, False)
    unlooped = tg.make_lora(model, cfg, 2, torch.device("cpu"))
    assert [A for A, _ in unlooped.values()] and all(torch.equal(a[0], b[0]) for a, b in zip(unlooped.values(), shared.values()))


TTT_DIST_DRIVER = """
import sys, time
import torch
sys.path.insert(0, {repo!r})
import train_gpt as tg

saved = torch.load({data!r})
ctx = tg.setup_distributed()
cfg = tg.Config(**saved["cfg"])
model = tg.GPT(cfg, max_len=cfg.max_len).eval()
model.load_state_dict(saved["state"])
plain = tg.ttt_score_batch
claimed = []

def slow_rank_1(model, tokens, nbytes, cfg, ctx, docs, *args):  # rank 1 takes longer: rank 0 claims more batches
    claimed.append(docs)
    plain(model, tokens, nbytes, cfg, ctx, docs, *args)
    time.sleep(3.0 * ctx.rank)

tg.ttt_score_batch = slow_rank_1
runs = []
for phases in (0, cfg.phased_ttt_num_phases):  # two evals in one process group: each its own counter
    trace, claimed[:] = [], []
    state = {{k: v.clone() for k, v in model.state_dict().items()}}
    c = tg.Config(**{{**cfg.__dict__, "phased_ttt_num_phases": phases}})
    r = tg.evaluate_ttt(model, saved["tokens"], saved["bytes"], c, ctx, print, keep_per_token=True, trace=trace)
    model.load_state_dict(state)
    runs.append(dict(per_token=r.per_token, trace=trace, bpb=r.bpb, tokens=r.tokens, claimed=list(claimed)))
torch.save(runs, {out!r} + f".{{ctx.rank}}")
tg.barrier(ctx)  # no rank leaves while the other still talks to the store (an abort at exit otherwise)
torch.distributed.destroy_process_group()
"""


def test_two_ranks_hand_out_batches_as_they_free_up(tg, setup, tmp_path):
    """Two gloo ranks under torchrun draw batches from one shared counter (the process group's
    store) as each frees up: without phases the slower rank scores fewer batches; with and
    without, every document is scored by exactly one rank, the phases run on both between the
    same batches, and the scores and bpb equal the single process's."""
    import subprocess
    import sys
    from conftest import REPO, clean_environ
    cfg, model, tokens, vb, lut = setup
    # One sequence per global chunk: a rank's share is then the whole step or nothing, as on one
    # process (2 sequences would be one packed row on one process, two rows on two ranks).
    cfg = with_(tg, cfg, global_ttt_chunk_tokens=32)
    data, out = tmp_path / "ttt.pt", tmp_path / "out"
    torch.save(dict(cfg=cfg.__dict__, state=model.state_dict(), tokens=tokens, bytes=vb), data)
    driver = tmp_path / "driver.py"
    driver.write_text(TTT_DIST_DRIVER.format(repo=str(REPO), data=str(data), out=str(out)))
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(driver)],
                          env=clean_environ() | {"OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    both = [torch.load(f"{out}.{r}") for r in (0, 1)]
    queue = [docs for _, docs in tg.ttt_queue(tg.document_spans(tokens, BOS), cfg)]
    for k, single in enumerate((ttt(tg, model, tokens, lut, cfg, phased_ttt_num_phases=0), ttt(tg, model, tokens, lut, cfg))):
        ranks = [both[0][k], both[1][k]]
        if k == 0:  # no phase to wait for: the faster rank takes more batches
            assert len(ranks[0]["claimed"]) > len(ranks[1]["claimed"]) >= 1
        assert sorted(map(str, ranks[0]["claimed"] + ranks[1]["claimed"])) == sorted(map(str, queue))
        counts = torch.zeros(len(tokens) - 1, dtype=torch.int64)
        for r in ranks:
            for kind, lo, hi in r["trace"]:
                counts[lo:hi] += kind == "score"
        assert (counts == 1).all()
        merged = torch.where(ranks[0]["per_token"].isnan(), ranks[1]["per_token"], ranks[0]["per_token"])
        assert not merged.isnan().any() and torch.allclose(merged, single.per_token, atol=1e-6, rtol=0)
        assert ranks[0]["bpb"] == ranks[1]["bpb"] == pytest.approx(single.bpb, rel=1e-9) and ranks[0]["tokens"] == single.tokens
    assert proc.stdout.count("ttt_phase:") == 4  # 2 phases, logged by each rank


def test_sliding_eval_and_prewarm_report_progress(tg, setup):
    """The sliding eval logs a line every ~10% of its windows with elapsed and projected time,
    and prewarm_eval a line per graph it builds: long CPU evals and compiles are not silent.
    The progress lines do not change the score."""
    cfg, model, tokens, vb, lut = setup
    cfg = with_(tg, cfg, eval_batch_seqs=4)  # 39 batches of windows
    lines = []
    quiet = tg.evaluate_sliding(model, tokens, vb, cfg, cpu(tg), stride=4)
    loud = tg.evaluate_sliding(model, tokens, vb, cfg, cpu(tg), stride=4, log=lines.append)
    assert (quiet.loss, quiet.bpb) == (loud.loss, loud.bpb)
    n = len(tg.sliding_windows(len(tokens) - 1, cfg.window_len, 4))
    assert 8 <= len(lines) <= 10, lines
    for line in lines:
        m = __import__("re").fullmatch(r"sliding_progress:(\d+)/(\d+) elapsed:[\d.]+s projected_total:[\d.]+s", line)
        assert m and int(m.group(2)) == n and 0 < int(m.group(1)) < n, line
    lines.clear()
    tg.prewarm_eval(model, cfg, cpu(tg), len(tokens), log=lines.append)
    assert lines[0].startswith("eval_prewarm: compiling ") and lines[-1].startswith(f"eval_prewarm_graph:{len(lines) - 1}/")
