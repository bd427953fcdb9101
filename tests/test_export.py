"""Artifact: quantize -> compress -> file -> read -> decode -> strict load, exact codes, clear errors."""
import pickle

import pytest
import torch

from test_model_and_muon import cpu, randomize, tiny_cfg


@pytest.fixture
def model_and_state(tg):
    model = randomize(tg.build_model(tiny_cfg(tg, TIE_EMBEDDINGS=0), cpu(tg)))
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    roles = {n: p.role for n, p in model.named_parameters()}
    return model, state, roles


def roundtrip(tg, state, roles, tmp_path):
    path = tmp_path / "model.int8_zstd22"
    path.write_bytes(tg.compress(tg.encode_state(state, roles)))
    return path, tg.decode_state(tg.decompress(path.read_bytes()))


def test_roundtrip_codes_and_scales_are_exact(tg, model_and_state, tmp_path):
    model, state, roles = model_and_state
    _, decoded = roundtrip(tg, state, roles, tmp_path)
    assert decoded.keys() == state.keys()
    for name, w in state.items():
        enc = tg.ENCODING_BY_ROLE[roles[name]]
        if enc == "int8_row":
            q, s = tg.quantize_int8_rows(w.reshape(w.size(0), -1))
            assert q.abs().max() <= 127 and q.dtype == torch.int8 and s.dtype == torch.float16
            # Bitwise equal dequantized values <=> the stored int8 codes and fp16 scales survived exactly.
            assert torch.equal(decoded[name], tg.dequantize_int8_rows(q, s).view(w.shape)), name
        else:
            assert enc == "fp16" and torch.equal(decoded[name], w.half().float()), name


def test_quantization_error_is_bounded_per_row(tg):
    w = torch.randn(64, 48) * torch.rand(64, 1) * 3
    q, s = tg.quantize_int8_rows(w)
    err = (tg.dequantize_int8_rows(q, s) - w).abs()
    # Round-to-nearest: at most half a step (plus fp16 rounding of the scale).
    assert (err <= s.float()[:, None] * 0.5 + w.abs() * 1e-3 + 1e-6).all()


def test_reloaded_model_loss_is_close(tg, model_and_state, tmp_path):
    model, state, roles = model_and_state
    cfg = tiny_cfg(tg, TIE_EMBEDDINGS=0)
    path, _ = roundtrip(tg, state, roles, tmp_path)
    reloaded = tg.load_artifact(path, cfg, cpu(tg))
    ids, tgt = torch.randint(0, 128, (4, 32)), torch.randint(0, 128, (4, 32))
    with torch.no_grad():
        a, b = model(ids, tgt).item(), reloaded(ids, tgt).item()
    assert abs(a - b) < 0.01 * a


def test_loading_never_unpickles(tg, model_and_state, tmp_path, monkeypatch):
    model, state, roles = model_and_state
    path, _ = roundtrip(tg, state, roles, tmp_path)

    def forbidden(*a, **k):
        raise AssertionError("the artifact loader must not unpickle")
    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    tg.load_artifact(path, tiny_cfg(tg, TIE_EMBEDDINGS=0), cpu(tg))


def test_strict_key_matching(tg, model_and_state, tmp_path):
    _, state, roles = model_and_state
    path, _ = roundtrip(tg, state, roles, tmp_path)
    with pytest.raises(RuntimeError, match="lm_head"):
        tg.load_artifact(path, tiny_cfg(tg, TIE_EMBEDDINGS=1), cpu(tg))  # tied model has no lm_head


def test_corrupt_and_truncated_artifacts_raise_clear_errors(tg, model_and_state, tmp_path):
    _, state, roles = model_and_state
    raw = tg.encode_state(state, roles)
    blob = tg.compress(raw)
    with pytest.raises(ValueError, match="zstd decompression failed.*truncated or corrupt"):
        tg.decompress(blob[: len(blob) // 2], "x.art")
    with pytest.raises(ValueError, match="bad magic"):
        tg.decode_state(b"NOPE" + raw[4:])
    with pytest.raises(ValueError, match="outside the payload"):
        tg.decode_state(raw[: len(raw) - 100])
    hlen = int.from_bytes(raw[4:8], "little")
    with pytest.raises(ValueError, match="corrupt header"):
        tg.decode_state(raw[:8] + b"{" * hlen + raw[8 + hlen:])


def test_label_names_the_real_format(tg):
    assert tg.artifact_label() == "int8_zstd22"
