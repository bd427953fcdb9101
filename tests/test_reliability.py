"""Nothing lost, nothing wrong: degenerate settings, schedule ends, EMA on short runs, crafted
artifacts, optimizer caches and quantizer edge cases (each test failed on the code before
its fix)."""
import json
import struct

import numpy as np
import pytest
import torch

from test_model_and_muon import cpu, randomize, tiny_cfg


# --- degenerate or absurd settings are config errors, not torch tracebacks ---

@pytest.mark.parametrize("env, pattern", [
    ({"EMA_DECAY": "1.0"}, r"EMA_DECAY=1.0: must be < 1.0"),      # exported the untrained init
    ({"BETA1": "1"}, r"BETA1=1.0: must be < 1.0"),                # failed inside torch's AdamW
    ({"BETA2": "1.0"}, r"BETA2=1.0: must be < 1.0"),
    ({"MUON_MOMENTUM": "1"}, r"MUON_MOMENTUM=1.0: must be < 1.0"),
    ({"QAT_START_FRAC": "1"}, r"QAT_START_FRAC=1.0: must be < 1.0"),  # would fire after the last step
    ({"SEED": str(2**64)}, r"SEED=18446744073709551616: must be <= 4294967295"),  # C++ overflow in manual_seed
    ({"MLP_MULT": "1e12"}, r"the model would have about 5.77e\+18 parameters"),   # allocator crash
])
def test_degenerate_and_absurd_values_are_rejected(tg, env, pattern):
    with pytest.raises(ValueError, match=pattern):
        tg.Config.from_env(env)


# --- the warmdown and late QAT happen whichever end of training comes first ---

def test_warmdown_and_qat_follow_iterations_when_they_end_training_before_the_cap(tg):
    """A 600 s cap and 100 iterations at 1 ms/step: the run ends at step 100 after 0.1 s. The
    warmdown and late QAT used to follow the cap's clock only, so neither happened."""
    cfg = tg.Config.from_env({"ITERATIONS": "100", "WARMDOWN_ITERS": "20", "MAX_WALLCLOCK_SECONDS": "600",
                              "QAT_START_FRAC": "0.9"})
    assert tg.lr_scale(cfg, 50, 50.0) == 1.0
    assert tg.lr_scale(cfg, 90, 90.0) == pytest.approx(0.5)
    assert tg.lr_scale(cfg, 100, 100.0) == 0.0
    assert tg.progress(cfg, 90, 90.0) == pytest.approx(0.9)
    # The cap binding first is unchanged: 100 ms/step against a 10 s cap, 9000 iterations.
    timed = tg.Config.from_env({"MAX_WALLCLOCK_SECONDS": "10", "WARMDOWN_ITERS": "20"})
    assert tg.lr_scale(timed, 90, 9000) == pytest.approx(0.5) and tg.progress(timed, 90, 9000) == pytest.approx(0.9)


# --- EMA: no share of the init on a short run, today's average on a long one ---

def ema_run(tg, decay, values, bias_corrected=True):
    cfg = tiny_cfg(tg, EMA_DECAY=decay)
    model = tg.build_model(cfg, cpu(tg))
    p = model.skip_weights
    with torch.no_grad():
        p.fill_(10.0)  # the "init"
    av = tg.WeightAverager(model, cfg)
    for step, v in enumerate(values, 1):
        with torch.no_grad():
            p.fill_(float(v))
        av.update(step, 1.0)
    av.swap_in()
    return p.detach()[0, 0].item()


def test_short_run_ema_exports_no_init(tg):
    """5 updates at decay 0.9 with the weights at 1.0: the uncorrected EMA exported
    0.9^5 = 59% of the init value 10 (6.3); the bias-corrected one exports 1.0."""
    assert ema_run(tg, 0.9, [1.0] * 5) == pytest.approx(1.0, abs=1e-6)


def test_long_run_ema_equals_the_uncorrected_average(tg):
    """At full length the correction is 1 - decay^n ~ 1: the same average as the plain EMA
    started from the init (computed here in float64)."""
    values = [float(np.sin(i / 50.0)) for i in range(1, 2001)]
    plain = 10.0
    for v in values:
        plain = 0.99 * plain + 0.01 * v
    assert ema_run(tg, 0.99, values) == pytest.approx(plain, abs=1e-5)


# --- a crafted artifact header is a ValueError, never a TypeError/KeyError/IndexError ---

