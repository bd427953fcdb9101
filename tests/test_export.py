"""Artifact: quantize -> pack -> compress -> file -> read -> decode -> strict load; exact codes, clear errors."""
import pickle

import numpy as np
import pytest
import torch

from test_model_and_muon import cpu, randomize, tiny_cfg


@pytest.fixture
def setup(tg):
    # round to nearest: these tests are about storage (GPTQ's codes live on the same grid; tests/test_gptq.py)
    cfg = tiny_cfg(tg, TIE_EMBEDDINGS=0, QUANT_BITS_MLP=5, QUANT_BITS_HEAD=7, QUANT_BITS_BIGRAM=4, QUANT_METHOD="rtn")
    model = randomize(tg.build_model(cfg, cpu(tg)))
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    roles = {n: p.role for n, p in model.named_parameters()}
    return cfg, model, state, roles


def write_and_read(tg, qstate, packing, tmp_path):
    blob, _ = tg.encode_artifact(qstate, packing)
    path = tmp_path / f"model.{packing}"
    path.write_bytes(blob)
    return path, tg.decode_artifact(path.read_bytes())


@pytest.mark.parametrize("packing", ["int8", "bitpack"])
def test_roundtrip_codes_and_scales_are_exact(tg, setup, tmp_path, packing):
    cfg, _, state, roles = setup
    qstate = tg.quantize_state(state, roles, cfg)
    assert {q.bits for q in qstate.values()} == {4, 5, 6, 7, 8, 16}
    _, decoded = write_and_read(tg, qstate, packing, tmp_path)
    assert decoded.keys() == state.keys()
    for name, q in qstate.items():
        if q.bits == 16:
            assert torch.equal(decoded[name], state[name].half().float()), name
        else:
            Q = 2 ** (q.bits - 1) - 1
            assert q.codes.abs().max() <= Q and q.codes.dtype == torch.int8 and q.scales.dtype == torch.float16
            # Bitwise-equal dequantized values <=> the stored codes and fp16 scales survived exactly.
            expected = (q.codes.float() * q.scales.float()[:, None]).view(q.shape)
            assert torch.equal(decoded[name], expected), name


def test_bit_packing_roundtrip(tg):
    rng = np.random.default_rng(0)
    for bits in (4, 5, 6, 7, 8):
        u = rng.integers(0, 2 ** bits - 1, size=1001).astype(np.uint16)
        packed = tg.pack_bits(u, bits)
        assert len(packed) == (1001 * bits + 7) // 8
        assert np.array_equal(tg.unpack_bits(np.frombuffer(packed, np.uint8), bits, 1001), u)


def test_qat_fake_quant_is_exactly_the_export(tg):
    """One quantizer: the weights QAT trains against are the weights the artifact stores."""
    w = torch.randn(48, 80)
    for bits in (4, 5, 6, 8):
        for clip in ("amax", "search"):
            q, s = tg.quantize_rows(w, bits, clip)
            assert torch.equal(tg.fake_quant(w, bits, clip), q.float() * s.float()[:, None])


def test_clip_search_never_loses_to_amax(tg):
    w = torch.randn(64, 256) * torch.rand(64, 1)
    w[::7, 3] *= 12  # outliers, where clipping pays
    for bits in (4, 5, 6):
        err = {}
        for clip in ("amax", "search"):
            q, s = tg.quantize_rows(w, bits, clip)
            err[clip] = (q.float() * s.float()[:, None] - w).square().sum(1)
        assert (err["search"] <= err["amax"] + 1e-9).all() and err["search"].sum() < 0.99 * err["amax"].sum()


def test_pruning_zeroes_the_smallest_fraction(tg):
    w = torch.randn(100, 100)
    smallest = w.abs().flatten().sort().values[299]
    assert tg.prune_(w, 0.03) == 300 and (w == 0).sum() == 300 and (w.abs()[w != 0] > smallest).all()


def test_reloaded_model_loss_is_close(tg, setup, tmp_path):
    cfg, model, state, roles = setup
    path, _ = write_and_read(tg, tg.quantize_state(state, roles, cfg), "int8", tmp_path)
    reloaded = tg.load_artifact(path, cfg, cpu(tg))
    ids, tgt = torch.randint(0, 128, (4, 32)), torch.randint(0, 128, (4, 32))
    with torch.no_grad():
        a, b = model(ids, tgt).item(), reloaded(ids, tgt).item()
    assert abs(a - b) < 0.02 * a


