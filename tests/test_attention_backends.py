"""Attention backends for document-masked attention: FlexAttention (ATTN_BACKEND=flex) equals
masked SDPA in values and gradients on rows and packed rows with grouped KV heads, its block
mask is the one FlexAttention itself derives from the mask, built once per forward, and one
compiled graph serves batches with any document boundaries; FA3's cu_seqlens has a fixed length
and an overfull batch is counted, never merged silently; how auto resolves."""
import importlib.util

import pytest
import torch

from conftest import compile_counting_graphs
from test_loader_docpack import PACKED, SEQ, packed_row, reference_varlen
from test_model_and_muon import cpu, randomize, tiny_cfg
from test_model_stack import BOS, OFF

ROWS = {**OFF, "ATTN_DOC_MASK": "1", "XSA_LAST_N": "2", "NUM_HEADS": "4", "NUM_KV_HEADS": "2", "MODEL_DIM": "64"}
fa = pytest.importorskip("torch.nn.attention.flex_attention")


@pytest.fixture
def flex_grads(monkeypatch):
    """torch refuses FlexAttention with requires_grad on CPU (no fused CPU backward); its eager
    path is dense math with a real backward, enough to check values and gradients here."""
    monkeypatch.setattr(fa, "_validate_device", lambda *a: None)


def batch(packed: bool, seed: int = 3, extra=()):
    ids = packed_row(torch.Generator().manual_seed(seed))
    ids[0, list(extra)] = BOS
    return ids if packed else ids.view(4, SEQ)


@pytest.mark.parametrize("packed", [False, True])
def test_flex_equals_masked_sdpa_values_and_grads(tg, flex_grads, packed):
    env = {**PACKED, "NUM_HEADS": "4", "NUM_KV_HEADS": "2"} if packed else ROWS
    model = randomize(tg.build_model(tiny_cfg(tg, **env), cpu(tg)))
    assert model.cfg.num_heads != model.cfg.num_kv_heads
    ids = batch(packed)
    y = torch.randint(0, 128, ids.shape, generator=torch.Generator().manual_seed(1))
    out = {}
    for backend in ("sdpa", "flex"):
        tg.set_attn_backend(model, backend)
        model.zero_grad()
        loss = model(ids, y, packed=packed)
        loss.backward()
        out[backend] = loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]
    (l0, g0), (l1, g1) = out["sdpa"], out["flex"]
    torch.testing.assert_close(l1, l0, rtol=1e-5, atol=1e-6)
    assert len(g0) == len(g1) and len(g0) > 10
    for a, b in zip(g0, g1):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("B,T", [(3, 300), (2, 640), (4, 32)])
def test_flex_block_mask_is_flexattentions_own(tg, B, T):
    """The block lists built from each block's first and last document equal what
    create_block_mask derives by evaluating the mask everywhere (partial and full blocks)."""
    g = torch.Generator().manual_seed(T)
    ids = torch.randint(2, 64, (B, T), generator=g)
    ids[torch.rand(B, T, generator=g) < 0.01] = BOS
    ids[0, 130:140] = BOS  # a run of one-token documents
    seg = tg.segment_starts(ids, BOS, T).cumsum(1)
    ours = tg.flex_block_mask(seg)
    at = lambda b, i: seg[b, i.clamp(max=T - 1)]  # padding past T: the last document's (its rows are dropped)

    def doc_causal(b, h, q, k):
        return (q >= k) & (at(b, q) == at(b, k))
    want = fa.create_block_mask(doc_causal, B, None, T, T, device="cpu", BLOCK_SIZE=tg.FLEX_BLOCK)
    assert torch.equal(ours.to_dense(), want.to_dense())  # the same blocks touched
    whole = T // tg.FLEX_BLOCK  # query blocks without padding (create_block_mask never calls a padded block full)
    n, full = ours.kv_num_blocks, ours.full_kv_num_blocks
    assert torch.equal(n[..., :whole], want.kv_num_blocks[..., :whole])
    assert torch.equal(full[..., :whole], want.full_kv_num_blocks[..., :whole])
    for r in range(B):  # the listed blocks themselves, as sets
        for i in range(whole):
            assert set(ours.kv_indices[r, 0, i, :n[r, 0, i]].tolist()) == set(want.kv_indices[r, 0, i, :n[r, 0, i]].tolist())
            assert (set(ours.full_kv_indices[r, 0, i, :full[r, 0, i]].tolist())
                    == set(want.full_kv_indices[r, 0, i, :full[r, 0, i]].tolist()))


