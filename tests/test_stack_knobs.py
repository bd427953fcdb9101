"""The 1.0565 stack's model knobs: ASYM_LOGIT_RESCALE (two caps, trained only by TTT's global
phases) and LEAKY_RELU_SQ_SLOPE."""
import pytest
import torch
import torch.nn.functional as F

from test_eval import BOS, TTT_ENV
from test_model_and_muon import cpu, randomize, tiny_cfg


def models(tg, **kw):
    """The same random weights as a plain-softcap, an asym and an uncapped model."""
    out = []
    for extra in ({}, dict(ASYM_LOGIT_RESCALE=1), dict(LOGIT_SOFTCAP=0)):
        cfg = tiny_cfg(tg, **{**TTT_ENV, **kw, **extra})
        out.append(tg.build_model(cfg, cpu(tg)).eval())
    weights = randomize(out[0]).state_dict()
    out[1].load_state_dict({**weights, "softcap": out[1].softcap.detach()})
    out[2].load_state_dict(weights)
    return out


def test_asym_caps_start_as_the_plain_cap_and_shape_each_sign(tg):
    plain, asym, raw = models(tg)
    x = torch.randint(2, 128, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(asym(x), plain(x), atol=1e-5)  # both caps at LOGIT_SOFTCAP
        asym.softcap.copy_(torch.tensor([0.5, 0.8]))
        z = raw(x)
        expect = torch.where(z >= 0, 0.5 * torch.tanh(z / 0.5), 0.8 * torch.tanh(z / 0.8))
        assert torch.allclose(asym(x), expect, atol=1e-5)
        assert (z > 0.5).any() and (z < -0.8).any()  # both caps bite on these logits


def test_asym_caps_are_not_trained_by_training(tg):
    _, asym, _ = models(tg)
    asym.train()
    opt = tg.Optimizers(asym, asym.cfg, cpu(tg))
    assert not any(p is asym.softcap for o in opt.all for g in o.param_groups for p in g["params"])
    x = torch.randint(2, 128, (2, 32), generator=torch.Generator().manual_seed(1))
    asym(x, x).backward()
    assert asym.softcap.grad is None and asym.tok_emb.grad is not None
    state = tg.quantize_state({"softcap": asym.softcap.detach()}, {"softcap": "softcap"}, asym.cfg, hessians={})
    assert state["softcap"].bits == 16  # stored as is (2 fp16 scalars)


@pytest.mark.parametrize("phases, moves", [(2, True), (0, False)])
def test_asym_caps_move_only_in_global_phases(tg, phases, moves):
    _, asym, _ = models(tg, PHASED_TTT_NUM_PHASES=phases)
    g = torch.Generator().manual_seed(5)
    tokens = torch.randint(2, 128, (641,), generator=g)
    tokens[[0, 40, 150, 400]] = BOS
    lut = tg.ByteLUT(torch.randint(1, 4, (128,), generator=g).to(torch.int16), torch.rand(128, generator=g) < 0.3,
                     torch.arange(128) < 2)
    before = asym.softcap.detach().clone()
    tg.evaluate_ttt(asym, tokens, tg.lut_target_bytes(tokens, lut), asym.cfg, cpu(tg), print)
    assert (not torch.equal(asym.softcap.detach(), before)) == moves
    assert not asym.softcap.requires_grad and all(p.requires_grad for n, p in asym.named_parameters() if n != "softcap")


def test_leaky_relu_sq_slope(tg):
    cfg = tiny_cfg(tg, LEAKY_RELU_SQ_SLOPE=0.3)
    mlp = tg.MLP(cfg)
    torch.nn.init.normal_(mlp.proj.weight)
    x = torch.randn(3, 64)
    assert torch.allclose(mlp(x, {}), F.leaky_relu(x @ mlp.fc.weight.T, 0.3).square() @ mlp.proj.weight.T, atol=1e-5)
    assert tg.Config.from_env({}).leaky_relu_sq_slope == 0.5


def test_record_retune_names(tg):
    """The 1.0565 record's LQER and TTT retune settings read as ours; LQER_ASYM_ENABLED only as 1."""
    env = {"LQER_ENABLED": "1", "LQER_RANK": "4", "LQER_TOP_K": "3", "LQER_FACTOR_BITS": "4", "LQER_ASYM_ENABLED": "1",
           "LQER_ASYM_GROUP": "32", "GPTQ_CALIBRATION_BATCHES": "32", "EVAL_SEQ_LEN": "2560", "TTT_EVAL_SEQ_LEN": "2560",
           "PHASED_TTT_NUM_PHASES": "1", "PHASED_TTT_PREFIX_DOCS": "2500", "TTT_LORA_RANK": "80", "TTT_LORA_LR": "8e-5",
           "TTT_BETA2": "0.99", "TTT_WEIGHT_DECAY": "2.0", "TTT_TARGETS": "q,v,o,up,down,head"}
    notes = []
    cfg = tg.Config.from_env(env, notes)
    assert (cfg.lqer_asym_group, cfg.gptq_calibration_batches, cfg.window_len, cfg.ttt_eval_seq_len) == (32, 32, 2560, 2560)
    assert "k" not in cfg.ttt_target_list and cfg.ttt_lora_lr == 8e-5 and cfg.ttt_weight_decay == 2.0
    assert any(n.startswith("LQER_ASYM_ENABLED=1 accepted") for n in notes)
    assert [L for *_, L in tg.ttt_chunk_plan([(0, 3000)], cfg, True)][-1] == 2560  # contexts capped at TTT_EVAL_SEQ_LEN
    with pytest.raises(tg.ConfigError, match="LQER_ASYM_ENABLED=0: only the asymmetric"):
        tg.Config.from_env({**env, "LQER_ASYM_ENABLED": "0"})