def test_loading_never_unpickles(tg, setup, tmp_path, monkeypatch):
    cfg, _, state, roles = setup
    path, _ = write_and_read(tg, tg.quantize_state(state, roles, cfg), "bitpack", tmp_path)

    def forbidden(*a, **k):
        raise AssertionError("the artifact loader must not unpickle")
    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    tg.load_artifact(path, cfg, cpu(tg))


def test_strict_key_matching(tg, setup, tmp_path):
    cfg, _, state, roles = setup
    path, _ = write_and_read(tg, tg.quantize_state(state, roles, cfg), "int8", tmp_path)
    with pytest.raises(RuntimeError, match="lm_head"):
        tg.load_artifact(path, tiny_cfg(tg), cpu(tg))  # the tied model has no lm_head


def test_corrupt_and_truncated_artifacts_raise_clear_errors(tg, setup):
    cfg, _, state, roles = setup
    blob, _ = tg.encode_artifact(tg.quantize_state(state, roles, cfg), "bitpack")
    with pytest.raises(ValueError, match="bad magic"):
        tg.decode_artifact(b"NOPE" + blob[4:], "x.art")
    with pytest.raises(ValueError, match=r"x.art: truncated: the \w+ frame ends at byte"):
        tg.decode_artifact(blob[: len(blob) - 100], "x.art")
    with pytest.raises(ValueError, match="unexpected bytes after the last frame"):
        tg.decode_artifact(blob + b"\0", "x.art")
    hlen = int.from_bytes(blob[4:8], "little")
    with pytest.raises(ValueError, match="corrupt header"):
        tg.decode_artifact(blob[:8] + b"{" * hlen + blob[8 + hlen:], "x.art")
    flipped = bytearray(blob)
    flipped[len(blob) - 50] ^= 0xFF  # inside the last frame
    with pytest.raises(ValueError, match=r"x.art: (zstd decompression failed|the \w+ frame decompressed to)"):
        tg.decode_artifact(bytes(flipped), "x.art")


def test_export_keeps_the_smaller_packing_per_role_and_reports_budget(tg, setup, tmp_path):
    cfg, _, state, roles = setup
    lines = []
    blob = tg.export_artifact(state, roles, cfg, tmp_path / "a.art", lines.append)
    assert (tmp_path / "a.art").read_bytes() == blob
    budget = [dict(kv.split(":", 1) for kv in l.split()[1:]) for l in lines if l.startswith("budget role:")]
    assert {b["role"] for b in budget} == {"attn", "mlp", "proj", "embed", "bigram", "head", "scalar", "gate"}
    frames = 0
    for b in budget:
        if b["role"] == "scalar":
            assert b["chosen"] == "none" and b["bits"] == "16"
        else:  # both packings were compressed, and the smaller one kept
            assert int(b[f"{b['chosen']}_compressed_bytes"]) == min(int(b["int8_compressed_bytes"]), int(b["bitpack_compressed_bytes"]))
        frames += int(b[f"{b['chosen']}_compressed_bytes"])
    hlen = int.from_bytes(blob[4:8], "little")
    assert len(blob) == 8 + hlen + frames  # the per-role numbers add up to the file exactly


def test_label_names_the_real_format(tg):
    cfg = tg.Config.from_env({})
    assert tg.artifact_label(cfg, {"attn", "mlp", "embed", "gate", "scalar"}) == "int6-int8_brotli11"
    cfg = tg.Config.from_env({"QUANT_BITS_ATTN": "6", "QUANT_BITS_MLP": "5", "QUANT_BITS_EMBED": "16", "EXPORT_COMPRESSOR": "zstd"})
    assert tg.artifact_label(cfg, {"attn", "mlp", "embed", "scalar"}) == "int5-int6-fp16_zstd22"
    cfg = tg.Config.from_env({"MATRIX_BITS": "6", "EMBED_BITS": "7", "EXPORT_COMPRESSOR": "lzma"})
    assert tg.artifact_label(cfg, {"attn", "mlp", "embed", "bigram", "scalar"}) == "int6-int7_lzma9"


