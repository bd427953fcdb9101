"""GPTQ, SDClip, the records' bit names and LQER: layer-output error, equivalences, storage, clear errors."""
import json
import struct

import pytest
import torch

from test_model_and_muon import cpu, randomize, tiny_cfg


def output_error(X, W, codes, scales):
    """||X W^T - X W_quant^T||^2: what GPTQ minimizes."""
    return float((X @ (W - codes.float() * scales.view(-1, 1)).T).square().sum())


def layer_cases():
    """(name, X, W): a random layer, and trained-like ones (correlated, heavy-channel inputs;
    rows with different scales and a few outlier weights, as trained matrices have)."""
    g = torch.Generator().manual_seed(0)
    cases = [("random", torch.randn(512, 64, generator=g), torch.randn(32, 64, generator=g))]
    for i in range(3):
        c = 96
        mix = torch.randn(c, c, generator=g) / c ** 0.5 + 0.3 * torch.eye(c)
        X = torch.randn(1024, c, generator=g) @ mix
        X[:, torch.randperm(c, generator=g)[:6]] *= 6  # a few massive activation channels
        W = torch.randn(48, c, generator=g) * (0.02 + 0.03 * torch.rand(48, 1, generator=g))
        W[torch.randint(0, 48, (8,), generator=g), torch.randint(0, c, (8,), generator=g)] *= 8
        cases.append((f"trained_like{i}", X, W))
    return cases


@pytest.mark.parametrize("clip, k", [("amax", 0.0), ("search", 0.0), ("sdclip", 12.85)])
@pytest.mark.parametrize("bits", [4, 6, 7])
def test_gptq_output_error_never_exceeds_round_to_nearest(tg, bits, clip, k):
    for name, X, W in layer_cases():
        s = tg.row_scales(W, bits, clip, k)
        Q = 2 ** (bits - 1) - 1
        rtn = torch.clamp(torch.round(W / s), -Q, Q)
        for act_order, block in ((True, 128), (False, 16)):
            q = tg.gptq_quantize(W, X.T @ X, s, bits, 0.01, block, act_order)
            assert q.dtype == torch.int8 and q.abs().max() <= Q
            e_gptq, e_rtn = output_error(X, W, q, s), output_error(X, W, rtn, s)
            assert e_gptq <= e_rtn, (name, act_order, e_gptq, e_rtn)
            if name != "random":  # correlated inputs: GPTQ must win by a wide margin
                assert e_gptq < 0.8 * e_rtn, (name, act_order, e_gptq, e_rtn)


@pytest.mark.parametrize("clip, k", [("amax", 0.0), ("search", 0.0), ("sdclip", 12.85)])
def test_gptq_with_identity_hessian_is_round_to_nearest(tg, clip, k):
    W = torch.randn(40, 70) * 0.03
    for bits in (4, 5, 6, 7, 8):
        q_rtn, s_rtn = tg.quantize_rows(W, bits, clip, k)
        s = tg.row_scales(W, bits, clip, k)
        for block in (128, 7):
            assert torch.equal(tg.gptq_quantize(W, 3.0 * torch.eye(70), s, bits, 0.01, block, True), q_rtn)
        assert torch.equal(s.squeeze(1).half(), s_rtn)


def test_dead_columns_and_an_indefinite_hessian(tg):
    W, X = torch.randn(8, 16), torch.randn(64, 16)
    X[:, 3] = 0  # a column that never sees input is stored as 0
    s = tg.row_scales(W, 6, "amax")
    assert (tg.gptq_quantize(W, X.T @ X, s, 6, 0.01, 128, True)[:, 3] == 0).all()
    with pytest.raises(ValueError, match="not positive definite.*GPTQ_DAMP"):
        tg.gptq_quantize(W, -torch.eye(16), s, 6, 0.0, 128, True)


def test_sdclip_scale_is_k_std_over_levels_and_qat_uses_it(tg):
    W = torch.randn(16, 200) * torch.linspace(0.01, 0.1, 16)[:, None]
    for bits, k in ((6, 12.85), (7, 15.0), (5, 6.0)):
        Q = 2 ** (bits - 1) - 1
        q, s = tg.quantize_rows(W, bits, "sdclip", k)
        assert torch.equal(s, (k * W.std(dim=1) / Q).half())
        assert torch.equal(tg.fake_quant(W, bits, "sdclip", k), q.float() * s.float()[:, None])
    with pytest.raises(ValueError, match="sdclip needs a positive clip k"):
        tg.quantize_rows(W, 6, "sdclip", 0.0)


