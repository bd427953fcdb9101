"""Kernel count and CPU time of one refresh_qat on the full default model.
Usage: python bench/results/qat_refresh/measure.py SCRIPT.py  (the train_gpt.py to measure)"""
import importlib.util
import inspect
import sys
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode

spec = importlib.util.spec_from_file_location("tg", sys.argv[1])
tg = importlib.util.module_from_spec(spec)
sys.modules["tg"] = tg  # dataclasses look their module up
spec.loader.exec_module(tg)


class CountOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.n += 1
        return func(*args, **(kwargs or {}))


torch.set_num_threads(1)
cfg = tg.Config.from_env({"DATA_PATH": "/tmp"})  # the script's defaults (11L, d=512, int5/int6, clip search)
model = tg.build_model(cfg, tg.Dist(0, 1, 0, torch.device("cpu")))
n_qat = sum(1 for m in model.modules() if isinstance(m, tg.Linear) and m.qat)
stack_modes = [None]
if "stack" in inspect.signature(tg.refresh_qat).parameters:  # scripts that can stack: both modes
    stack_modes = [False, True]
for stack in stack_modes:
    kw = {} if stack is None else {"stack": stack}
    with CountOps() as c:
        tg.refresh_qat(model, **kw)
    times = []
    for _ in range(5):
        t = time.perf_counter()
        tg.refresh_qat(model, **kw)
        times.append(1000 * (time.perf_counter() - t))
    print(f"script:{sys.argv[1]} stack:{stack} qat_linears:{n_qat} aten_ops_per_refresh:{c.n} "
          f"cpu_ms_per_refresh(1 thread, 5 runs):{' '.join(f'{t:.0f}' for t in times)}")
