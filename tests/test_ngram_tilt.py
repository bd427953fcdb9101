"""Token n-gram tilt (NGRAM_TILT_ENABLED): causal hints, a normalised tilted distribution, the
record's helper reproduced, and the eval paths that apply it."""
import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO, SAMPLE
from test_eval import setup, ttt, with_  # noqa: F401  (the shared tiny model fixture)
from test_model_and_muon import cpu, tiny_cfg

RECORD = REPO.parent / "shared" / "reference" / "records" / "2026-05-01_1.0565_pr2135"


def sample_tokens(tg) -> np.ndarray:
    return tg.load_shard(next(SAMPLE.glob("sotu_val_*.bin"))).numpy()[:60000]


def test_hints_read_only_earlier_tokens(tg):
    toks = sample_tokens(tg)
    for order in (16, 4, 2):
        hint, share = tg.ngram_hints(toks, order)
        assert (share >= 0.8).sum() > 50  # the check below is not vacuous: hints fire
        rng = np.random.default_rng(order)
        for k in (0, 1, order - 2, order, 777, 20000, 59780):
            changed = toks.copy()
            changed[k + 1:] = rng.integers(0, 1024, len(toks) - k - 1)  # the token prediction k scores, and after
            h2, s2 = tg.ngram_hints(changed, order)
            assert np.array_equal(h2[:k + 1], hint[:k + 1]) and np.array_equal(s2[:k + 1], share[:k + 1])


def test_tilted_distribution_sums_to_one(tg):
    g = torch.Generator().manual_seed(0)
    V, n = 50, 40
    logits = torch.randn(n, V, generator=g, dtype=torch.float64) * 3
    hint = torch.randint(0, V, (n,), generator=g)
    boost = torch.where(torch.rand(n, generator=g) < 0.7, 2.625, 0.0).double()
    logp = logits.log_softmax(-1)
    hint_nll = -logp.gather(1, hint[:, None])[:, 0]
    total = torch.zeros(n, dtype=torch.float64)
    for y in range(V):  # the tilted probability of every token of the vocabulary
        yy = torch.full((n,), y)
        total += torch.exp(-tg.tilt_nll(-logp[:, y], hint_nll, yy, hint, boost))
    assert torch.allclose(total, torch.ones(n, dtype=torch.float64), atol=1e-12)
    full = (logits + boost[:, None] * torch.nn.functional.one_hot(hint, V)).log_softmax(-1)  # boost, renormalise
    y = torch.randint(0, V, (n,), generator=g)
    assert torch.allclose(tg.tilt_nll(-logp.gather(1, y[:, None])[:, 0], hint_nll, y, hint, boost),
                          -full.gather(1, y[:, None])[:, 0], atol=1e-12)


def record_helper(tmp_path):
    """The record's online_ngram_tilt.py, imported from a copy in tmp_path (it builds its C state
    next to itself with gcc: never inside the reference folder)."""
    if not (RECORD / "online_ngram_tilt.py").is_file():
        pytest.skip("the 1.0565 record's reference files are not present")
    for name in ("online_ngram_tilt.py", "online_ngram_state.c"):
        shutil.copy(RECORD / name, tmp_path / name)
    spec = importlib.util.spec_from_file_location("record_online_ngram_tilt", tmp_path / "online_ngram_tilt.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("order, threshold", [(16, 0.8), (4, 0.5), (2, 0.3)])
def test_gain_equals_the_record_helper(tg, tmp_path, order, threshold):
    rec = record_helper(tmp_path)
    toks = sample_tokens(tg)
    targets = toks[1:].astype(np.uint16)
    pkg = rec.build_hints_for_targets(  # the record's command: token channel only
        target_token_ids_np=targets, tokenizer_path=str(SAMPLE / "sotu_1024_bpe.model"), vocab_size=1024,
        log0=lambda *_: None, token_order=order, token_threshold=threshold, token_boost=2.625,
        within_tau=99.0, within_boost=0.0, word_tau=99.0, word_boost=0.0, agree_add_boost=0.0)
    cfg = tiny_cfg(tg, VOCAB_SIZE=1024, NGRAM_TILT_ENABLED=1, TOKEN_ORDER=order, TOKEN_THRESHOLD=threshold)
    hint, boost = tg.ngram_tilt(torch.from_numpy(toks.astype(np.int64)), cfg, lambda *_: None)
    hint, boost = hint[:-1], boost[:-1]  # the padding entry
    assert np.array_equal(hint.numpy()[pkg["gate_mask"]], pkg["hint_ids"][pkg["gate_mask"]])
    assert np.array_equal(boost.numpy() > 0, pkg["gate_mask"]) and pkg["gate_mask"].sum() > 50
    # Both tilts on the same model scores: fixed random logits per prediction.
    g = torch.Generator().manual_seed(order)
    logits = torch.randn(len(targets), 1024, generator=g) * 2
    y = torch.from_numpy(targets.astype(np.int64))
    logits[torch.arange(len(y)), y] += 2.0  # a model that is often right
    model = lambda x: logits[None]  # noqa: E731  token_nll's model(x) -> logits
    nll, hint_nll = tg.token_nll(model, y[None], y[None], hint=hint[None])
    ours = (tg.tilt_nll(nll, hint_nll, y[None], hint[None], boost[None]) - nll).double().sum()
    ptl = torch.nn.functional.cross_entropy(logits, y, reduction="none")
    rh = torch.from_numpy(pkg["hint_ids"])
    log_q = logits.log_softmax(-1).gather(1, rh[:, None])[:, 0]
    theirs = (rec.apply_tilt_to_ptl_torch(ptl.double(), log_q.double(), y, rh, torch.from_numpy(pkg["gate_mask"]),
                                          torch.from_numpy(pkg["boost"])) - ptl.double()).sum()
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5, abs=1e-3)
    assert theirs.item() != 0