def test_hessian_aware_sdclip_widens_important_rows(tg):
    W, H = torch.randn(8, 32) * 0.02, torch.eye(32)
    W[2] *= 3  # larger |W| on the same inputs: more important
    imp = tg.hessian_importance(W, H, 0.01, 0.175)
    assert imp.mean().item() == pytest.approx(1.0, abs=1e-6) and imp.argmax() == 2
    assert torch.equal(tg.hessian_importance(W, H, 0.01, 0.0), torch.ones(8))


def test_record_bit_names_and_clip_knobs_map_onto_roles(tg):
    cfg = tg.Config.from_env({"MATRIX_BITS": "6", "EMBED_BITS": "7", "QUANT_BITS_ATTN": "5"})
    assert [cfg.bits(r) for r in ("attn", "mlp", "embed", "proj", "bigram")] == [6, 6, 7, 6, 6]
    cfg = tg.Config.from_env({"QUANT_BITS_ATTN": "7", "QUANT_BITS_MLP": "6", "QUANT_BITS_EMBED": "7"})
    assert [cfg.bits(r) for r in ("attn", "mlp", "embed")] == [7, 6, 7]
    cfg = tg.Config.from_env({"ATTN_CLIP_SIGMAS": "0", "MLP_CLIP_SIGMAS": "11.5", "MATRIX_CLIP_SIGMAS": "12",
                              "EMBED_CLIP_SIGMAS": "14", "QUANT_CLIP": "sdclip"})
    assert [cfg.clip_sigmas(r) for r in ("attn", "mlp", "embed", "head", "proj", "bigram")] == [12, 11.5, 14, 14, 12, 12]
    for env, msg in (({"QUANT_CLIP": "sdclip", "EMBED_CLIP_SIGMAS": "0"}, "EMBED_CLIP_SIGMAS > 0"),
                     ({"QUANT_METHOD": "gptq", "GPTQ_RESERVE_SECONDS": "600"}, "GPTQ_RESERVE_SECONDS=600.0 leaves no training time"),
                     ({"HESSIAN_CLIP_LAMBDA": "0.2", "QUANT_METHOD": "rtn"}, "HESSIAN_CLIP_LAMBDA needs QUANT_METHOD=gptq"),
                     ({"GPTQ_RESERV_SECONDS": "1"}, "did you mean GPTQ_RESERVE_SECONDS"),
                     ({"MATRIX_BITS": "3"}, "MATRIX_BITS=3: must be one of")):
        with pytest.raises(ValueError, match=msg):
            tg.Config.from_env(env)
    gptq = tg.Config.from_env({"QUANT_METHOD": "gptq", "GPTQ_RESERVE_SECONDS": "8"})
    assert gptq.train_cap_seconds == 592.0 and tg.Config.from_env({"QUANT_METHOD": "rtn", "GPTQ_RESERVE_SECONDS": "8"}).train_cap_seconds == 600.0


def calibrated(tg, **kw):
    cfg = tiny_cfg(tg, QUANT_METHOD="gptq", **kw)
    model = randomize(tg.build_model(cfg, cpu(tg)))
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randint(0, 128, (4, 32), generator=g), torch.randint(0, 128, (4, 32), generator=g)) for _ in range(3)]
    hs, n = tg.collect_hessians(model, batches, cpu(tg))
    return cfg, model, hs, n


def test_hessians_hook_every_matrix_input_and_the_head_input(tg):
    cfg, model, hs, n = calibrated(tg)
    assert n == 3 and model.training  # train mode restored, hooks removed
    assert all(not m._forward_pre_hooks for m in model.modules())
    quantized = {name for name, p in model.named_parameters() if p.ndim == 2 and cfg.bits(p.role) < 16 and p.role != "gate"}
    assert set(hs) == quantized - {"bigram.table"}  # the bigram table is only looked up; the sparse gate rounds per row
    for name, H in hs.items():
        cols = dict(model.named_parameters())[name].size(1)
        assert H.shape == (cols, cols) and torch.allclose(H, H.T) and torch.linalg.eigvalsh(H).min() > -1e-3
    tokens = 4 * 32
    # The tied head's input is the final RMS norm (each row has squared norm d), so tr H = tokens * d;
    # block i's attention input is the norm scaled by 1/sqrt(i+1).
    assert torch.trace(hs["tok_emb"]).item() == pytest.approx(tokens * 64, rel=1e-3)
    assert torch.trace(hs["blocks.2.attn.c_q.weight"]).item() == pytest.approx(tokens * 64 / 3, rel=1e-3)
    untied = calibrated(tg, TIE_EMBEDDINGS=0)[2]
    assert "lm_head" in untied and "tok_emb" not in untied