def test_flex_mask_built_once_per_forward_and_one_graph_for_any_documents(tg, monkeypatch):
    model = randomize(tg.build_model(tiny_cfg(tg, **PACKED), cpu(tg))).eval()
    tg.set_attn_backend(model, "flex")
    built, real = [], tg.flex_block_mask
    monkeypatch.setattr(tg, "flex_block_mask", lambda seg: built.append(1) or real(seg))
    with torch.no_grad():
        model(batch(True), packed=True)
    assert len(built) == 1 and len(tg.virtual_layers(model.cfg, model.looping)) > 1  # shared by every layer
    monkeypatch.setattr(tg, "flex_block_mask", real)  # dynamo would guard on the recording list's length
    compiled, graphs = compile_counting_graphs(model)
    with torch.no_grad():
        for extra in ((), (100,), (30, 90, 120), tuple(range(40, 60))):
            for packed in (True, False):
                ids = batch(packed, extra=extra)
                torch.testing.assert_close(compiled(ids, packed=packed), model(ids, packed=packed), rtol=0, atol=0)
    assert len(graphs) == 2  # one per shape (packed row, rows), none per batch
    torch._dynamo.reset()


def test_flex_compiled_skips_blocks_and_matches_masked_sdpa(tg):
    """Compiled (inductor), FlexAttention really skips the blocks the mask lists as empty: its
    output still equals masked SDPA (forward; CPU has no flex backward)."""
    if tg.cpu_compiler() is None:
        pytest.skip("no C++ compiler for inductor")
    g = torch.Generator().manual_seed(0)
    B, H, Hkv, T, D = 2, 4, 2, 300, 16
    ids = torch.randint(2, 64, (B, T), generator=g)
    ids[:, [70, 200, 201, 290]] = BOS
    seg = tg.segment_starts(ids, BOS, T).cumsum(1)
    q, k, v = torch.randn(B, H, T, D, generator=g), torch.randn(B, Hkv, T, D, generator=g), torch.randn(B, Hkv, T, D, generator=g)
    pos = torch.arange(T)
    mask = ((pos[:, None] >= pos[None, :]) & (seg[:, :, None] == seg[:, None, :]))[:, None]
    want = tg.masked_sdpa(q, k, v, mask)
    torch._dynamo.reset()
    run = torch.compile(lambda q, k, v, seg: fa.flex_attention(q, k, v, block_mask=tg.flex_block_mask(seg), enable_gqa=True),
                        fullgraph=True, dynamic=False)
    torch.testing.assert_close(run(q, k, v, seg), want, rtol=1e-4, atol=1e-5)
    torch._dynamo.reset()


def test_fa3_cu_seqlens_fixed_length_and_overflow_counted(tg, monkeypatch):
    calls = []
    monkeypatch.setattr(tg, "FLASH_ATTN_VARLEN_FUNC", reference_varlen(calls))
    model = randomize(tg.build_model(tiny_cfg(tg, **ROWS), cpu(tg))).eval()
    tg.set_attn_backend(model, "fa3")
    ids = batch(False)
    cap = tg.fa3_segment_cap(*ids.shape)
    with torch.no_grad():
        model(ids)
        assert len(calls[-1][0]) == cap + 1 and int(model.fa3_overflow) == 0 and tg.fa3_overflow_problem(model) is None
        full = ids.clone()
        full[:, ::2] = BOS  # 64 segments in 128 tokens: more than the cap holds
        assert full.size(0) + full.numel() // 2 > cap
        model(full)
    assert int(model.fa3_overflow) == 1 and "ATTN_BACKEND=flex" in tg.fa3_overflow_problem(model)