@pytest.fixture(scope="module")
def artifact_blob(tg):
    cfg = tiny_cfg(tg, NUM_LAYERS=1, BIGRAM_VOCAB_SIZE=0)
    model = randomize(tg.build_model(cfg, cpu(tg)))
    roles = {n: p.role for n, p in model.named_parameters()}
    return tg.encode_artifact(tg.quantize_state(model.state_dict(), roles, cfg), "bitpack")[0]


def crafted(tg, blob, edit):
    hlen = struct.unpack("<I", blob[4:8])[0]
    header = json.loads(tg.decompress(blob[8:8 + hlen]))
    header = edit(header)
    h = tg.compress(json.dumps(header).encode())
    return tg.ARTIFACT_MAGIC + struct.pack("<I", len(h)) + h + blob[8 + hlen:]


def set_in(path, value):
    def edit(h):
        target = h
        for k in path[:-1]:
            target = target[k]
        target[path[-1]] = value
        return h
    return edit


@pytest.mark.parametrize("edit", [
    lambda h: [h],                                    # TypeError: list indices
    set_in(["frames"], "x"),                          # TypeError in the frame loop
    set_in(["frames", 0, "size"], "12"),              # TypeError: int + str
    lambda h: (h["tensors"][0].pop("bits"), h)[1],    # KeyError
    set_in(["tensors", 0, "frame"], 99),              # IndexError
    set_in(["tensors", 0, "shape"], ["a"]),           # TypeError in np.prod
    set_in(["tensors", 0, "shape"], [2**40, 2**40]),  # np.prod wraps around
    lambda h: (next(e for e in h["tensors"] if "scales" in e).update(scales=5), h)[1],  # TypeError: cannot unpack
], ids=["list", "frames-str", "size-str", "no-bits", "frame-index", "shape-str", "shape-huge", "range-int"])
def test_crafted_headers_raise_value_error(tg, artifact_blob, edit):
    tg.decode_artifact(crafted(tg, artifact_blob, lambda h: h), "x.art")  # the unedited header decodes
    with pytest.raises(ValueError, match=r"^x\.art: "):
        tg.decode_artifact(crafted(tg, artifact_blob, edit), "x.art")


# --- review findings: Muon caches, 8-bit packing, all-zero rows ---

def test_muon_caches_survive_a_state_dict_restore(tg):
    """The warmup restore (load_state_dict) replaces the param-group dicts; caches keyed by
    id(group) kept the old flat buffer alive next to a new one."""
    params = [torch.nn.Parameter(torch.randn(16, 8)) for _ in range(2)]
    opt = tg.Muon(params, lr=0.01, momentum=0.9, backend_steps=2, weight_decay=0.0, ctx=cpu(tg))
    for _ in range(2):
        for p in params:
            p.grad = torch.randn_like(p)
        opt.step()
        opt.load_state_dict(opt.state_dict())
    assert len(opt.flat) == 1 and len(opt.layouts) == 1


def test_bitpack_codes_are_offset_without_int8_overflow(tg, monkeypatch):
    """At 8 bits, codes + 127 overflowed int8 (127 + 127 -> -2) before the cast to unsigned;
    the packer must receive codes in [0, 2^bits)."""
    seen = []
    plain = tg.pack_bits

    def checked(u, bits):
        seen.append((int(u.min()), int(u.max()), bits))
        return plain(u, bits)

    monkeypatch.setattr(tg, "pack_bits", checked)
    w = torch.linspace(-1, 1, 256).reshape(2, 128)
    q, s = tg.quantize_rows(w, 8, "amax")
    qt = tg.Quantized("embed", 8, (2, 128), codes=q, scales=s)
    raw, entries = tg.pack_role([("w", qt)], "bitpack")
    assert seen == [(0, 254, 8)]
    blob, _ = tg.encode_artifact({"w": qt}, "bitpack")
    assert torch.equal(tg.decode_artifact(blob)["w"], q.float() * s.float()[:, None])


def test_all_zero_row_gets_a_usable_scale(tg):
    """An all-zero row had scale fp16(1e-8) = 0 and codes round(0/0) = NaN before the int8 cast."""
    w = torch.randn(3, 16)
    w[1] = 0
    for clip in ("amax", "search"):
        q, s = tg.quantize_rows(w, 6, clip)
        assert s[1] > 0 and torch.isfinite(s).all() and (q[1] == 0).all()
        assert torch.equal(tg.fake_quant(w, 6, clip)[1], torch.zeros(16))
