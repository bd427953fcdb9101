"""Profile train_gpt.py training steps with torch.profiler (CPU, or one GPU when present).

Builds the model, optimizers, loader and Trainer from a Config exactly like train_gpt.run()
does (environment variables only, here passed as a dict: nothing is read from the shell),
runs the warmup, times a few plain steps, then profiles N steps and prints:
  * the wall time of every step (a step that gets slower over time shows up here);
  * time per step by phase (data, forward, backward, grad clip, Muon, AdamW, zero_grad,
    weight averaging), from record_function labels wrapped around the script's own methods;
  * the top ops by self CPU time (and self CUDA time on a GPU), with calls per step;
  * host-device sync points per step: calls of aten::item / aten::_local_scalar_dense /
    aten::is_nonzero (each one blocks the host until the device has caught up on a GPU) and,
    on CUDA, cudaStreamSynchronize / cudaDeviceSynchronize / blocking cudaMemcpy calls;
  * the ops that allocate the most memory per step (profile_memory=True).

  python bench/profile_step.py --dataset proxy --steps 3 \\
      --env NUM_LAYERS=4,MODEL_DIM=128,NUM_HEADS=4,NUM_KV_HEADS=2,TRAIN_SEQ_LEN=256,TRAIN_BATCH_TOKENS=8192

Importing this module does no work; main(argv) -> int. It only calls train_gpt.py; it never
changes it (the phase labels wrap methods of this process's objects).
"""
from __future__ import annotations

import argparse
import functools
import importlib.util
import inspect
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from benchmark import DATASETS, parse_assignments  # noqa: E402  (stdlib only; no torch at import)

SYNC_OPS = ("aten::item", "aten::_local_scalar_dense", "aten::is_nonzero")
CUDA_SYNC_OPS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaMemcpy")


