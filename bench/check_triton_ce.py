"""Check train_gpt.py's Triton softcap cross-entropy kernels without a GPU: run them in
Triton's interpreter (TRITON_INTERPRET=1, set here before triton is used) on CPU tensors against
the plain fp32 math (loss and logit gradient, softcap on and off), then compile both kernels
for an H100 (sm_90) to check they build for the real target. Needs `triton` importable (it
ships with CUDA builds of torch; a CPU-only torch has none). Prints one line per check and
exits non-zero on a mismatch.

    python bench/check_triton_ce.py [--rows 300 --vocab 1000]
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

if "--compile" not in sys.argv:  # the interpreter must be chosen before triton decorates a kernel
    os.environ["TRITON_INTERPRET"] = "1"
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def interpreted(tg, rows: int, vocab: int, c: float) -> tuple[float, float]:
    """(|loss - reference|, max |grad - reference| / max |reference grad|) on bf16 logits."""
    import torch
    import torch.nn.functional as F
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(rows, vocab, generator=g) * 20).to(torch.bfloat16).requires_grad_()
    y = torch.randint(0, vocab, (rows,), generator=g)
    loss, _ = tg.triton_softcap_ce()(logits, y, c)
    ref = F.cross_entropy(tg.softcap(logits.float(), c), y)
    got, = torch.autograd.grad(loss, logits)
    want, = torch.autograd.grad(ref, logits)
    return abs(loss.item() - ref.item()), ((got.float() - want.float()).abs().max() / want.abs().max()).item()


def compile_sm90(tg) -> list[str]:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    k = tg.triton_softcap_ce().kernels
    common = {"logits": "*bf16", "stride": "i64", "y": "*i64"}
    sigs = {"fwd": {**common, "lse_out": "*fp32", "loss_out": "*fp32"},
            "bwd": {**common, "lse_in": "*fp32", "g": "*fp32", "grad": "*bf16"}}
    out = []
    for name, sig in sigs.items():
        for cap in (True, False):
            src = ASTSource(k[name], {**sig, "V": "i32", "c": "fp32", "CAP": "constexpr", "BLOCK": "constexpr"},
                            constexprs={"CAP": cap, "BLOCK": 1024})
            built = triton.compile(src, target=GPUTarget("cuda", 90, 32))
            out.append(f"sm90 {name} softcap:{int(cap)} cubin_bytes:{len(built.asm['cubin'])}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=300)
    ap.add_argument("--vocab", type=int, default=1000, help="not a multiple of the kernels' 1024 block: the tail is masked")
    ap.add_argument("--compile", action="store_true", help="only compile for sm_90 (run as a child, without the interpreter)")
    args = ap.parse_args(argv)
    import torch
    import triton
    import train_gpt as tg
    if args.compile:
        for line in compile_sm90(tg):
            print(line, flush=True)
        return 0
    print(f"torch {torch.__version__} triton {triton.__version__}", flush=True)
    ok = True
    for c in (30.0, 0.0):
        dl, dg = interpreted(tg, args.rows, args.vocab, c)
        good = dl < 1e-4 and dg < 2e-2  # the gradient is stored in bf16 (8 bits of mantissa)
        ok &= good
        print(f"interpreted softcap:{c} rows:{args.rows} vocab:{args.vocab} loss_abs_err:{dl:.2e} grad_rel_err:{dg:.2e} "
              f"{'ok' if good else 'MISMATCH'}", flush=True)
    import subprocess
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    rc = subprocess.run([sys.executable, __file__, "--compile"], env=env).returncode
    return 0 if ok and rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