def test_q_k_v_share_one_hessian_equal_to_their_own(tg):
    """c_q, c_k and c_v read the same tensor: one H serves all three, computed once, and it
    equals the X^T X each would get from its own input; the other matrices keep their own."""
    cfg, model, hs, n = calibrated(tg)
    inputs: dict[str, list] = {}
    handles = [m.register_forward_pre_hook(lambda _m, a, name=name: inputs.setdefault(name, []).append(a[0].detach().clone()))
               for name, m in tg.hessian_targets(model).items()]
    model.eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _ in range(3):
            x, y = torch.randint(0, 128, (4, 32), generator=g), torch.randint(0, 128, (4, 32), generator=g)
            model(x, y)
    for h in handles:
        h.remove()
    for name, xs in inputs.items():
        X = torch.cat([x.reshape(-1, x.size(-1)).float() for x in xs])
        assert torch.allclose(hs[name], X.T @ X / n, rtol=1e-5, atol=1e-4), name
    for i in range(3):
        q, k, v, o = (hs[f"blocks.{i}.attn.{m}.weight"] for m in ("c_q", "c_k", "c_v", "proj"))
        assert k is q and v is q and o is not q  # one tensor, accumulated and all-reduced once
    assert len({id(H) for H in hs.values()}) == len(hs) - 2 * 3


def test_gptq_export_lowers_the_model_output_error(tg):
    """A whole model: GPTQ's per-layer output errors on the calibration data are below RTN's."""
    cfg, model, hs, _ = calibrated(tg, QUANT_BITS_ATTN=4, QUANT_BITS_MLP=4, QUANT_BITS_EMBED=5)
    state, roles = model.state_dict(), {n: p.role for n, p in model.named_parameters()}
    lines = []
    g = tg.quantize_state(state, roles, cfg, lines.append, hs)
    r = tg.quantize_state(state, roles, tiny_cfg(tg, QUANT_METHOD="rtn", QUANT_BITS_ATTN=4, QUANT_BITS_MLP=4, QUANT_BITS_EMBED=5))
    assert any(l.startswith("gptq matrices:") and "rtn_no_hessian:bigram.table" in l for l in lines)
    for name, H in hs.items():
        W = state[name].float()
        err = {k: torch.trace((W - tg.dequantize(q[name])) @ H @ (W - tg.dequantize(q[name])).T).item() for k, q in (("g", g), ("r", r))}
        assert err["g"] <= err["r"], (name, err)
    with pytest.raises(ValueError, match="QUANT_METHOD=gptq needs calibration Hessians"):
        tg.quantize_state(state, roles, cfg)


# ---- LQER

def lqer_setup(tg, tmp_path, **kw):
    cfg = tiny_cfg(tg, QUANT_METHOD="rtn", LQER_ENABLED=1, QUANT_BITS_ATTN=4, QUANT_BITS_MLP=4, **kw)
    model = randomize(tg.build_model(cfg, cpu(tg)))
    state, roles = model.state_dict(), {n: p.role for n, p in model.named_parameters()}
    return cfg, model, state, roles


