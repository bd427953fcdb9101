"""CPU time of one forward+backward of 1,024 tokens (4 x 256) at the size of the CPU speed
series, one thread, for train_gpt.py at AUTOCAST=bf16 and off, and optionally for the
2026-03-20 record's script patched for CPU (its model built as its main() builds it).
  python probe_forward_backward.py TRAIN_GPT.py [REF_CPU.py]
process_time, not wall time: less sensitive to other jobs on a shared machine."""
import importlib.util
import sys
import time

import torch

torch.set_num_threads(1)


def load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def cpu_ms(model, amp):
    x, y = torch.randint(0, 1024, (4, 256)), torch.randint(0, 1024, (4, 256))
    for i in range(6):
        if i == 2:
            t = time.process_time()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            loss = model(x, y)
        loss.backward()
    return round((time.process_time() - t) / 4 * 1000)


tg = load(sys.argv[1], "tg")
ref = load(sys.argv[2], "ref") if len(sys.argv) > 2 else None
env = dict(NUM_LAYERS="4", MODEL_DIM="256", NUM_HEADS="4", NUM_KV_HEADS="2", MLP_MULT="2", TRAIN_SEQ_LEN="256",
           BIGRAM_VOCAB_SIZE="2048")
res = {}
for rep in range(3):
    for amp in ("bf16", "off"):
        cfg = tg.Config.from_env(env | dict(AUTOCAST=amp))
        res.setdefault(f"ours AUTOCAST={amp}", []).append(cpu_ms(tg.build_model(cfg, tg.Dist(0, 1, 0, torch.device("cpu"))), amp == "bf16"))
    if ref is not None:
        m = ref.GPT(vocab_size=1024, num_layers=4, model_dim=256, num_heads=4, num_kv_heads=2, mlp_mult=2,
                    tie_embeddings=True, tied_embed_init_std=0.005, logit_softcap=30.0, rope_base=10000.0,
                    qk_gain_init=1.5, bigram_vocab_size=2048, bigram_dim=128).bfloat16()
        for module in m.modules():
            if isinstance(module, ref.CastedLinear):
                module.float()
        ref.restore_low_dim_params_to_fp32(m)
        res.setdefault("2026-03-20 record (bf16 autocast)", []).append(cpu_ms(m, True))
for k, v in res.items():
    print(f"{k:<36} {v} CPU ms per forward+backward of 1024 tokens, 1 thread")