def test_auto_backend_resolution(tg, monkeypatch):
    cuda = torch.device("cuda")
    monkeypatch.setattr(tg, "importable", lambda m: m != "flash_attn_interface")  # torch's flex, no FA3
    assert tg.resolve_attn_backend(tiny_cfg(tg, ATTN_DOC_MASK="1"), cuda) == "flex"
    assert tg.resolve_attn_backend(tiny_cfg(tg, ATTN_DOC_MASK="0"), cuda) == "sdpa"  # causal: SDPA's flash kernel
    assert tg.resolve_attn_backend(tiny_cfg(tg, ATTN_DOC_MASK="1"), torch.device("cpu")) == "sdpa"
    with pytest.raises(ValueError, match="ATTN_BACKEND=flex needs a CUDA device"):
        tg.resolve_attn_backend(tiny_cfg(tg, ATTN_BACKEND="flex"), torch.device("cpu"))
    monkeypatch.setattr(tg, "importable", lambda m: False)  # a torch without flex_attention
    with pytest.raises(ImportError, match="flex_attention"):
        tg.resolve_attn_backend(tiny_cfg(tg, ATTN_BACKEND="flex"), cuda)


def test_dry_run_says_which_backend_runs(tg, capsys, monkeypatch):
    monkeypatch.setattr(tg, "importable", lambda m: m != "flash_attn_interface")
    tg.dry_run(tg.Config.from_env({}), 8)
    assert "check attention: PASS attn_backend:flex on CUDA with torch " in capsys.readouterr().out
    if importlib.util.find_spec("flash_attn_interface") is not None:
        return
    tg.dry_run(tg.Config.from_env({"ATTN_BACKEND": "fa3"}), 8)
    assert "check attention: FAIL ATTN_BACKEND=fa3 but flash_attn_interface does not import" in capsys.readouterr().out


def test_attention_bench_runs_a_case(tmp_path):
    import json
    import subprocess
    import sys
    from conftest import REPO, SAMPLE
    out = tmp_path / "bench.jsonl"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "attention_bench.py"), "--tokens",
                           str(SAMPLE / "sotu_val_000000.bin"), "--out", str(out), "--reps", "1",
                           "--only", "attn:sdpa_masked:256:fwd"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    row = json.loads(out.read_text().splitlines()[0])  # the prefix also selects the fwdbwd case
    assert row["case"] == "attn:sdpa_masked:256:fwd" and row["B"] == 32 and row["steady_extra_mb"] > 0 and row["ms"] > 0


def test_dry_run_memory_projection_traces_the_compiled_step(tg, capsys):
    """DRY_RUN_MEMORY=1: the compiled step's saved activations come from a trace (nothing runs):
    they grow with the micro-batch, and the looped step (more block passes) keeps more."""
    env = {"NUM_LAYERS": "4", "MODEL_DIM": "64", "NUM_HEADS": "4", "NUM_KV_HEADS": "2", "TRAIN_SEQ_LEN": "64",
           "VOCAB_SIZE": "128", "NUM_LOOPS": "1", "LOOP_START": "1", "LOOP_END": "2", "PARALLEL_START_LAYER": "0",
           "XSA_LAST_N": "1", "BIGRAM_VOCAB_SIZE": "0", "AUTOCAST": "off"}
    small = tg.saved_activation_bytes(tg.Config.from_env({**env, "TRAIN_BATCH_TOKENS": "2048"}), False)
    big = tg.saved_activation_bytes(tg.Config.from_env({**env, "TRAIN_BATCH_TOKENS": "4096"}), False)
    looped = tg.saved_activation_bytes(tg.Config.from_env({**env, "TRAIN_BATCH_TOKENS": "2048"}), True)
    assert 0 < small and 1.6 * small < big < 2.1 * small and looped > 1.2 * small
    cfg = tg.Config.from_env({**env, "TRAIN_BATCH_TOKENS": "2048", "DRY_RUN_MEMORY": "1"})
    lines = tg.memory_projection(cfg, tg.GPT(cfg, max_len=64))
    assert [l.split(":")[0] for l in lines] == ["projected_memory_per_rank plain", "projected_memory_per_rank looped"]
    assert f"saved_activations:{small / 2 ** 30:.2f}GiB" in lines[0]