def load_script(path: Path):
    spec = importlib.util.spec_from_file_location("train_gpt", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["train_gpt"] = mod
    spec.loader.exec_module(mod)
    return mod


def build(tg, env: dict):
    """The objects train_gpt.run() builds before training, from the same functions."""
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        os.environ.pop(k, None)  # single process
    cfg = tg.Config.from_env(env)
    ctx = tg.setup_distributed()
    sp = tg.load_tokenizer(cfg)
    kw = {"bos_id": sp.bos_id()} if "bos_id" in inspect.signature(tg.build_model).parameters else {}
    model = tg.build_model(cfg, ctx, **kw)
    train_model, eval_model = tg.wrap_for_training(model, cfg, ctx)
    opt = tg.Optimizers(model, cfg, ctx)
    grad_accum = 8 // ctx.world_size
    micro_tokens = cfg.train_batch_tokens // (ctx.world_size * grad_accum)
    files = tg.shard_files(cfg.data_path, cfg.train_glob, "train")
    loader = tg.DistributedTokenLoader(files, ctx, micro_tokens, cfg.train_seq_len)
    trainer = tg.Trainer(cfg, ctx, model, train_model, eval_model, opt, loader, tg.Logger(None))
    if hasattr(tg, "set_qat"):
        tg.set_qat(model, getattr(cfg, "qat_mode", "off") == "always")
    averager = tg.WeightAverager(model, cfg) if hasattr(tg, "WeightAverager") else None
    return cfg, ctx, model, trainer, averager


def label_phases(torch, tg, trainer) -> None:
    """Wrap the script's per-step methods of these objects in record_function labels."""
    rf = torch.profiler.record_function

    def wrap(obj, attr, name):
        fn = getattr(obj, attr)

        @functools.wraps(fn)
        def labeled(*a, **k):
            with rf(f"phase::{name}"):
                return fn(*a, **k)
        setattr(obj, attr, labeled)

    wrap(trainer.loader, "next_batch", "data")
    wrap(trainer.model, "forward", "forward")
    for opt in trainer.opt.all:
        wrap(opt, "step", "muon" if type(opt).__name__ == "Muon" else type(opt).__name__.lower())
    wrap(trainer.opt, "zero_grad", "zero_grad")
    wrap(trainer.opt, "set_schedule", "set_schedule")
    orig_backward = torch.Tensor.backward

    def backward(self, *a, **k):
        with rf("phase::backward"):
            return orig_backward(self, *a, **k)
    torch.Tensor.backward = backward
    clip = torch.nn.utils.clip_grad_norm_

    def clip_labeled(*a, **k):
        with rf("phase::grad_clip"):
            return clip(*a, **k)
    torch.nn.utils.clip_grad_norm_ = clip_labeled


def run_steps(torch, tg, cfg, ctx, trainer, averager, first: int, n: int, label: bool = False) -> list[float]:
    times = []
    for step in range(first, first + n):
        t0 = time.perf_counter()
        ctxm = torch.profiler.record_function("train_step") if label else _null()
        with ctxm:
            scale = tg.lr_scale(cfg, step, 0.0)
            trainer.step(step, scale)
            if averager is not None:
                if label:
                    with torch.profiler.record_function("phase::weight_average"):
                        averager.update(step + 1, scale)
                else:
                    averager.update(step + 1, scale)
        tg.sync(ctx)
        times.append(1000 * (time.perf_counter() - t0))
    return times


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench/profile_step.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", choices=sorted(DATASETS), default="sample")
    ap.add_argument("--env", action="append", default=[], metavar="K=V[,K=V...]", help="config env (repeatable)")
    ap.add_argument("--script", default=str(REPO / "train_gpt.py"))
    ap.add_argument("--timed-steps", type=int, default=3, help="plain steps timed before profiling")
    ap.add_argument("--steps", type=int, default=3, help="profiled steps")
    ap.add_argument("--row-limit", type=int, default=20)
    ap.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--flush-denormal", action="store_true", help="torch.set_flush_denormal(True) first (experiment)")
    args = ap.parse_args(argv)
    env = dict(DATASETS[args.dataset])
    for item in args.env:
        env |= parse_assignments(item, f"--env {item}")
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.flush_denormal:
        print(f"flush_denormal: {torch.set_flush_denormal(True)}")
    tg = load_script(Path(args.script))
    cfg, ctx, model, trainer, averager = build(tg, env)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"device:{ctx.device} threads:{torch.get_num_threads()} torch:{torch.__version__} params:{n_params} "
          f"grad_accum:{trainer.grad_accum} micro_batch_tokens:{trainer.loader.micro_tokens} "
          f"compile:{int(tg.use_compile(cfg, ctx))}")
    t0 = time.perf_counter()
    trainer.warmup_and_restore()
    print(f"warmup ({cfg.warmup_steps} steps): {1000 * (time.perf_counter() - t0):.0f} ms")
    times = run_steps(torch, tg, cfg, ctx, trainer, averager, 0, args.timed_steps)
    print("plain step ms: " + " ".join(f"{t:.1f}" for t in times))

    label_phases(torch, tg, trainer)
    acts = [torch.profiler.ProfilerActivity.CPU]
    cuda = ctx.device.type == "cuda"
    if cuda:
        acts.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=acts, profile_memory=True) as prof:
        ptimes = run_steps(torch, tg, cfg, ctx, trainer, averager, args.timed_steps, args.steps, label=True)
    print("profiled step ms: " + " ".join(f"{t:.1f}" for t in ptimes) + " (profiler overhead included)")
    n = args.steps
    ka = prof.key_averages()

    print(f"\n== time per step by phase (CPU time incl. children, ms/step; {n} steps) ==")
    phases = sorted((e for e in ka if e.key.startswith("phase::") or e.key == "train_step"),
                    key=lambda e: -e.cpu_time_total)
    for e in phases:
        print(f"  {e.key:<24} {e.cpu_time_total / 1000 / n:10.2f} ms   calls/step {e.count / n:6.1f}")

    sort = "self_device_time_total" if cuda else "self_cpu_time_total"
    print(f"\n== top ops by {sort} ==")
    print(ka.table(sort_by=sort, row_limit=args.row_limit, max_name_column_width=40))

    print("== host-device sync points per step ==")
    counts = defaultdict(int)
    for e in ka:
        if e.key in SYNC_OPS or (cuda and e.key in CUDA_SYNC_OPS):
            counts[e.key] += e.count
    for k in SYNC_OPS + (CUDA_SYNC_OPS if cuda else ()):
        print(f"  {k:<28} {counts[k] / n:6.1f} per step")
    if cuda:
        print("  (cudaDeviceSynchronize includes 1 per step from this profiler's own step timing)")
    else:
        print("  (on CPU nothing waits for a device; these are the calls that would sync on a GPU)")

    print("\n== top allocating ops (self CPU memory allocated per step, MiB; frees are negative) ==")
    mem = sorted(ka, key=lambda e: -e.self_cpu_memory_usage)[:12]
    for e in mem:
        if e.self_cpu_memory_usage > 0:
            print(f"  {e.key:<40} {e.self_cpu_memory_usage / 2**20 / n:10.1f} MiB   calls/step {e.count / n:7.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
