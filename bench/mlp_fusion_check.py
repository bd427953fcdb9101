"""Does torch.compile already fuse the LeakyReLU^2 MLP's elementwise work? Compiles one MLP
block of train_gpt.py (forward and backward, bf16 autocast as in training) with inductor and
prints, from the generated code, the kernels between the matmuls: a fused MLP kernel would pay
only where compile leaves more than one elementwise pass over the [tokens, hidden] activation.
CPU inductor here (C++ kernels); the CUDA backend fuses by the same scheduler into Triton kernels.

    python bench/mlp_fusion_check.py [--tokens 256]
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=256)
    args = ap.parse_args(argv)
    import torch
    from torch._inductor.utils import run_and_get_code
    import train_gpt as tg
    cfg = tg.Config.from_env({"COMPILE": "1"})
    mlp = tg.MLP(cfg)
    torch.nn.init.normal_(mlp.proj.weight, std=0.02)
    x = torch.randn(args.tokens, cfg.model_dim, requires_grad=True)

    def step(x):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = mlp(x, {})
        y.float().sum().backward()
        return x.grad

    torch._dynamo.reset()
    _, codes = run_and_get_code(torch.compile(step), x)
    print(f"torch {torch.__version__} mlp_act:{cfg.mlp_act} model_dim:{cfg.model_dim} hidden:{cfg.mlp_hidden} tokens:{args.tokens}")
    for i, code in enumerate(codes):
        calls = re.findall(r"^\s+(?:buf\w+ = )?(\w+(?:\.\w+)*)\((?:buf|arg|primals|tangents|mm|permute|reinterpret_tensor|as_strided)", code, re.M)
        kernels = [c for c in calls if c.startswith("cpp_fused") or c.startswith("extern_kernels") or c.startswith("aten.")]
        print(f"graph {i}: {len(kernels)} calls in order: {', '.join(kernels)}")
        elementwise = [k for k in kernels if "leaky_relu" in k]
        print(f"  kernels touching leaky_relu: {len(elementwise)} ({', '.join(elementwise)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
