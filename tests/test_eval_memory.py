"""Eval batch sizing, scored-positions-only logits and the AUTOCAST knob."""
import pytest
import torch

from test_model_and_muon import cpu, randomize, tiny_cfg


def dist(tg, world):
    return tg.Dist(0, world, 0, torch.device("cpu"))


def test_eval_forward_tokens_do_not_depend_on_world_size(tg):
    """VAL_BATCH_SIZE/8 tokens per forward, as the official scripts' VAL_BATCH_SIZE //
    (world_size * grad_accum_steps): one process holds what one of eight GPUs holds."""
    cfg = tg.Config.from_env({})  # 524,288 tokens, seq 2048
    n_val = 62_021_632 + 1  # the FineWeb validation split
    rows = {w: tg.eval_batch_rows(cfg, dist(tg, w), n_val) for w in (1, 2, 4, 8)}
    assert set(rows.values()) == {524_288 // 8 // 2048}
    short = tg.Config.from_env({"TRAIN_SEQ_LEN": "64", "VAL_BATCH_SIZE": str(8 * 64 * 50)})
    assert tg.eval_batch_rows(short, dist(tg, 4), 64 * 20 + 1) == 5  # never more rows than a rank's share


def test_score_from_returns_the_tail_of_the_full_logits(tg):
    cfg = tiny_cfg(tg, AUTOCAST="off")
    model = randomize(tg.build_model(cfg, cpu(tg))).eval()
    x = torch.randint(0, 128, (3, 32))
    with torch.no_grad():
        full = model(x)
        for k in (1, 16, 31):
            # to float rounding: with one row left per sequence (k=31) the head's matmul takes
            # another BLAS path, whose sums differ by an ulp on some CPUs; a shifted row is off by O(1)
            torch.testing.assert_close(model(x, score_from=k), full[:, k:], rtol=0, atol=1e-5)


def naive_sliding(tg, model, tokens, lut, cfg, stride):
    """Every window through the full-logit forward, one at a time."""
    nats, nbytes, n = 0.0, 0, 0
    for start, length, first in tg.sliding_windows(len(tokens) - 1, cfg.window_len, stride):
        x = tokens[start:start + length][None].long()
        y = tokens[start + 1:start + length + 1][None].long()
        with torch.no_grad():
            nll = tg.token_nll(model, x, y)[0, first:]
        nats += nll.double().sum().item()
        nbytes += int(lut.count(x[:, first:], y[:, first:]).sum())
        n += len(nll)
    return nats / n, n, nbytes


@pytest.mark.parametrize("stride", [16, 5, 32])
def test_sliding_eval_with_tail_logits_equals_full_logits(tg, stride):
    cfg = tiny_cfg(tg, AUTOCAST="off", EVAL_BATCH_SEQS=4)
    model = randomize(tg.build_model(cfg, cpu(tg))).eval()
    g = torch.Generator().manual_seed(3)
    tokens = torch.randint(2, 128, (500,), generator=g)
    lut = tg.ByteLUT(torch.randint(1, 4, (128,), generator=g).to(torch.int16), torch.rand(128, generator=g) < 0.3,
                     torch.arange(128) < 2)
    r = tg.evaluate_sliding(model, tokens, tg.lut_target_bytes(tokens, lut), cfg, cpu(tg), stride=stride, keep_per_token=True)
    loss, n, nbytes = naive_sliding(tg, model, tokens, lut, cfg, stride)
    assert (r.tokens, r.bytes) == (n, nbytes) == (499, nbytes)
    assert r.loss == pytest.approx(loss, rel=1e-9)
    assert not r.per_token.isnan().any()


def test_autocast_knob_runs_cpu_matmuls_in_bf16(tg):
    """AUTOCAST=bf16 (the default) autocasts on CPU too; AUTOCAST=off is fp32 throughout.
    Master weights stay fp32 either way."""
    assert tg.Config.from_env({}).autocast == "bf16"
    x = torch.randn(4, 8)
    w = torch.randn(3, 8)
    for mode, dtype in (("bf16", torch.bfloat16), ("off", torch.float32)):
        cfg = tiny_cfg(tg, AUTOCAST=mode)
        with tg.autocast(cfg, cpu(tg)):
            assert torch.nn.functional.linear(x, w).dtype == dtype
        model = tg.build_model(cfg, cpu(tg))
        assert all(p.dtype == torch.float32 for p in model.parameters())
    with pytest.raises(ValueError, match="AUTOCAST"):
        tg.Config.from_env({"AUTOCAST": "fp16"})


def test_bf16_and_fp32_forward_agree_closely(tg):
    cfg16, cfg32 = tiny_cfg(tg, AUTOCAST="bf16"), tiny_cfg(tg, AUTOCAST="off")
    model = randomize(tg.build_model(cfg32, cpu(tg))).eval()
    x, y = torch.randint(0, 128, (2, 32)), torch.randint(0, 128, (2, 32))
    with torch.no_grad():
        with tg.autocast(cfg32, cpu(tg)):
            l32 = model(x, y).item()
        with tg.autocast(cfg16, cpu(tg)):
            l16 = model(x, y).item()
    assert l16 != l32 and l16 == pytest.approx(l32, rel=2e-2)
