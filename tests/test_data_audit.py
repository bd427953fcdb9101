"""The train/val document audit: data/audit_data.py, the trainer's sampled check and trust of a
full audit (train_gpt.audit_data), build_sp_dataset.py --official-split, and the records tool.

Synthetic shards: random documents (token ids 2..999, BOS = 1), written in small shards so that
documents cross shard boundaries, read in small chunks so that they cross chunk boundaries."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"


def _load(name: str):
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "data" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


bsd = _load("build_sp_dataset")
aud = _load("audit_data")

SHARD = 20_000  # tokens per synthetic shard


def random_docs(n: int, seed: int, lo: int = 5, hi: int = 300) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(2, 1000, size=int(rng.integers(lo, hi)), dtype=np.uint16) for _ in range(n)]


def stream(docs: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.concatenate([[1], d]).astype(np.uint16) for d in docs])


def write_split(folder: Path, split: str, tokens: np.ndarray, shard: int = SHARD) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(0, len(tokens), shard):
        paths.append(folder / f"fineweb_{split}_{i // shard:06d}.bin")
        bsd.write_shard(paths[-1], tokens[i:i + shard])
    return paths


def dataset(folder: Path, val_docs, train_docs, shard: int = SHARD) -> Path:
    write_split(folder, "val", stream(val_docs))
    write_split(folder, "train", stream(train_docs), shard)
    return folder


def audit(folder: Path, **kw) -> dict:
    kw.setdefault("chunk_tokens", 3_000)
    lines = []
    result = aud.run_audit(folder, aud.AuditOptions(**kw), progress=False, log=lines.append)
    result["lines"] = lines
    return result


@pytest.fixture(scope="module")
def docs():
    return random_docs(200, seed=1), random_docs(1500, seed=2)


def test_clean_data_passes_with_every_document_counted(tmp_path, docs):
    val, train = docs
    folder = dataset(tmp_path / "d", val, train)
    r = audit(folder)
    assert r["result"] == "PASS" and r["problems"] == [] and r["shared_docs"]["count"] == 0
    assert r["val"]["docs"] == 200 and r["val"]["targets"] == len(stream(val)) - 1
    assert r["train"]["docs"] == 1500 and r["train"]["tokens"] == len(stream(train))
    assert r["val"]["docs_digest"] == aud.docs_digest([aud.doc_hash(d) for d in val])
    # the chunk size changes nothing but memory
    assert audit(folder, chunk_tokens=10**7)["digest"] == r["digest"]
    assert {k: v for k, v in audit(folder, chunk_tokens=10**7).items() if k != "lines"} == \
        {k: v for k, v in r.items() if k != "lines"}
    assert aud.main([str(folder), "--no-progress"]) == 0
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["audit"]["digest"] == r["digest"] and manifest["audit"]["result"] == "PASS"


@pytest.mark.parametrize("at", [10, 137])  # doc 137 starts in one shard and ends in the next
def test_one_validation_document_copied_into_training_is_found_with_its_place(tmp_path, docs, at):
    val, train = docs
    planted = train[:at] + [val[17]] + train[at:]
    folder = dataset(tmp_path / "d", val, planted)
    start = len(stream(planted[:at]))  # the copy's BOS in the training stream
    r = audit(folder)
    assert r["result"] == "FAIL" and r["shared_docs"]["count"] == 1
    [hit] = r["shared_docs"]["first"]
    assert hit["val_doc"] == 17 and hit["tokens"] == len(val[17]) + 1
    assert hit["train"] == f"fineweb_train_{start // SHARD:06d}.bin@{start % SHARD}"
    assert hit["val"] == f"fineweb_val_000000.bin@{len(stream(val[:17]))}"
    assert any(line.startswith("shared: val document 17 ") for line in r["lines"])
    assert aud.main([str(folder), "--no-progress", "--no-write"]) == 1


def test_the_2127_layout_scaled_down(tmp_path):
    """The records' CaseOps preparation held out 10,000 documents: documents 10,000-50,000 of the
    scored split were in training. Scaled down: 500 validation documents, the first 100 held out."""
    docs = random_docs(2500, seed=3)
    folder = dataset(tmp_path / "d", docs[:500], docs[100:])
    report = tmp_path / "shared.tsv"
    assert aud.main([str(folder), "--no-progress", "--report", str(report), "--chunk-tokens", "5000"]) == 1
    r = json.loads((folder / "manifest.json").read_text())["audit"]
    assert r["shared_docs"]["count"] == 400 and r["shared_docs"]["val_docs"] == 400
    rows = report.read_text().splitlines()[1:]
    assert sorted(int(row.split("\t")[1]) for row in rows) == list(range(100, 500))


def test_near_duplicates_minus_a_prefix_or_inside_a_longer_document(tmp_path, docs):
    val, train = docs
    val = random_docs(2, seed=11, lo=250, hi=300) + val  # long enough for several anchors
    cut = val[0][len(val[0]) * 2 // 5:]  # the same document minus 40% of its tokens
    inside = np.concatenate([train[0], val[1], train[1]])  # embedded in a longer document
    folder = dataset(tmp_path / "d", val, train[:50] + [cut] + train[50:100] + [inside] + train[100:])
    assert audit(folder)["result"] == "PASS"  # not equal to any validation document
    r = audit(folder, near_dup=True)
    found = {(n["val_doc"], n["train"]) for n in r["near_duplicates"]["first"]}
    assert {v for v, _ in found} == {0, 1}, r["near_duplicates"]
    assert r["result"] == "PASS"  # reported; failing is asked for
    assert audit(folder, near_dup=True, fail_on_near_dup=True)["result"] == "FAIL"
    # random unrelated documents share no anchors
    assert audit(dataset(tmp_path / "clean", val, train), near_dup=True)["near_duplicates"]["count"] == 0


def test_window_anchors_do_not_depend_on_where_a_document_starts():
    doc = random_docs(1, seed=4, lo=400, hi=401)[0]
    pos, h = aud.window_anchors(np.concatenate([[1], doc]).astype(np.uint16), 1, 32, 8)
    pos2, h2 = aud.window_anchors(np.concatenate([[1], doc[57:]]).astype(np.uint16), 1, 32, 8)
    assert 20 < len(h) < 120 and set(h2) == {x for p, x in zip(pos, h) if p - 1 >= 57}


def test_coverage_against_the_official_counts(tmp_path, docs, monkeypatch):
    val, train = docs
    targets = len(stream(val)) - 1
    monkeypatch.setattr(aud, "OFFICIAL_DOCS", 200)
    monkeypatch.setitem(aud.OFFICIAL, "sp8192", {"dataset": "fineweb10B_sp8192", "targets": targets - 100})
    full = audit(dataset(tmp_path / "fineweb10B_sp8192", val, train))  # official count + a 100-token tail
    assert full["result"] == "PASS" and full["coverage"]["official"] == "sp8192"
    short = dataset(tmp_path / "cut" / "fineweb10B_sp8192", val[:150], train)  # a truncated split
    r = audit(short)
    assert r["result"] == "FAIL" and any("150 documents, the official split 200" in p for p in r["problems"])
    assert any("target tokens; the published sp8192 split has" in p for p in r["problems"])
    assert audit(short, official="none")["result"] == "PASS"


def test_validation_stream_that_does_not_start_with_bos(tmp_path, docs):
    val, train = docs
    folder = dataset(tmp_path / "d", val, train)
    tokens = bsd.read_shard(folder / "fineweb_val_000000.bin")
    bsd.write_shard(folder / "fineweb_val_000000.bin", tokens[5:])
    r = audit(folder)
    assert r["val"]["docs"] == 199 and any(f"{len(val[0]) - 4} tokens before its first BOS" in p for p in r["problems"])


def test_sidecar_against_the_decoded_text(tmp_path):
    src = tmp_path / "c.jsonl"
    src.write_text("".join(json.dumps({"text": f"Paragraph {i}: the quick brown fox number {i * 37} jumps."}) + "\n"
                           for i in range(60)), encoding="utf-8")
    out = tmp_path / "b"
    assert bsd.main([str(src), "--output-dir", str(out), "--val-docs", "20", "--byte-sidecar", "--tokenizer",
                     str(SAMPLE / "sotu_1024_bpe.model"), "--no-progress", "--workers", "1"]) == 0
    side = json.loads((out / "manifest.json").read_text())["audit"]["sidecar"]
    assert side["mismatched_docs"] == 0 and side["total"] == side["decoded_text_bytes"] > 0
    counts = bsd.read_shard(out / "fineweb_val_bytes_000000.bin")
    counts[40] += 1
    bsd.write_shard(out / "fineweb_val_bytes_000000.bin", counts)
    r = audit(out)
    assert r["result"] == "FAIL" and r["sidecar"]["mismatched_docs"] == 1


def test_downloaded_export_layout_finds_its_tokenizer(tmp_path):
    """data/datasets/<name>/ with the tokenizer under data/tokenizers/, named by data/manifest.json."""
    src = tmp_path / "c.jsonl"
    src.write_text("".join(json.dumps({"text": f"Line {i} of the export."}) + "\n" for i in range(30)), encoding="utf-8")
    built = tmp_path / "b"
    assert bsd.main([str(src), "--output-dir", str(built), "--val-docs", "10", "--byte-sidecar", "--no-audit",
                     "--tokenizer", str(SAMPLE / "sotu_1024_bpe.model"), "--no-progress", "--workers", "1"]) == 0
    root = tmp_path / "data"
    folder = root / "datasets" / "fineweb10B_sp1024"
    folder.mkdir(parents=True)
    for shard in built.glob("fineweb_*.bin"):
        shutil.copy(shard, folder / shard.name)
    (root / "tokenizers").mkdir()
    shutil.copy(SAMPLE / "sotu_1024_bpe.model", root / "tokenizers" / "fineweb_1024_bpe.model")
    (root / "manifest.json").write_text(json.dumps({
        "datasets": [{"name": "fineweb10B_sp1024", "tokenizer_name": "sp_bpe_1024"}],
        "tokenizers": [{"name": "sp_bpe_1024", "model_path": "tokenizers/fineweb_1024_bpe.model"}]}))
    r = audit(folder)
    assert r["sidecar"]["tokenizer"] == "fineweb_1024_bpe.model" and r["sidecar"]["mismatched_docs"] == 0
    assert r["coverage"]["official"] == "sp1024" and r["result"] == "FAIL"  # 10 documents are not the official split
    assert audit(folder, official="none")["result"] == "PASS"


def test_official_split_build_holds_out_50000_documents_and_passes(tmp_path):
    src = tmp_path / "c.jsonl"
    src.write_text("".join(json.dumps({"text": f"Document {i} holds {i * 7919 % 100003}."}) + "\n"
                           for i in range(50_030)), encoding="utf-8")
    out = tmp_path / "b"
    assert bsd.main([str(src), "--output-dir", str(out), "--official-split", "--tokenizer",
                     str(SAMPLE / "sotu_1024_bpe.model"), "--shard-tokens", "400000", "--no-progress",
                     "--workers", "1"]) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["docs_val"] == 50_000 and m["audit"]["result"] == "PASS"
    assert m["audit"]["val"]["docs"] == 50_000 and m["audit"]["coverage"]["expected_docs"] == 50_000
    assert m["val_docs_digest"] == m["audit"]["val"]["docs_digest"]
    # the audit checks the val shards against the digest the build wrote
    m["val_docs_digest"] = "0" * 64
    (out / "manifest.json").write_text(json.dumps(m))
    assert any("differs from the one the build wrote" in p for p in audit(out)["problems"])


def test_official_split_on_a_small_corpus_is_one_line_and_leaves_nothing(tmp_path, capsys):
    src = tmp_path / "c.jsonl"
    src.write_text("".join(json.dumps({"text": f"doc number {i}."}) + "\n" for i in range(5)), encoding="utf-8")
    out = tmp_path / "o"
    assert bsd.main([str(src), "--output-dir", str(out), "--official-split", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "first 50,000 documents" in err and "--val-docs" in err
    assert not out.exists()


def test_usage_errors_exit_2(tmp_path, capsys):
    assert aud.main([str(tmp_path / "missing"), "--no-progress"]) == 2
    assert "not a directory" in capsys.readouterr().err
    tmp_path.joinpath("empty").mkdir()
    assert aud.main([str(tmp_path / "empty"), "--no-progress"]) == 2
    assert "no val shards match" in capsys.readouterr().err


# ----- the trainer's side -----

def cfg_for(tg, folder: Path):
    return tg.Config.from_env({"DATA_PATH": str(folder), "VOCAB_SIZE": "1024"})


def test_trainer_uses_the_tools_hashes_and_fingerprints(tg, tmp_path):
    tokens = stream(random_docs(6000, seed=5))  # about 900,000 tokens: 8 separate sample blocks
    [path] = write_split(tmp_path, "train", tokens, shard=10**7)
    fp, blocks = aud.read_blocks(path)
    fp_tg, blocks_tg = tg.shard_sample(str(path))
    assert fp == fp_tg and len(blocks) == aud.SAMPLE_BLOCKS
    assert aud.sample_blocks(1000) == [(0, 1000)] and aud.read_blocks(path)[0] != aud.read_blocks(write_split(
        tmp_path / "x", "train", tokens[:-1], shard=10**7)[0])[0]
    assert [(o, b.tolist()) for o, b in blocks] == [(o, b.tolist()) for o, b in blocks_tg]
    assert (tg.AUDIT_BLOCK, tg.AUDIT_BLOCKS) == (aud.BLOCK_TOKENS, aud.SAMPLE_BLOCKS)
    assert tg.doc_hash(tokens[1:50]) == aud.doc_hash(tokens[1:50])
    folder = dataset(tmp_path / "d", *[random_docs(n, seed=s) for n, s in ((50, 6), (400, 7))])
    r = audit(folder)
    assert tg.audit_digest(r) == r["digest"] == aud.audit_digest(r["shards"])


def trainer_audit(tg, folder: Path):
    files = lambda split: sorted(str(p) for p in folder.glob(f"fineweb_{split}_0*.bin"))
    return tg.audit_data(cfg_for(tg, folder), files("train"), files("val"), 1)


def test_trainer_trusts_a_matching_full_audit_and_logs_its_digest(tg, tmp_path, docs):
    val, train = docs
    folder = dataset(tmp_path / "d", val, train)
    problems, line = trainer_audit(tg, folder)
    assert problems == [] and line.startswith("data_audit:UNVERIFIED (no full audit in")
    assert f"val_docs:200 val_targets:{len(stream(val)) - 1} " in line and "sampled_shared:0" in line
    assert aud.main([str(folder), "--no-progress"]) == 0
    digest = json.loads((folder / "manifest.json").read_text())["audit"]["digest"]
    problems, line = trainer_audit(tg, folder)
    assert problems == [] and line.startswith(f"data_audit:{digest} full:PASS")
    # a shard changed after the audit: the audit no longer describes the data
    tokens = bsd.read_shard(folder / "fineweb_train_000002.bin")
    tokens[3] = 7 if tokens[3] != 7 else 8
    bsd.write_shard(folder / "fineweb_train_000002.bin", tokens)
    problems, line = trainer_audit(tg, folder)
    assert problems == [] and "data_audit:UNVERIFIED (the full audit" in line and "fineweb_train_000002.bin" in line


def test_trainer_logs_other_audit_findings_and_trains(tg, tmp_path, docs):
    """A split that is not the published one (or a sidecar that disagrees with the text) is the
    log's to carry, for records_tool validate; only training on validation documents stops a run."""
    folder = dataset(tmp_path / "d", *docs)
    assert aud.main([str(folder), "--no-progress", "--official", "sp8192"]) == 1
    problems, line = trainer_audit(tg, folder)
    assert problems == [] and " full:FAIL " in line
    assert "problems: the validation split has 200 documents, the official split 50,000;" in line