def test_lqer_corrects_the_largest_errors_and_reloads_exactly(tg, tmp_path):
    cfg, model, state, roles = lqer_setup(tg, tmp_path, LQER_TOP_K=2, LQER_RANK=3, LQER_ASYM_GROUP=40)
    lines = []
    qs = tg.quantize_state(state, roles, cfg, lines.append)
    plain = tg.quantize_state(state, roles, tiny_cfg(tg, QUANT_METHOD="rtn", QUANT_BITS_ATTN=4, QUANT_BITS_MLP=4))
    err = {n: (state[n].float() - tg.dequantize(q)).norm().item() for n, q in plain.items() if q.bits < 16}
    top = sorted(err, key=lambda n: -err[n])[:2]
    assert sorted(n for n, q in qs.items() if q.lqer is not None) == sorted(top)
    assert any(l.startswith("lqer rank:3 factor_bits:2/4 group:40") for l in lines)
    for n in top:
        lr = qs[n].lqer
        assert lr.a.shape == (qs[n].codes.size(0), 3) and lr.a.min() >= -2 and lr.a.max() <= 1
        assert lr.b.min() >= -8 and lr.b.max() <= 7 and lr.b_scales.numel() == -(-lr.b.numel() // 40)
        assert (state[n].float() - tg.dequantize(qs[n])).norm().item() < err[n]
        assert torch.equal(qs[n].codes, plain[n].codes)  # LQER adds to the codes, it does not change them
    for packing in ("int8", "bitpack"):
        blob, _ = tg.encode_artifact(qs, packing)
        path = tmp_path / f"m.{packing}"
        path.write_bytes(blob)
        reloaded = tg.load_artifact(path, cfg, cpu(tg))
        for n, q in qs.items():  # what is loaded is exactly what was quantized (and scored)
            expected = tg.dequantize(q)
            if q.lqer is not None:
                lr = q.lqer
                b = (lr.b.float().reshape(-1) * lr.b_scales.float().repeat_interleave(40)[:lr.b.numel()]).view(lr.b.shape)
                assert torch.equal(expected, (q.codes.float() * q.scales.float()[:, None] + (lr.a.float() * lr.a_scale.float()) @ b).view(q.shape))
            assert torch.equal(dict(reloaded.named_parameters())[n].detach(), expected.view_as(state[n])), n
    assert len(tg.encode_artifact(qs, "int8")[0]) > len(tg.encode_artifact(plain, "int8")[0])


def split_artifact(tg, blob):
    hlen = struct.unpack("<I", blob[4:8])[0]
    import zstandard
    header = json.loads(zstandard.ZstdDecompressor().decompress(blob[8:8 + hlen]))
    frames, offset = [], 8 + hlen
    for f in header["frames"]:
        frames.append(bytearray(zstandard.ZstdDecompressor().decompress(blob[offset:offset + f["size"]])))
        offset += f["size"]
    return header, frames


def join_artifact(tg, header, frames):
    import zlib
    blobs = [tg.compress(bytes(f)) for f in frames]
    for f, b, raw in zip(header["frames"], blobs, frames):
        f["size"], f["crc32"] = len(b), zlib.crc32(bytes(raw))  # a consistent file whose content is wrong
    h = tg.compress(json.dumps(header).encode())
    return tg.ARTIFACT_MAGIC + struct.pack("<I", len(h)) + h + b"".join(blobs)


def test_corrupt_lqer_entries_raise_clear_errors(tg, tmp_path):
    cfg, _, state, roles = lqer_setup(tg, tmp_path, LQER_TOP_K=1)
    blob, _ = tg.encode_artifact(tg.quantize_state(state, roles, cfg), "int8")
    header, frames = split_artifact(tg, blob)
    assert join_artifact(tg, header, frames) == blob  # the helpers rebuild the file exactly
    idx = next(i for i, e in enumerate(header["tensors"]) if "lqer" in e)
    name = header["tensors"][idx]["name"]

    def corrupted(edit):
        h, fr = split_artifact(tg, blob)
        edit(h["tensors"][idx], h, fr)
        return join_artifact(tg, h, fr)

    cases = [
        (lambda e, h, fr: e["lqer"].update(rank=10 ** 6), "invalid LQER header"),
        (lambda e, h, fr: e["lqer"].update(bits=1), "invalid LQER header"),
        (lambda e, h, fr: e["lqer"].update(group=0), "invalid LQER header"),
        (lambda e, h, fr: e["lqer"].update(rank=e["lqer"]["rank"] - 1), r"lqer a byte range .* wrong size"),
        (lambda e, h, fr: e["lqer"]["b"].__setitem__(0, 10 ** 9), r"lqer b byte range .* outside its frame"),
        (lambda e, h, fr: e["lqer"].pop("b_scales"), "corrupt entry for tensor"),
        (lambda e, h, fr: fr[e["frame"]].__setitem__(e["lqer"]["a"][0], 5), "LQER codes outside"),
        (lambda e, h, fr: fr[e["frame"]].__setitem__(e["lqer"]["b"][0], 100), "LQER codes outside"),
    ]
    for edit, msg in cases:
        with pytest.raises(ValueError, match=msg) as info:
            tg.decode_artifact(corrupted(edit), "m.art")
        assert "m.art" in str(info.value) and (name in str(info.value)), str(info.value)


# ---- calibration inside the training time, from training data only

GPTQ_RUN = {"QUANT_METHOD": "gptq", "GPTQ_CALIBRATION_BATCHES": "2", "EVAL_STRIDE": "0", "ITERATIONS": "6",
            "QUANT_CLIP": "sdclip", "LQER_ENABLED": "1"}


def artifact_of(tmp):
    (path,) = tmp.glob("run.int*")
    return path.read_bytes()


def changed_fraction(tg, a: bytes, b: bytes) -> float:
    """The fraction of exported weights whose dequantized value differs between two artifacts."""
    sa, sb = tg.decode_artifact(a), tg.decode_artifact(b)
    assert sa.keys() == sb.keys()
    return sum(int((sa[k] != sb[k]).sum()) for k in sa) / sum(v.numel() for v in sa.values())


def test_calibration_never_reads_validation_data(tg, tmp_path):
    """Poisoning the validation shard changes every validation score but not the artifact: the
    Hessians (and everything else that is exported) come from training data. Two runs of the
    same training are bit-identical only where the BLAS sums in the same order both times: on
    this tiny run, one thread against two moves 1.4e-4 of the exported weights (one code step
    each, the file one byte longer), and CI machines have failed a byte-equal check that way.
    So at most 1e-3 of the weights may move; the control, a Hessian from four training batches
    instead of two, moves about 0.3 of them."""
    import numpy as np
    from conftest import SAMPLE, metric, run_script
    import shutil
    data = tmp_path / "data"
    shutil.copytree(SAMPLE, data)
    runs = {}
    for kind in ("clean", "poisoned", "control"):
        if kind == "poisoned":
            (val,) = data.glob("sotu_val_*.bin")
            header = np.fromfile(val, dtype="<i4", count=256)
            tokens = np.random.default_rng(0).integers(0, 1024, size=int(header[2])).astype("<u2")
            val.write_bytes(header.tobytes() + tokens.tobytes())
        out = tmp_path / kind
        out.mkdir()
        extra = {"GPTQ_CALIBRATION_BATCHES": "4"} if kind == "control" else {}
        run_script(out, GPTQ_RUN | {"DATA_PATH": str(data)} | extra)
        runs[kind] = (artifact_of(out), (out / "run.txt").read_text())
    assert "gptq_calibration batches:2" in runs["clean"][1] and "lqer rank:4" in runs["clean"][1]
    assert metric(runs["clean"][1], "final_prequant_exact") != metric(runs["poisoned"][1], "final_prequant_exact")
    leak, control = (changed_fraction(tg, runs["clean"][0], runs[k][0]) for k in ("poisoned", "control"))
    assert leak <= 1e-3 < 0.05 < control, (leak, control)


def test_training_stops_early_by_the_reserve_and_calibration_ends_inside_the_cap(tmp_path):
    """The loop stops at MAX_WALLCLOCK_SECONDS - GPTQ_RESERVE_SECONDS (within the step that crosses
    it, whatever the machine's load), and the calibration line accounts training + calibration
    time against the cap."""
    import re
    from conftest import run_script
    run_script(tmp_path, GPTQ_RUN | {"ITERATIONS": "100000", "MAX_WALLCLOCK_SECONDS": "8", "GPTQ_RESERVE_SECONDS": "4",
                                     "LQER_ENABLED": "0", "TRAIN_LOG_EVERY": "1"})
    log = (tmp_path / "run.txt").read_text()
    train_ms = float(re.search(r"^stopping_early: wallclock_cap train_time:(\d+)ms", log, re.M).group(1))
    times = [float(t) for t in re.findall(r"^step:\d+/100000 train_loss:\S+ train_time:(\d+)ms", log, re.M)]
    assert times[-1] >= 4000 and times[-2] < 4000  # the first step past cap - reserve is the last one
    line = next(l for l in log.splitlines() if l.startswith("gptq_calibration "))
    f = {k: float(v.rstrip("ms")) if k != "cap" else v for k, v in (kv.split(":", 1) for kv in line.split()[1:])}
    assert f["cap"] == "8000ms" and f["train_time"] == train_ms
    assert f["train_plus_calibration"] == pytest.approx(f["train_time"] + f["calibration_time"], abs=1)
    assert f["inside_cap"] == float(f["train_plus_calibration"] <= 8000)
