"""Exact BPB of the three eval paths on the bundled sample, for checking that a change to
the byte counting leaves LUT-based scores bit for bit unchanged.

    python bench/bpb_parity.py [REPO]     (REPO: the checkout whose train_gpt.py to import)

Prints loss, bpb (repr, every digit), tokens and bytes of evaluate, evaluate_sliding (stride
64) and evaluate_ttt for a fixed random 2-layer model on the first 6,001 sample val tokens.
"""
import sys
from pathlib import Path

import sentencepiece as spm
import torch

repo = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1])
sys.path.insert(0, str(repo))
import train_gpt as tg  # noqa: E402

sample = repo / "data" / "sample"
sp = spm.SentencePieceProcessor(model_file=str(sample / "sotu_1024_bpe.model"))
cfg = tg.Config.from_env({"NUM_LAYERS": "2", "MODEL_DIM": "64", "NUM_HEADS": "2", "NUM_KV_HEADS": "1",
                          "TRAIN_SEQ_LEN": "128", "TRAIN_BATCH_TOKENS": "1024", "VOCAB_SIZE": "1024",
                          "XSA_LAST_N": "1", "EVAL_BATCH_SEQS": "8", "VAL_BATCH_SIZE": "4096",
                          "TTT_EVAL_SEQ_LEN": "128", "TTT_CHUNK_SIZE": "64", "TTT_LORA_LR": "0.01"})
ctx = tg.Dist(0, 1, 0, torch.device("cpu"))
torch.manual_seed(0)
model = tg.build_model(cfg, ctx, sp.bos_id())
with torch.no_grad():
    for p in model.parameters():
        p.add_(torch.randn_like(p) * 0.05)
model.eval()
tokens = tg.load_shard(sample / "sotu_val_000000.bin")[:6001]
val_bytes = tg.lut_target_bytes(tokens, tg.build_byte_lut(sp, 1024))
for name, fn in [("evaluate", lambda: tg.evaluate(model, tokens, val_bytes, cfg, ctx)),
                 ("sliding64", lambda: tg.evaluate_sliding(model, tokens, val_bytes, cfg, ctx, 64)),
                 ("ttt", lambda: tg.evaluate_ttt(model, tokens, val_bytes, cfg, ctx, lambda m: None))]:
    r = fn()
    print(f"{name} loss={r.loss!r} bpb={r.bpb!r} tokens={r.tokens} bytes={r.bytes}")