def test_trainer_refuses_a_sampled_overlap_and_a_failed_full_audit(tg, tmp_path):
    docs = random_docs(2500, seed=3)
    folder = dataset(tmp_path / "d", docs[:500], docs[100:])  # the #2127 layout: found at a shard's head
    problems, line = trainer_audit(tg, folder)
    assert len(problems) == 1 and "sampled training documents are validation documents" in problems[0]
    assert "fineweb_train_000000.bin token 0 " in problems[0] and "= validation document 100" in problems[0]
    # a full audit that failed on these very shards stops the run even where the sample misses
    val, train = random_docs(200, seed=1), random_docs(20_000, seed=2)
    folder = dataset(tmp_path / "e", val, train[:1600] + [val[9]] + train[1600:], shard=10**7)
    at = len(stream(train[:1600]))
    assert not any(s <= at < s + size for s, size in aud.sample_blocks(len(stream(train)) + len(val[9]) + 1))
    assert trainer_audit(tg, folder)[0] == []  # not in a sample block: the sample cannot see it
    assert aud.main([str(folder), "--no-progress"]) == 1
    problems, line = trainer_audit(tg, folder)
    assert len(problems) == 1 and "the full audit in" in problems[0] and "1 training documents are copies" in problems[0]


def test_dry_run_and_the_run_log_carry_the_sample_audit_digest(tg, capsys):
    """The bundled sample's manifest holds its full audit (written by its build): DRY_RUN prints
    the digest, as a run's preflight logs it."""
    from conftest import TINY_ENV
    digest = json.loads((SAMPLE / "manifest.json").read_text())["audit"]["digest"]
    assert tg.dry_run(tg.Config.from_env(TINY_ENV | {"DRY_RUN_STEP_MS": "100"}), 1) == 0
    out = capsys.readouterr().out
    assert f"\ndata_audit:{digest} full:PASS " in out and "sampled_shared:0" in out