def test_sliding_eval_scores_the_tilted_softmax(tg, setup):
    cfg, model, tokens, vb, lut = setup
    cfg = with_(tg, cfg, ngram_tilt_enabled=True, token_order=2, token_threshold=0.2)
    hint, boost = tg.ngram_tilt(tokens, cfg, lambda *_: None)
    assert (boost > 0).sum() > 20
    n = 32 * 10
    t = tokens[:n + 1]
    r = tg.evaluate_sliding(model, t, vb, cfg, cpu(tg), stride=32, keep_per_token=True, tilt=(hint, boost))
    with torch.no_grad():  # stride = window: each window's logits, boosted at the hint, renormalised
        logits = model(t[:n].view(-1, 32)).reshape(n, -1).double()
    full = (logits + boost[:n, None].double() * torch.nn.functional.one_hot(hint[:n], logits.size(1))).log_softmax(-1)
    expect = -full.gather(1, t[1:, None])[:, 0]
    assert torch.allclose(r.per_token, expect, atol=1e-5)
    plain = tg.evaluate_sliding(model, t, vb, cfg, cpu(tg), stride=32, keep_per_token=True)
    assert not torch.allclose(plain.per_token, r.per_token)


def test_ttt_adapts_on_the_untilted_loss(tg, setup):
    cfg, model, tokens, vb, lut = setup
    cfg = with_(tg, cfg, ngram_tilt_enabled=True, token_order=2, token_threshold=0.2)
    hint, boost = tg.ngram_tilt(tokens, cfg, lambda *_: None)
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        tilted = tg.evaluate_ttt(model, tokens, vb, cfg, cpu(tg), print, keep_per_token=True, tilt=(hint, boost))
    finally:
        model.load_state_dict(saved)
    plain = ttt(tg, model, tokens, lut, cfg)
    fired = boost[:-1] > 0
    # Where no hint fires the scores are the untilted run's: the adapters and phases saw the same losses.
    assert torch.allclose(tilted.per_token[~fired], plain.per_token[~fired], atol=1e-5)
    assert not torch.allclose(tilted.per_token[fired], plain.per_token[fired], atol=1e-3)


def test_record_channel_names(tg):
    base = {"NGRAM_TILT_ENABLED": "1", "WITHIN_TAU": "99.0", "WITHIN_BOOST": "0.0", "WORD_TAU": "99.0",
            "WORD_BOOST": "0.0", "AGREE_ADD_BOOST": "0.0", "NGRAM_HINT_PRECOMPUTE_OUTSIDE": "0"}
    notes = []
    cfg = tg.Config.from_env(base, notes)  # the 1.0565 record's command: accepted, channels off
    assert cfg.ngram_tilt_enabled and cfg.token_order == 16 and len(notes) == 6
    for bad in ({"WITHIN_TAU": "0.45"}, {"WORD_TAU": "0.65"}, {"NGRAM_HINT_PRECOMPUTE_OUTSIDE": "1"},
                {"NGRAM_TILT_ENABLED": "1", "EVAL_STRIDE": "0"}, {"TOKEN_ORDER": "40"}):
        with pytest.raises(tg.ConfigError) as e:
            tg.Config.from_env({**base, **bad})
        assert next(iter(bad)) in str(e.value)
