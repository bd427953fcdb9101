"""configs/*.env replay published records: each parses as a complete, valid configuration
(`env $(cat configs/X.env) torchrun ... train_gpt.py`) and builds the record's model, whose
parameter count is pinned to the record's."""
from pathlib import Path

import pytest
import torch

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PRESETS = {
    # 2026-03-21_11L_XSA4_EMA_PartialRoPE_LateQAT_1.1248: its logs print model_params:26829913
    "record_0321_1.1248.env": 26_829_913,
    # 2026-04-05_SP8192_GPTQ-Embeddings_SDClip_Loop45x2 (1.0856): 11L d512 MLP4 SP8192 tied, skip
    # weights and gates sized for the 15-slot looped sequence (7 each): 35,943,512, the count the
    # SP8192 loop records of that week print for this architecture
    "record_0405_1.0856.env": 35_943_512,
}


def read_env(path: Path) -> dict:
    env = {}
    for line in path.read_text().splitlines():
        assert line and "=" in line and " " not in line and not line.startswith("#"), \
            f"{path.name}: `env $(cat ...)` needs plain KEY=VALUE lines, got {line!r}"
        k, v = line.split("=", 1)
        assert k not in env, f"{path.name}: {k} set twice"
        env[k] = v
    return env


def test_every_preset_is_pinned():
    assert sorted(p.name for p in CONFIGS.glob("*.env")) == sorted(PRESETS)


@pytest.mark.parametrize("name, count", list(PRESETS.items()))
def test_preset_builds_the_record_model(tg, name, count):
    cfg = tg.Config.from_env(read_env(CONFIGS / name))
    with torch.device("meta"):
        model = tg.GPT(cfg, max_len=cfg.train_seq_len)
    assert tg.count_params(model) == count


def test_record_0405_preset_loops_like_the_record(tg):
    cfg = tg.Config.from_env(read_env(CONFIGS / "record_0405_1.0856.env"))
    assert tg.virtual_layers(cfg, True) == [0, 1, 2, 3, 4, 5, 4, 5, 4, 5, 6, 7, 8, 9, 10]
    assert cfg.warmdown_iters == 0 and cfg.warmdown_frac == 0.667


def test_presets_do_not_depend_on_the_defaults(tg):
    """A preset replays its record whatever this script's defaults are: it sets every knob of
    the data, model, optimizer, schedule, averaging, quantization and eval groups (only the run's
    name, output directory and seed are left to the command line), so a change of defaults, like
    the switch from the 1.1248 configuration to the SP8192 one, cannot change a replay."""
    import dataclasses
    free = {"RUN_ID", "OUT_DIR", "OVERWRITE_RUN", "SEED"}
    needed = {tg.Config.env_name(f) for f in dataclasses.fields(tg.Config)
              if f.metadata.get("group") in {"data", "model", "optim", "schedule", "average", "quant", "eval"}} - free
    for name in PRESETS:
        missing = sorted(needed - set(read_env(CONFIGS / name)))
        assert not missing, f"{name} leaves {missing} to the defaults"
