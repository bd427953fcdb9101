"""TTT work on a validation split: row-tokens and attention FLOPs of the per-document LoRA
scoring, and the global phases' steps, for this script's protocol, the protocol it had before
(windows bucketed to TTT_CHUNK_SIZE * 2^k, rows padded to TTT_BATCH_SIZE), and a record's
(computed by the record's own chunk-window and batching functions, read from its train_gpt.py).

    python bench/ttt_work.py --val VAL_SHARD [--record RECORD/train_gpt.py] [--world 8] [--json OUT]

Row-tokens: the sum over every forward of rows x context length (forward only; a chunk that
trains runs its backward on the same tokens). Attention FLOPs: 4 * L^2 * MODEL_DIM per row of
context L per layer pass (QK^T and AV over the full square; a causal kernel skips about half,
alike for all three), summed, times the layer passes of the looped model (LAYER_PASSES).
Needs no GPU and no model: only the split's document lengths.
"""
import argparse
import ast
import json
import math
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import train_gpt as tg  # noqa: E402


def work(batches, contexts) -> dict:
    """Totals over (rows, [context length per chunk]) of each batch."""
    rows_tokens = sum(rows * sum(ls) for rows, ls in contexts(batches))
    squares = sum(rows * sum(L * L for L in ls) for rows, ls in contexts(batches))
    return {"row_tokens": rows_tokens, "attn_square": squares}


def ours(spans, cfg):
    queue = tg.ttt_queue(spans, cfg)
    return [(max(2, len(d)), [L for *_, L in tg.ttt_chunk_plan(d, cfg, True)]) for _, d in queue]


def before(spans, cfg):
    """The previous protocol: segments in stream order at the phase bounds, documents sorted
    longest first inside a segment, rows padded to TTT_BATCH_SIZE, windows bucketed."""
    P, bs, chunk, E = cfg.phased_ttt_num_phases, cfg.ttt_batch_size, cfg.ttt_chunk_size, cfg.ttt_eval_seq_len
    buckets, L = [], chunk
    while L < E:
        buckets.append(L)
        L *= 2
    buckets.append(E)
    bounds = sorted({b for b in (cfg.phased_ttt_prefix_docs * (i + 1) // P for i in range(P)) if 0 < b < len(spans)}) if P else []
    cuts, out = [0] + bounds + [len(spans)], []
    for lo, hi in zip(cuts, cuts[1:]):
        docs = sorted(spans[lo:hi], key=lambda s: s[0] - s[1])
        for i in range(0, len(docs), bs):
            lens = [e - s for s, e in docs[i:i + bs]]
            ls = []
            for c in range(math.ceil(max(lens) / chunk)):
                need = max(min((c + 1) * chunk, n) - max(0, min((c + 1) * chunk, n) - E) for n in lens)
                ls.append(next(b for b in buckets if b >= need))
            out.append((bs, ls))
    return out


def record_functions(path: Path) -> dict:
    """The record's _find_docs, _build_ttt_global_batches and _compute_chunk_window, compiled
    from its source (only these function definitions are executed)."""
    wanted = {"_find_docs", "_build_ttt_global_batches", "_compute_chunk_window"}
    tree = ast.parse(path.read_text())
    defs = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in wanted]
    if {d.name for d in defs} != wanted:
        raise SystemExit(f"{path}: expected functions {sorted(wanted)}, found {sorted(d.name for d in defs)}")
    ns = {"BOS_ID": 1, "torch": torch}
    exec(compile(ast.Module(body=defs, type_ignores=[]), str(path), "exec"), ns)
    return ns


def record(tokens, cfg, path: Path):
    f = record_functions(path)
    docs = f["_find_docs"](tokens)
    h = argparse.Namespace(ttt_batch_size=cfg.ttt_batch_size)
    out, chunk, E = [], cfg.ttt_chunk_size, cfg.ttt_eval_seq_len
    for _, batch in f["_build_ttt_global_batches"](list(enumerate(docs)), h):
        n_chunks = max((dl - 1 + chunk - 1) // chunk for _, (_, dl) in batch)
        out.append((len(batch), [f["_compute_chunk_window"](c, (c + 1) * chunk, c + 1, chunk, E)[1] for c in range(n_chunks)]))
    return out, len(docs)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--val", required=True, help="validation shard (challenge format)")
    ap.add_argument("--record", type=Path, help="a record's train_gpt.py: adds its protocol's work")
    ap.add_argument("--world", type=int, default=8, help="ranks, for the phase points (default 8)")
    ap.add_argument("--layer-passes", type=int, default=17, help="block passes of the looped model (default 17)")
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    args = ap.parse_args(argv)
    cfg = tg.Config.from_env({})  # the defaults: the record's TTT settings
    tokens = tg.load_shard(args.val)
    spans = tg.document_spans(tokens, 1)
    print(f"val: {len(tokens):,} tokens, {len(spans):,} documents; TTT_BATCH_SIZE={cfg.ttt_batch_size} "
          f"TTT_CHUNK_SIZE={cfg.ttt_chunk_size} TTT_EVAL_SEQ_LEN={cfg.ttt_eval_seq_len} MODEL_DIM={cfg.model_dim}", flush=True)
    rows = {"ours": ours(spans, cfg), "before": before(spans, cfg)}
    if args.record:
        rows["record"], n_docs = record(tokens, cfg, args.record)
        assert n_docs == len(spans), (n_docs, len(spans))
    result = {}
    for name, batches in rows.items():
        w = work(batches, lambda b: b)
        w["attn_flops"] = 4 * cfg.model_dim * w["attn_square"] * args.layer_passes
        w["batches"] = len(batches)
        result[name] = w
    ref = result.get("record", result["ours"])
    print(f"{'protocol':8} {'batches':>8} {'row-tokens':>14} {'x ref':>6} {'attn FLOPs':>12} {'x ref':>6}")
    for name, w in result.items():
        print(f"{name:8} {w['batches']:>8,} {w['row_tokens']:>14,} {w['row_tokens'] / ref['row_tokens']:>6.3f} "
              f"{w['attn_flops']:>12.4e} {w['attn_flops'] / ref['attn_flops']:>6.3f}")
    queue = tg.ttt_queue(spans, cfg)
    for world in sorted({1, args.world}):
        phases = tg.ttt_phases(queue, len(spans), cfg, world)
        steps = [max(0, math.ceil((sum(e - s + 1 for s, e in d) - 1) / cfg.global_ttt_chunk_tokens) - 1) for _, d in phases]
        result[f"phases_world{world}"] = {"after_batches": [p for p, _ in phases], "docs": [len(d) for _, d in phases],
                                          "docs_scored": [sum(len(d) for _, d in queue[:p]) for p, _ in phases], "steps": steps}
        print(f"phases on {world} rank(s): {result[f'phases_world{world}']}")
    P, seq = cfg.phased_ttt_num_phases, cfg.train_seq_len
    ends = [spans[b - 1][1] for b in sorted({cfg.phased_ttt_prefix_docs * (i + 1) // P for i in range(P)}) if 0 < b < len(spans)]
    result["phases_before"] = {"stream_prefix_docs": [cfg.phased_ttt_prefix_docs * (i + 1) // P for i in range(len(ends))],
                               "steps": [math.ceil(math.ceil(e / seq) / (cfg.global_ttt_chunk_tokens // seq)) - 1 for e in ends]}
    print(f"phases before (stream order, any world size): {result['phases_before']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
