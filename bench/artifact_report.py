"""Export and evaluation sweeps over trained weights, and the byte budget of a configuration.

Subcommands:
  budget  export a model exactly as train_gpt.py does and print the per-role byte budget.
          Weights: a run's saved state dict (--weights logs/RUN.avg.pt), or trained-like
          synthetic weights for the configuration in the environment (default: the script's
          defaults, i.e. the full record-size model).
  sweep   for a finished run (its log gives the config), export the saved weights under
          several quantization variants and score each reloaded artifact with several
          evaluation protocols (non-overlapping, sliding windows, TTT). Writes JSON + markdown.

Examples:
  python bench/artifact_report.py budget
  python bench/artifact_report.py sweep logs/run.txt --weights logs/run.raw.pt \
      --variant int8:QUANT_BITS_ATTN=8,QUANT_BITS_MLP=8 --eval nonoverlap,sliding:64,ttt
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import train_gpt as tg  # noqa: E402


def config_from_log(log_path: Path) -> dict[str, str]:
    """The resolved config of a run (its `config:KEY=value` lines)."""
    env = {}
    for line in log_path.read_text(encoding="utf-8").splitlines():
        if line.startswith("config:") and "=" in line:
            key, value = line[len("config:"):].split("=", 1)
            env[key] = "1" if value == "True" else "0" if value == "False" else value
    if not env:
        raise SystemExit(f"{log_path}: no config: lines (not a train_gpt.py log?)")
    # a log lists both warmdown knobs; the config accepts only the one in use
    if "WARMDOWN_FRAC" in env and "WARMDOWN_ITERS" in env:
        env.pop("WARMDOWN_FRAC" if float(env["WARMDOWN_FRAC"]) == 0 else "WARMDOWN_ITERS")
    return env


def parse_overrides(spec: str) -> tuple[str, dict[str, str]]:
    """NAME:K=V,K=V; a comma starts a new pair only before `UPPER_NAME=`, so values may hold
    commas (TTT_TARGETS=q,v,head)."""
    name, _, rest = spec.partition(":")
    overrides = dict(kv.split("=", 1) for kv in re.split(r",(?=[A-Z][A-Z0-9_]*=)", rest) if kv)
    return name, overrides


def calibration_hessians(model: torch.nn.Module, cfg, ctx, log_path: Path | None = None) -> dict[str, torch.Tensor]:
    """GPTQ Hessians as a run collects them: GPTQ_CALIBRATION_BATCHES training micro-batches that
    follow the run's training batches in the stream (the step count comes from its log, if given), or,
    without training shards, random tokens (synthetic weights: only the Hessian's shape matters)."""
    micro = cfg.train_batch_tokens // 8
    try:
        files = tg.shard_files(cfg.data_path, cfg.train_glob, "train")
    except FileNotFoundError:
        files = None
    if files is None:  # two short random batches: enough for a full-rank H of every layer, fast on a CPU
        g = torch.Generator().manual_seed(0)
        batches = [(torch.randint(0, cfg.vocab_size, (4, cfg.train_seq_len), generator=g),) * 2 for _ in range(2)]
        return tg.collect_hessians(model, batches, ctx)[0]
    loader = tg.DistributedTokenLoader(files, ctx, micro, cfg.train_seq_len)
    steps = 0
    if log_path is not None:
        import re
        m = re.search(r"^train_time_total_ms:\S+ eval_time_total_ms:\S+ steps:(\d+)", log_path.read_text(encoding="utf-8"), re.M)
        steps = int(m.group(1)) if m else 0
    for _ in range(8 * steps):  # skip what training read
        loader.stream.take(micro + 1)
    tg.set_qat(model, False)
    return tg.collect_hessians(model, (loader.next_batch() for _ in range(cfg.gptq_calibration_batches)), ctx)[0]


def synthetic_weights(model: torch.nn.Module, seed: int = 0) -> None:
    """Trained-like weights: Gaussian rows with per-row scales in [0.02, 0.05]. Their per-row
    int5/int6 codes cost what the records report for trained tensors after zstd."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2 and p.role != "scalar":
                p.copy_(torch.randn(p.shape, generator=g) * (0.02 + 0.03 * torch.rand(p.size(0), 1, generator=g)))


def cmd_budget(args) -> int:
    env = dict(parse_overrides("x:" + ",".join(args.set))[1]) if args.set else {}
    cfg = tg.Config.from_env(env)
    ctx = tg.Dist(0, 1, 0, torch.device("cpu"))
    model = tg.build_model(cfg, ctx)
    if args.weights:
        model.load_state_dict(torch.load(args.weights, map_location="cpu", weights_only=True), strict=True)
        source = str(args.weights)
    else:
        synthetic_weights(model)
        source = "synthetic trained-like weights (Gaussian rows, per-row scale 0.02-0.05)"
    roles = {n: p.role for n, p in model.named_parameters()}
    print(f"config: {' '.join(f'{k}={v}' for k, v in env.items()) or 'script defaults'}; weights: {source}")
    print(f"model_params:{tg.count_params(model)}")
    hessians = calibration_hessians(model, cfg, ctx) if cfg.quant_method == "gptq" else None
    with tempfile.TemporaryDirectory() as tmp:
        blob = tg.export_artifact(model.state_dict(), roles, cfg, Path(tmp) / "model.art", print, hessians)
    code = len((REPO / "train_gpt.py").read_bytes())
    total = code + len(blob)
    print(f"code_bytes:{code} model_bytes:{len(blob)} total_bytes:{total} cap:{tg.ARTIFACT_CAP_BYTES} "
          f"margin:{tg.ARTIFACT_CAP_BYTES - total}")
    return 0 if total <= tg.ARTIFACT_CAP_BYTES else 1


def run_eval(kind: str, model, val, val_bytes, cfg, ctx) -> tg.EvalResult:
    if kind == "nonoverlap":
        return tg.evaluate(model, val, val_bytes, cfg, ctx)
    if kind.startswith("sliding:"):
        return tg.evaluate_sliding(model, val, val_bytes, cfg, ctx, int(kind.split(":")[1]))
    if kind == "ttt":
        return tg.evaluate_ttt(model, val, val_bytes, cfg, ctx, lambda m: print("  " + m, flush=True))
    raise SystemExit(f"unknown eval {kind!r}: use nonoverlap, sliding:STRIDE or ttt")


def cmd_sweep(args) -> int:
    base_env = config_from_log(args.log)
    base_env.update(parse_overrides("x:" + ",".join(args.set))[1] if args.set else {})
    ctx = tg.Dist(0, 1, 0, torch.device("cpu"))
    base_cfg = tg.Config.from_env(base_env)
    sp = tg.load_tokenizer(base_cfg)
    lut = tg.build_byte_lut(sp, base_cfg.vocab_size)
    val = tg.load_validation_tokens(base_cfg, print)
    val_bytes = tg.load_val_bytes(base_cfg, val, lut, sp.bos_id(), print)
    state = torch.load(args.weights, map_location="cpu", weights_only=True)
    variants = [parse_overrides(v) for v in args.variant] or [("as_trained", {})]
    evals = [e for e in args.eval.split(",") if e]
    rows, hessians, prequant = [], None, None
    for name, overrides in variants:
        cfg = tg.Config.from_env({**base_env, **overrides})
        model = tg.build_model(cfg, ctx, sp.bos_id())
        model.load_state_dict(state, strict=True)
        roles = {n: p.role for n, p in model.named_parameters()}
        row = dict(variant=name, overrides=overrides, params=tg.count_params(model))
        if cfg.quant_method == "gptq" and hessians is None:  # the weights and data are the same for every variant
            t0 = time.perf_counter()
            hessians = calibration_hessians(model, cfg, ctx, args.log)
            print(f"gptq hessians:{len(hessians)} batches:{cfg.gptq_calibration_batches} time:{time.perf_counter() - t0:.1f}s", flush=True)
        if args.prequant:
            if prequant is None:  # the same weights for every variant: score them once
                prequant = tg.evaluate(model, val, val_bytes, cfg, ctx).bpb
            row["prequant_nonoverlap_bpb"] = prequant
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.art"
            budget = []
            blob = tg.export_artifact(model.state_dict(), roles, cfg, path, budget.append,
                                      hessians if cfg.quant_method == "gptq" else None)
            row.update(model_bytes=len(blob), bytes_per_param=len(blob) / row["params"],
                       budget=[b for b in budget if b.startswith(("budget", "gptq", "lqer"))])
            reloaded = tg.load_artifact(path, cfg, ctx, sp.bos_id())
        for kind in evals:
            t0 = time.perf_counter()
            r = run_eval(kind, reloaded, val, val_bytes, cfg, ctx)
            row[kind] = dict(val_loss=r.loss, val_bpb=r.bpb, tokens=r.tokens, eval_s=time.perf_counter() - t0)
            print(f"{name} {kind}: val_bpb {r.bpb:.5f} ({r.tokens} tokens, {row[kind]['eval_s']:.1f}s)", flush=True)
        print(f"{name}: model_bytes {len(blob)} ({row['bytes_per_param']:.4f} bytes/param)", flush=True)
        rows.append(row)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(dict(log=str(args.log), weights=str(args.weights), base_env=base_env, rows=rows), indent=1))
    gap = args.prequant and "nonoverlap" in evals
    md = ["| variant | bytes/param | model bytes | " + " | ".join(f"{e} bpb (s)" for e in evals) + (" | quant gap |" if gap else " |"),
          "|---|---|---|" + "---|" * (len(evals) + gap)]
    for r in rows:
        cells = [f"{r[e]['val_bpb']:.5f} ({r[e]['eval_s']:.0f})" for e in evals]
        if gap:
            cells.append(f"{r['nonoverlap']['val_bpb'] - r['prequant_nonoverlap_bpb']:+.5f}")
        md.append(f"| {r['variant']} | {r['bytes_per_param']:.4f} | {r['model_bytes']:,} | " + " | ".join(cells) + " |")
    args.out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("budget", help="per-role byte budget of a configuration's artifact")
    b.add_argument("--weights", type=Path, help="a state dict saved by a run (.raw.pt / .avg.pt); default: synthetic")
    b.add_argument("--set", action="append", default=[], help="config overrides KEY=VALUE (repeatable)")
    s = sub.add_parser("sweep", help="export variants x eval protocols on a run's saved weights")
    s.add_argument("log", type=Path, help="the run's log (its config: lines give the configuration)")
    s.add_argument("--weights", type=Path, required=True, help="the run's saved state dict")
    s.add_argument("--variant", action="append", default=[], help="NAME:KEY=VALUE,... export/eval overrides (repeatable)")
    s.add_argument("--eval", default="nonoverlap", help="comma list: nonoverlap, sliding:STRIDE, ttt")
    s.add_argument("--set", action="append", default=[], help="overrides for every variant, e.g. VAL_MAX_TOKENS=0")
    s.add_argument("--prequant", action="store_true", help="also score the unquantized weights (non-overlapping)")
    s.add_argument("--out", type=Path, default=Path("bench/results/sweep.json"), help="JSON output (a .md is written beside it)")
    args = p.parse_args(argv)
    return cmd_budget(args) if args.cmd == "budget" else cmd_sweep(args)


if __name__ == "__main__":
    sys.exit(main())