def test_a_manifest_holding_only_an_audit_is_not_a_tokenizer_check(tg, tmp_path, docs):
    """Auditing a downloaded export's folder creates DATA_PATH/manifest.json with only "audit":
    the trainer must not log it as a manifest the tokenizer was checked against."""
    folder = dataset(tmp_path / "d", *docs)
    assert aud.main([str(folder), "--no-progress"]) == 0 and list(json.loads((folder / "manifest.json").read_text())) == ["audit"]
    import sentencepiece as spm
    cfg = tg.Config.from_env({"DATA_PATH": str(folder), "TOKENIZER_PATH": str(SAMPLE / "sotu_1024_bpe.model"),
                              "VOCAB_SIZE": "1024"})
    lines = []
    tg.check_tokenizer(cfg, spm.SentencePieceProcessor(model_file=cfg.tokenizer_path), lines.append)
    assert lines[-1] == "tokenizer_manifest_check:none (no manifest describes DATA_PATH)"


def test_the_tools_sample_mode_finds_what_the_trainer_finds(tg, tmp_path, capsys):
    docs = random_docs(6000, seed=8)
    folder = dataset(tmp_path / "d", docs[:500], docs[100:], shard=600_000)  # shards longer than the 8 blocks
    problems, _ = trainer_audit(tg, folder)
    r = aud.sampled_check(sorted(folder.glob("fineweb_val_0*.bin")), sorted(folder.glob("fineweb_train_0*.bin")), 1)
    assert problems and problems[0].startswith(f"{len(r['shared'])} sampled training documents")
    assert 0 < len(r["shared"]) <= 400 and r["shared"][0] == {"val_doc": 100, "train": "fineweb_train_000000.bin@0",
                                                            "tokens": len(docs[100]) + 1}
    assert aud.main([str(folder), "--sample"]) == 1
    assert f"shared:{len(r['shared'])} " in capsys.readouterr().out