@pytest.mark.parametrize("compressor", ["brotli", "zstd", "lzma", "pergroup"])
def test_every_compressor_roundtrips_and_catches_corruption(tg, setup, compressor):
    cfg, _, state, roles = setup
    qstate = tg.quantize_state(state, roles, cfg)
    blob, _ = tg.encode_artifact(qstate, "auto", compressor)
    decoded = tg.decode_artifact(blob, "x.art")
    assert all(torch.equal(decoded[n], tg.dequantize(q)) for n, q in qstate.items())
    for pos in (len(blob) - 40, len(blob) - 400):  # inside the last frames: the codec or the CRC32 must notice
        flipped = bytearray(blob)
        flipped[pos] ^= 0x5A
        with pytest.raises(ValueError, match=r"x.art: .*(decompression failed|decompressed to|CRC32)"):
            tg.decode_artifact(bytes(flipped), "x.art")


def plant_templates(state):
    """Embedding rows near 4 templates: ZPAQ on sorted rows beats brotli, so an lrzip frame is written."""
    g, emb = torch.Generator().manual_seed(0), state["tok_emb"]
    base = 0.02 * torch.randn(4, emb.size(1), generator=g)
    state["tok_emb"] = base[torch.randint(4, (emb.size(0),), generator=g)] + 1e-3 * torch.randn(emb.shape, generator=g)


def test_pergroup_roundtrip_is_exact_sorted_and_deterministic(tg, setup):
    """EXPORT_COMPRESSOR=pergroup: quantized roles in lrzip frames with L1-sorted, column-major
    codes, the rest brotli; decoded weights identical to brotli's, and the same bytes every time."""
    cfg, _, state, roles = setup
    plant_templates(state)
    qstate = tg.quantize_state(state, roles, cfg)
    blob, report = tg.encode_artifact(qstate, "auto", "pergroup")
    assert blob == tg.encode_artifact(qstate, "auto", "pergroup")[0]
    assert all(r["sizes"][r["chosen"]][1] == min(z for _, z in r["sizes"].values()) for r in report)
    decoded, plain = tg.decode_artifact(blob), tg.decode_artifact(tg.encode_artifact(qstate, "auto", "brotli")[0])
    assert decoded.keys() == plain.keys() and all(torch.equal(decoded[n], plain[n]) for n in plain)
    header = __import__("json").loads(tg.decompress(blob[8:8 + int.from_bytes(blob[4:8], "little")]))
    packing = {f["role"]: f["packing"] for f in header["frames"]}
    assert packing["embed"] == "sorted" and packing["scalar"] == "none"
    assert "tok_emb" in {e["name"] for e in header["tensors"] if "perm" in e}
    assert tg.frame_codec("pergroup", "sorted") == "lrzip" and tg.frame_codec("pergroup", "int8") == "brotli"
    assert tg.artifact_file_label(blob) == "int4-int5-int6-int7-int8_pergroup9"
    assert {e["role"] for e in header["tensors"] if "perm" in e} <= set(tg.SORTED_ROLES) == {"embed", "head"}


def test_l1_order_walks_to_the_nearest_row(tg):
    rng = np.random.default_rng(0)
    values = np.concatenate([[0], rng.permutation(np.arange(1, 40))])
    rows = (values[:, None] + np.zeros((1, 8), int)).astype(np.int8)  # row i: 8 copies of values[i]
    order = tg.l1_order(rows)
    assert order.dtype == np.uint16 and list(values[order]) == list(range(40))


def test_pergroup_without_lrzip_falls_back_on_export_and_names_the_package_on_read(tg, setup, tmp_path, monkeypatch):
    cfg, _, state, roles = setup
    cfg = tg.dataclasses.replace(cfg, export_compressor="pergroup")
    plant_templates(state)
    blob = tg.encode_artifact(tg.quantize_state(state, roles, cfg), "auto", "pergroup")[0]
    monkeypatch.setenv("PATH", str(tmp_path))  # no lrzip
    logs = []
    out = tg.export_artifact(state, roles, cfg, tmp_path / "m.art", logs.append)
    assert any(m.startswith("WARNING: EXPORT_COMPRESSOR=pergroup but no lrzip binary") for m in logs)
    assert tg.artifact_file_label(out).endswith("_brotli11") and "format:int4-int5-int6-int7-int8_brotli11" in logs[-1]
    assert tg.artifact_label(cfg, set(roles.values())).endswith("_brotli11")
    with pytest.raises(RuntimeError, match=r"^x.art: EXPORT_COMPRESSOR=pergroup needs the lrzip binary .*Debian package lrzip"):
        tg.decode_artifact(blob, "x.art")


def test_missing_brotli_is_a_clear_error(tg, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "brotli", None)
    with pytest.raises(RuntimeError, match="EXPORT_COMPRESSOR=brotli needs the brotli package"):
        tg.compress(b"abc", "brotli")
