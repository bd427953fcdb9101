"""Gradient all-reduce overlapping backward: under DDP the compiled training forward is split
into one graph per gradient bucket (dynamo's DDPOptimizer), so each bucket's all-reduce can
start while the backward of the earlier layers still runs; on 2 gloo ranks two training steps
through it give the same weights as the plain eager DDP path, bitwise, on both ranks."""
import torch

from conftest import REPO, run_script

DRIVER = r'''
import sys
sys.path[:0] = [{repo!r}, {tests!r}]
import torch
import train_gpt as tg
from conftest import SAMPLE, compile_counting_graphs
from test_model_and_muon import tiny_cfg

ctx = tg.setup_distributed()
cfg = tiny_cfg(tg, MODEL_DIM="256", NUM_LAYERS="4", TRAIN_BATCH_TOKENS="2048", QAT_MODE="off", VOCAB_SIZE="1024")
files = sorted(str(p) for p in SAMPLE.glob("sotu_train_*.bin"))
out = {{}}
for mode in ("plain", "overlap"):
    model = tg.build_model(cfg, ctx)
    out["init"] = [p.detach().clone() for p in model.parameters()]
    if mode == "overlap":  # the trainer's wrap, dynamo's graphs run eagerly (no inductor build), small buckets
        compiled, g = compile_counting_graphs(model)
        tg.compile_model, tg.DDP_BUCKET_MB = (lambda m, c, x: compiled), 2
        train_model, eval_model = tg.wrap_for_training(model, cfg, ctx)
    else:
        train_model = torch.nn.parallel.DistributedDataParallel(model, broadcast_buffers=False)
        eval_model, g = model, []
    trainer = tg.Trainer(cfg, ctx, model, train_model, eval_model, tg.Optimizers(model, cfg, ctx),
                         tg.make_loader(cfg, files, ctx, cfg.train_batch_tokens // 8), lambda line: None)
    for step in range(2):
        trainer.step(step, 1.0)
    out[mode] = dict(params=[p.detach().clone() for p in model.parameters()], graphs=len(g))
torch.save(out, f"rank{{ctx.rank}}.pt")
'''


def test_bucketed_allreduce_overlaps_backward_and_matches_plain_ddp(tmp_path):
    driver = tmp_path / "ddp_driver.py"
    driver.write_text(DRIVER.format(repo=str(REPO), tests=str(REPO / "tests")))
    run_script(tmp_path, nproc=2, script=driver)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    for out in ranks:
        assert out["plain"]["graphs"] == 0 and out["overlap"]["graphs"] >= 3  # one forward graph per bucket
        for a, b in zip(out["plain"]["params"], out["overlap"]["params"]):
            assert torch.equal(a, b)
        assert sum(not torch.equal(a, b) for a, b in zip(out["init"], out["plain"]["params"])) > 10  # they trained
    for a, b in zip(ranks[0]["overlap"]["params"], ranks[1]["overlap"]["params"]):
        assert torch.equal(a, b)
