"""Training context growth (TRAIN_SEQ_SCHEDULE, TRAIN_SEQ_SCHEDULE_MODE, SEQ_CHANGE_WARMUP_STEPS)."""
import re

import pytest
import sentencepiece as spm
import torch

from conftest import SAMPLE, compile_counting_graphs
from test_frontier_model import LOOP
from test_model_and_muon import cpu, tiny_cfg

SCHED = "16@0.3,32@0.6,64@1.0"


def test_stage_rule_and_modes(tg):
    cfg = tiny_cfg(tg, TRAIN_SEQ_LEN=64, TRAIN_BATCH_TOKENS=1024, TRAIN_SEQ_SCHEDULE="32@0.6,16@0.3,64@1",
                   ITERATIONS=10, MAX_WALLCLOCK_SECONDS=100, GPTQ_RESERVE_SECONDS=0)
    assert cfg.seq_plan == [(0.3, 16), (0.6, 32), (1.0, 64)]
    # wallclock mode under a cap: time over the cap, steps do not matter
    assert [tg.train_seq_len_at(cfg, 9, ms) for ms in (0, 30_000, 30_001, 60_000, 60_001, 99_000)] == [16, 16, 32, 32, 64, 64]
    step = tg.Config(**{**cfg.__dict__, "train_seq_schedule_mode": "step"})
    assert [tg.train_seq_len_at(step, s, 99_000) for s in (0, 3, 4, 6, 7, 10)] == [16, 16, 32, 32, 64, 64]
    uncapped = tg.Config(**{**cfg.__dict__, "max_wallclock_seconds": 0.0})  # no cap: steps, whatever the mode
    assert [tg.train_seq_len_at(uncapped, s, 1e9) for s in (0, 4, 7)] == [16, 32, 64]
    short = tiny_cfg(tg, TRAIN_SEQ_LEN=64, TRAIN_BATCH_TOKENS=1024, TRAIN_SEQ_SCHEDULE="16@0.5,64@0.8")
    assert short.seq_plan == [(0.5, 16), (1.0, 64)]  # the last stage runs to the end
    assert tiny_cfg(tg, TRAIN_SEQ_LEN=64, TRAIN_BATCH_TOKENS=1024).seq_plan == [(1.0, 64)]


@pytest.mark.parametrize("bad, match", [
    ("16@0.3,32@1.0", "largest length"),            # TRAIN_SEQ_LEN=64 is not in the schedule
    ("16@0.3,48@0.6,64@1", "multiple of every length"),  # 128 tokens per micro-batch: 48 does not divide
    ("16:0.3,64@1", "LENGTH@PROGRESS"),
    ("16@1.5,64@1", "progress in"),
])
def test_bad_schedules_are_refused(tg, bad, match):
    with pytest.raises(tg.ConfigError, match=match):
        tiny_cfg(tg, TRAIN_SEQ_LEN=64, TRAIN_BATCH_TOKENS=1024, TRAIN_SEQ_SCHEDULE=bad)


@pytest.mark.parametrize("loader_kind", ["stream", "shuffled"])
def test_growth_compiles_nothing_inside_the_timed_run(tg, loader_kind):
    """The warmup builds every (loop state, length) training graph; the timed run switches the
    length twice and the loop on (logged), rows change shape, no graph is built, and the LR
    re-warms after each switch (SEQ_CHANGE_WARMUP_STEPS)."""
    cfg = tiny_cfg(tg, **{**LOOP, "TRAIN_SEQ_LEN": "64", "TRAIN_BATCH_TOKENS": "1024", "VOCAB_SIZE": "1024",
                          "ITERATIONS": "10", "WARMUP_STEPS": "1", "ENABLE_LOOPING_AT": "0.5", "MAX_WALLCLOCK_SECONDS": "0",
                          "TRAIN_LOG_EVERY": "1", "QAT_MODE": "off", "VAL_BATCH_SIZE": "512", "WARMDOWN_FRAC": "0",
                          "TRAIN_SEQ_SCHEDULE": SCHED, "SEQ_CHANGE_WARMUP_STEPS": "2", "TRAIN_LOADER": loader_kind})
    lines, ctx = [], cpu(tg)
    model = tg.build_model(cfg, ctx)
    compiled, graphs = compile_counting_graphs(model)
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, tg.RECOMPILE_LIMIT)  # as compile_model
    files = tg.shard_files(str(SAMPLE), "sotu_train_*.bin", "train")
    loader = tg.make_loader(cfg, files, ctx, cfg.train_batch_tokens // 8)
    shapes = []
    next_batch = loader.next_batch
    loader.next_batch = lambda: (lambda b: shapes.append(tuple(b[0].shape)) or b)(next_batch())
    val = tg.load_shard(SAMPLE / "sotu_val_000000.bin")[:2049]
    lut = tg.build_byte_lut(spm.SentencePieceProcessor(model_file=str(SAMPLE / "sotu_1024_bpe.model")), 1024)
    tg.set_looping(model, False)
    trainer = tg.Trainer(cfg, ctx, model, compiled, compiled, tg.Optimizers(model, cfg, ctx), loader, lines.append)
    trainer.warmup_and_restore()
    tg.prewarm_eval(compiled, cfg, ctx, len(val))
    built = len(graphs)
    assert built >= 7  # 2 loop states x 3 lengths, and the eval graph
    shapes.clear()
    trainer.run(val, tg.lut_target_bytes(val, lut), tg.WeightAverager(model, cfg))
    assert len(graphs) == built, "the timed run compiled a graph"
    assert shapes == [(8, 16)] * 32 + [(4, 32)] * 24 + [(2, 64)] * 24  # 8 micro-batches of 128 tokens per step
    switches = [l for l in lines if l.startswith("train_seq_len:")]
    assert [l.split()[:2] for l in switches] == [["train_seq_len:16", "step:0"], ["train_seq_len:32", "step:4"],
                                                  ["train_seq_len:64", "step:7"]]  # progress <= 0.3 stays at 16
    scales = [float(re.search(r"lr_scale:([\d.]+)", l).group(1)) for l in lines if l.startswith("step:")]
    assert scales == [1, 1, 1, 1, 0.5, 1, 1, 0.5, 1, 1]  # the first step after each switch runs at 1/2
    assert any("seq_lens:16,32,64" in l for l in lines) and model.looping
    torch._dynamo.reset()
