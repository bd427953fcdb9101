"""FUSED_CE: the training loss without fp32 logits of the whole micro-batch. The chunked torch
path equals the plain math (softcap, fp32 cross-entropy) in value and gradients, in several
chunks with a remainder, softcap on and off, fp32 and bf16; inside the model it gives the
plain path's loss and gradients; no fp32 tensor of [rows, vocab] is ever created. The Triton
kernels are checked by bench/check_triton_ce.py where triton imports (interpreter + sm_90 build)."""
import importlib.util
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from conftest import REPO
from test_model_and_muon import cpu, randomize, tiny_cfg


def plain(x, w, y, c):
    return F.cross_entropy(((c * torch.tanh(F.linear(x, w).float() / c)) if c else F.linear(x, w).float()), y)


@pytest.mark.parametrize("c", [30.0, 0.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_chunked_equals_plain_math(tg, monkeypatch, c, dtype):
    monkeypatch.setattr(tg, "CE_CHUNK_LOGITS", 128 * 40)  # 40 rows per chunk: 4 chunks and a remainder of 10
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(170, 32, generator=g) * 2).to(dtype).requires_grad_()
    w = (torch.randn(128, 32, generator=g) * 2).to(dtype).requires_grad_()
    y = torch.randint(0, 128, (170,), generator=g)
    got = tg.ChunkedSoftcapCE.apply(x, w, y, c)
    want = plain(x, w, y, c)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=2e-2, atol=1e-4)
    torch.testing.assert_close(got, want, **tol)
    for a, b in zip(torch.autograd.grad(got, (x, w)), torch.autograd.grad(want, (x, w))):
        assert a.dtype == dtype
        torch.testing.assert_close(a.float(), b.float(), **tol)


def test_model_loss_and_grads_fused_equal_plain(tg, monkeypatch):
    monkeypatch.setattr(tg, "CE_CHUNK_LOGITS", 128 * 50)
    ids = torch.randint(2, 128, (4, 32), generator=torch.Generator().manual_seed(2))
    y = torch.randint(0, 128, (4, 32), generator=torch.Generator().manual_seed(3))
    out = {}
    for fused in ("0", "1"):
        model = randomize(tg.build_model(tiny_cfg(tg, FUSED_CE=fused, LOGIT_SOFTCAP="15"), cpu(tg)))
        loss = model(ids, y)
        loss.backward()
        out[fused] = loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    torch.testing.assert_close(out["1"][0], out["0"][0], rtol=1e-6, atol=1e-6)
    assert out["1"][1].keys() == out["0"][1].keys() and "tok_emb" in out["1"][1]
    for n, gr in out["0"][1].items():
        torch.testing.assert_close(out["1"][1][n], gr, rtol=1e-4, atol=1e-6, msg=n)


class LargestFp32(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.shapes = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in (out if isinstance(out, (tuple, list)) else [out]):
            if isinstance(t, torch.Tensor) and t.dtype == torch.float32 and t.dim() == 2:
                self.shapes.append(tuple(t.shape))
        return out


def test_no_fp32_logits_of_the_whole_batch(tg, monkeypatch):
    """Forward and backward of a 256-row micro-batch at vocab 512 in chunks of 64 rows: no 2-D
    fp32 tensor with more than 64 rows of the vocab exists (the plain path makes [256, 512] ones)."""
    monkeypatch.setattr(tg, "CE_CHUNK_LOGITS", 64 * 512)
    ids = torch.randint(2, 512, (8, 32), generator=torch.Generator().manual_seed(2))
    for fused, most in (("1", 64), ("0", 256)):
        model = tg.build_model(tiny_cfg(tg, FUSED_CE=fused, VOCAB_SIZE="512"), cpu(tg))
        mode = LargestFp32()
        with mode:
            model(ids, ids).backward()
        assert max(r for r, v in mode.shapes if v == 512) == most


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton does not import (CPU-only torch)")
def test_triton_kernels_match_plain_math_interpreted():
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "check_triton_ce.py")], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0 and proc.stdout.count(" ok") == 2, proc.stdout + proc.stderr
