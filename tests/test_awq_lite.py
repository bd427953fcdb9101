"""AWQ-lite GPTQ (AWQ_LITE_ENABLED, _BITS, _GROUP_TOP_K, _GROUP_SIZE): the most salient column
groups are solved on a finer grid inside GPTQ, stored apart and reloaded exactly."""
import pytest
import torch

from test_gptq import calibrated, layer_cases, output_error
from test_model_and_muon import cpu

AWQ = dict(AWQ_LITE_ENABLED=1, AWQ_LITE_GROUP_SIZE=16, QUANT_BITS_ATTN=4, QUANT_BITS_MLP=4, QUANT_BITS_EMBED=5)


def test_protected_columns_use_the_finer_grid_inside_the_solve(tg):
    for name, X, W in layer_cases()[1:]:
        H = X.T @ X
        s, s_hi = tg.row_scales(W, 4, "sdclip", 12.85), tg.row_scales(W, 8, "sdclip", 12.85)
        mask = torch.zeros(W.size(1), dtype=torch.bool)
        mask[32:48] = True
        q = tg.gptq_quantize(W, H, s, 4, 0.01, 128, True, (mask, s_hi, 8))
        plain = tg.gptq_quantize(W, H, s, 4, 0.01, 128, True)
        assert q[:, ~mask].abs().max() <= 7 and q[:, mask].abs().max() > 7  # 8-bit codes only in the group
        deq = torch.where(mask, q.float() * s_hi, q.float() * s)
        e_awq = float((X @ (W - deq).T).square().sum())
        assert e_awq < output_error(X, W, plain, s), name  # the finer group lowers the output error
        # identity Hessian: nothing propagates, each grid is round-to-nearest
        q_id = tg.gptq_quantize(W, torch.eye(W.size(1)), s, 4, 0.01, 128, True, (mask, s_hi, 8))
        assert torch.equal(q_id[:, mask], torch.clamp(torch.round(W / s_hi), -127, 127)[:, mask].to(torch.int8))
        assert torch.equal(q_id[:, ~mask], torch.clamp(torch.round(W / s), -7, 7)[:, ~mask].to(torch.int8))


def test_the_most_salient_group_is_chosen_over_all_matrices(tg):
    cfg, model, hs, _ = calibrated(tg, **AWQ, AWQ_LITE_GROUP_TOP_K=2)
    state, roles = model.state_dict(), {n: p.role for n, p in model.named_parameters()}
    target = "blocks.1.mlp.proj.weight"
    hs = {k: v.clone() for k, v in hs.items()}
    hs[target].diagonal()[80:96] *= 1e4  # columns 80..95 of one matrix see huge activations
    picked = tg.awq_lite_groups(state, roles, cfg, hs)
    assert 80 in picked[target] and sum(map(len, picked.values())) == 2
    sal = {n: (torch.diagonal(H).sqrt() * state[n].float().abs().mean(0)) for n, H in hs.items()}
    best = max((float(v[k:k + 16].sum()), n, k) for n, v in sal.items() for k in range(0, v.numel() - 15, 16))
    assert best[2] in picked[best[1]]


def test_awq_artifact_reloads_exactly_and_costs_bytes(tg, tmp_path):
    cfg, model, hs, _ = calibrated(tg, **AWQ, AWQ_LITE_GROUP_TOP_K=3)
    state, roles = model.state_dict(), {n: p.role for n, p in model.named_parameters()}
    lines = []
    qs = tg.quantize_state(state, roles, cfg, lines.append, hs)
    plain = tg.quantize_state(state, roles, tg.Config(**{**cfg.__dict__, "awq_lite_enabled": False}), None, hs)
    protected = {n: q for n, q in qs.items() if q.hi is not None}
    assert sum(len(q.hi.starts) for q in protected.values()) == 3 and any(l.startswith("awq_lite bits:8 group:16") for l in lines)
    for n, q in protected.items():
        cols = torch.cat([torch.arange(st, st + 16) for st in q.hi.starts])
        assert (q.codes[:, cols] == 0).all() and q.hi.codes.abs().max() > 2 ** (q.bits - 1) - 1
        W, H = state[n].float(), hs[n]
        err = lambda w: torch.trace((W - w) @ H @ (W - w).T).item()  # noqa: E731
        assert err(tg.dequantize(q)) < err(tg.dequantize(plain[n]))
    for packing in ("int8", "bitpack"):
        blob, _ = tg.encode_artifact(qs, packing)
        path = tmp_path / f"m.{packing}"
        path.write_bytes(blob)
        reloaded = dict(tg.load_artifact(path, cfg, cpu(tg)).named_parameters())
        for n, q in qs.items():
            assert torch.equal(reloaded[n].detach(), tg.dequantize(q).view_as(state[n])), n
    assert len(tg.encode_artifact(qs, "int8")[0]) > len(tg.encode_artifact(plain, "int8")[0])


def test_awq_needs_gptq(tg):
    with pytest.raises(tg.ConfigError, match="AWQ_LITE_ENABLED=1 works inside GPTQ"):
        tg.Config.from_env({"AWQ_LITE_ENABLED": "1", "QUANT_METHOD": "rtn"})
    cfg = tg.Config.from_env({"AWQ_LITE_ENABLED": "1", "AWQ_LITE_BITS": "8", "AWQ_LITE_GROUP_TOP_K": "1", "AWQ_LITE_GROUP_SIZE": "64"})
    assert (cfg.awq_lite_enabled, cfg.awq_lite_bits, cfg.awq_lite_group_top_k, cfg.awq_lite_group_size) == (True, 8, 1, 64)


def test_dry_run_projection_counts_the_protected_groups(tg):
    cfg = tg.Config(**{**calibrated(tg, **AWQ)[0].__dict__})
    model = tg.build_model(cfg, cpu(tg))
    plain_bytes, _ = tg.project_artifact(model, tg.Config(**{**cfg.__dict__, "awq_lite_enabled": False}))
    awq_bytes, report = tg.project_artifact(model, cfg)
    extra = next(r for r in report if r["role"] == "awq_lite")
    rows = max(p.size(0) for p in model.parameters() if p.ndim == 2 and cfg.bits(p.role) < 8)
    assert extra["bytes"] == 16 * rows + 2 * rows and awq_bytes == plain_bytes + extra["bytes"]