@pytest.mark.parametrize("chunk", [1, 7, 250, 4096, 10**6])
def test_shard_stream_cuts_documents_as_the_whole_stream_does(tmp_path, chunk):
    """Documents, and each one's shard and offset, do not depend on shard or chunk boundaries,
    an empty shard, or tokens before the first BOS."""
    rng = np.random.default_rng(chunk)
    tokens = np.concatenate([rng.integers(2, 50, 13), stream(random_docs(300, seed=9, lo=0, hi=40))]).astype(np.uint16)
    cuts = sorted(rng.choice(np.arange(1, len(tokens)), 6, replace=False).tolist())
    cuts = cuts[:3] + [cuts[3]] + cuts[3:]  # an empty shard in the middle
    bounds = [0] + cuts + [len(tokens)]
    paths = []
    for i, (a, b) in enumerate(zip(bounds, bounds[1:])):
        paths.append(tmp_path / f"s_{i:06d}.bin")
        bsd.write_shard(paths[-1], tokens[a:b])
    s = aud.ShardStream(paths, 1, chunk)
    got, lead = [], 0
    for c in s:
        lead += c.lead
        got += [(c.tokens[a:b].tolist(), int(sh), int(off)) for a, b, sh, off in zip(c.starts, c.ends, c.shard, c.offset)]
    starts = np.flatnonzero(tokens == 1).tolist()
    shard_of = lambda p: max(i for i, a in enumerate(bounds[:-1]) if a <= p and (bounds[i + 1] > p))
    want = [(tokens[a:b].tolist(), shard_of(a), a - bounds[shard_of(a)]) for a, b in zip(starts, starts[1:] + [len(tokens)])]
    assert lead == 13 and got == want
    assert [i["tokens"] for i in s.info] == [b - a for a, b in zip(bounds, bounds[1:])]
