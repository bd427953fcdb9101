"""Tests for the data tools: data/cached_challenge_fineweb.py and data/build_sp_dataset.py,
plus the bundled sample dataset in data/sample/. CPU only, a few seconds in all.

The downloader is tested offline: its single network function is replaced by a stub that
serves a fake manifest and fake files. The build tool is tested end to end on a small
synthetic corpus built in a temporary folder.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import random
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = REPO_ROOT / "data"
SAMPLE_DIR = DATA_DIR / "sample"


def _load(name: str):
    """Import data/<name>.py as a module (data/ is a scripts folder, not a package)."""
    spec = importlib.util.spec_from_file_location(name, DATA_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


dl = _load("cached_challenge_fineweb")
bsd = _load("build_sp_dataset")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _split_docs(tokens: np.ndarray, bos: int) -> list[np.ndarray]:
    """Cut a token stream at its BOS tokens; each part is one document without its BOS."""
    starts = np.flatnonzero(tokens == bos)
    assert len(starts) and starts[0] == 0, "stream must start with BOS"
    return [tokens[s + 1 : e] for s, e in zip(starts, list(starts[1:]) + [len(tokens)])]


# ========================================================================================
# Downloader (offline, stubbed)
# ========================================================================================

FAKE_MANIFEST = {
    "datasets": [
        {"name": "fineweb10B_sp1024", "tokenizer_name": "sp_bpe_1024", "stats": {"files_train": 3, "files_val": 1}},
        {"name": "fineweb10B_byte260", "tokenizer_name": "pure_byte_260", "stats": {"files_train": 2, "files_val": 2}},
    ],
    "tokenizers": [
        {"name": "sp_bpe_1024", "model_path": "tokenizers/fineweb_1024_bpe.model",
         "vocab_path": "tokenizers/fineweb_1024_bpe.vocab"},
        {"name": "pure_byte_260", "path": "tokenizers/fineweb_pure_byte_260.json"},
    ],
}


CASEOPS_VARIANT = "sp8192_lossless_caps_caseops_v1_reserved"
# Shaped like the published CaseOps export: the dataset marks its val byte sidecar.
CASEOPS_MANIFEST = {
    "datasets": [
        {"name": f"fineweb10B_{CASEOPS_VARIANT}", "tokenizer_name": "caseops_8192",
         "val_bytes_glob": "fineweb_val_bytes_*.bin", "stats": {"files_train": 80, "files_val": 1}},
    ],
    "tokenizers": [
        {"name": "caseops_8192", "model_path": f"tokenizers/fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model",
         "vocab_path": f"tokenizers/fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.vocab"},
    ],
}
SP8192_MANIFEST = {
    "datasets": [{"name": "fineweb10B_sp8192", "tokenizer_name": "sp_8192", "stats": {"files_train": 128, "files_val": 1}},
                 {"name": "fineweb10B_sp4096", "tokenizer_name": "sp_4096", "stats": {"files_train": 100, "files_val": 1}}],
    "tokenizers": [{"name": "sp_8192", "model_path": "tokenizers/fineweb_8192_bpe.model"},
                   {"name": "sp_4096", "model_path": "tokenizers/fineweb_4096_bpe.model"}],
}


class StubHub:
    """Stands in for download_file: serves each repo's fake manifest, valid tiny shards, and bytes."""

    def __init__(self, manifest=FAKE_MANIFEST, others=None):
        self.manifests = {dl.DEFAULT_REPO_ID: manifest, **(others or {})}
        self.calls: list[tuple[str, str, Path]] = []

    def __call__(self, repo_id: str, remote_path: str, local_path: Path) -> None:
        self.calls.append((repo_id, remote_path, local_path))
        local_path.parent.mkdir(parents=True, exist_ok=True)
        if remote_path.endswith("manifest.json"):
            manifest = self.manifests.get(repo_id, FAKE_MANIFEST)
            local_path.write_text(json.dumps(manifest))
        elif remote_path.endswith(".bin"):
            bsd.write_shard(local_path, [1, 5, 6, 7])
        else:
            local_path.write_bytes(b"payload of " + remote_path.encode())

    @property
    def remote_paths(self) -> list[str]:
        return [remote for _, remote, _ in self.calls]


def test_plan_lists_val_train_prefix_and_tokenizer(tmp_path):
    plan = dl.plan_downloads(FAKE_MANIFEST, "sp1024", 2, output_root=tmp_path)
    d = "datasets/datasets/fineweb10B_sp1024"
    assert [r.remote_path for r in plan] == [
        f"{d}/fineweb_val_000000.bin",
        f"{d}/fineweb_train_000000.bin",
        f"{d}/fineweb_train_000001.bin",
        "datasets/tokenizers/fineweb_1024_bpe.model",
        "datasets/tokenizers/fineweb_1024_bpe.vocab",
    ]
    # The export's root folder is dropped locally: data/datasets/<name>/, data/tokenizers/.
    assert plan[0].local_path == tmp_path / "datasets/fineweb10B_sp1024/fineweb_val_000000.bin"
    assert plan[-1].local_path == tmp_path / "tokenizers/fineweb_1024_bpe.vocab"


def test_plan_follows_manifest_counts_and_options(tmp_path):
    plan = dl.plan_downloads(FAKE_MANIFEST, "byte260", 0, output_root=tmp_path, remote_root="", with_docs=True)
    assert [r.remote_path for r in plan] == [
        "datasets/fineweb10B_byte260/fineweb_val_000000.bin",
        "datasets/fineweb10B_byte260/fineweb_val_000001.bin",
        "tokenizers/fineweb_pure_byte_260.json",
        "docs_selected.jsonl",
        "docs_selected.source_manifest.json",
    ]


@pytest.mark.parametrize(
    "variant, shards, message",
    [
        ("sp1024", 4, "only 3 train shards"),
        ("sp1024", -1, "must be >= 0"),
        ("sp4096", 1, "not in the manifest; available: byte260, sp1024"),
        ("gpt2", 1, "'gpt2' \\(fineweb10B_gpt2\\) is not in the manifest"),
        ("../sp1024", 1, "unknown variant"),
        ("", 1, "unknown variant"),
    ],
)
def test_plan_rejects_bad_requests(tmp_path, variant, shards, message):
    with pytest.raises(ValueError, match=message):
        dl.plan_downloads(FAKE_MANIFEST, variant, shards, output_root=tmp_path)


def test_plan_rejects_paths_escaping_the_output_root(tmp_path):
    evil = json.loads(json.dumps(FAKE_MANIFEST))
    evil["tokenizers"][0]["model_path"] = "../../outside.model"
    with pytest.raises(ValueError, match="unsafe path"):
        dl.plan_downloads(evil, "sp1024", 1, output_root=tmp_path)


def test_main_downloads_manifest_then_files_and_skips_complete_ones(tmp_path, capsys):
    hub = StubHub()
    argv = ["--variant", "sp1024", "--train-shards", "2", "--output-root", str(tmp_path), "--no-progress",
            "--repo-id", "someone/golf"]
    assert dl.main(argv, download=hub) == 0
    assert hub.remote_paths[0] == "datasets/manifest.json"
    assert len(hub.remote_paths) == 1 + 1 + 2 + 2  # manifest, val, 2 train, model + vocab
    assert {repo for repo, _, _ in hub.calls} == {"someone/golf"}
    assert (tmp_path / "manifests/someone__golf/manifest.json").is_file()  # cached per repo
    assert (tmp_path / "datasets/fineweb10B_sp1024/fineweb_train_000001.bin").is_file()
    assert (tmp_path / "tokenizers/fineweb_1024_bpe.model").is_file()

    # A second run finds everything complete and downloads nothing, not even the manifest.
    hub.calls.clear()
    assert dl.main(argv, download=hub) == 0
    assert hub.calls == []
    assert "(0 downloaded, 5 already present)" in capsys.readouterr().out

    # A truncated shard and an empty tokenizer file are fetched again; one more shard is new.
    shard = tmp_path / "datasets/fineweb10B_sp1024/fineweb_train_000000.bin"
    shard.write_bytes(shard.read_bytes()[:-2])
    (tmp_path / "tokenizers/fineweb_1024_bpe.vocab").write_bytes(b"")
    assert dl.main(argv[:3] + ["3"] + argv[4:], download=hub) == 0
    assert sorted(hub.remote_paths) == sorted([
        "datasets/datasets/fineweb10B_sp1024/fineweb_train_000000.bin",
        "datasets/datasets/fineweb10B_sp1024/fineweb_train_000002.bin",
        "datasets/tokenizers/fineweb_1024_bpe.vocab",
    ])


def test_offline_fails_in_seconds_naming_the_repo(tmp_path, capsys, monkeypatch):
    """Offline, the downloader stops after one short probe (not the hub client's retries) with one
    line that names the repo and the cause, and writes nothing; a download that fails midway is
    one line too, and keeps the files already complete."""
    import time
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    t0 = time.perf_counter()
    problem = dl.probe_hub("someone/golf", timeout=5)
    assert time.perf_counter() - t0 < 10
    assert problem.startswith("cannot reach http://127.0.0.1:9 for the dataset repo someone/golf (") and "offline" in problem
    hub = StubHub()
    argv = ["--variant", "sp1024", "--train-shards", "1", "--output-root", str(tmp_path / "out"), "--no-progress",
            "--repo-id", "someone/golf"]
    assert dl.main(argv, download=dl.probed(hub, lambda repo: f"cannot reach X for the dataset repo {repo} (down)")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "someone/golf" in err and "(down)" in err
    assert hub.calls == [] and not (tmp_path / "out").exists()

    def flaky(repo_id, remote, local):
        if "train" in remote:
            raise OSError("Connection reset by peer")
        hub(repo_id, remote, local)
    assert dl.main(argv, download=flaky) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "downloading from someone/golf failed: OSError: Connection reset by peer" in err
    assert (tmp_path / "out/datasets/fineweb10B_sp1024/fineweb_val_000000.bin").is_file()


def test_main_refuses_bad_requests_before_downloading_shards(tmp_path, capsys):
    hub = StubHub()
    base = ["--output-root", str(tmp_path), "--no-progress"]
    assert dl.main(["--train-shards", "80"] + base, download=hub) == 2
    err = capsys.readouterr().err
    assert "sp1024 has only 3 train shards in the manifest of willdepueoai/parameter-golf" in err and "80 requested" in err
    assert hub.remote_paths == ["datasets/manifest.json"]
    assert dl.main(["--variant", "sp8192"] + base, download=hub) == 2
    assert "available: byte260, sp1024" in capsys.readouterr().err
    assert dl.main(["--variant", "sp/1024"] + base, download=hub) == 2
    assert "unknown variant" in capsys.readouterr().err
    assert len(hub.calls) == 1


def test_caseops_variant_plans_its_byte_sidecar(tmp_path):
    plan = dl.plan_downloads(CASEOPS_MANIFEST, CASEOPS_VARIANT, 1, output_root=tmp_path)
    d = f"datasets/datasets/fineweb10B_{CASEOPS_VARIANT}"
    assert [r.remote_path for r in plan] == [
        f"{d}/fineweb_val_000000.bin",
        f"{d}/fineweb_val_bytes_000000.bin",
        f"{d}/fineweb_train_000000.bin",
        "datasets/tokenizers/fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model",
        "datasets/tokenizers/fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.vocab",
    ]
    counted = json.loads(json.dumps(CASEOPS_MANIFEST))
    del counted["datasets"][0]["val_bytes_glob"]
    counted["datasets"][0]["stats"]["files_val_bytes"] = 2
    assert sum("_val_bytes_" in r.remote_path for r in dl.plan_downloads(counted, CASEOPS_VARIANT, 0,
                                                                        output_root=tmp_path)) == 2
    # A plain dataset has no sidecar.
    assert not any("_bytes_" in r.remote_path for r in dl.plan_downloads(SP8192_MANIFEST, "sp8192", 3,
                                                                         output_root=tmp_path))


def test_each_repo_keeps_its_own_manifest(tmp_path, capsys):
    """After sp1024 from the default repo, another repo's variants come from that repo's
    manifest, not the first one (which is left where the official layout has it)."""
    hub = StubHub(others={"kevclark/parameter-golf": SP8192_MANIFEST, "romeerp/parameter-golf-caseops-v1": CASEOPS_MANIFEST})
    base = ["--output-root", str(tmp_path), "--no-progress", "--train-shards", "1"]
    assert dl.main(base, download=hub) == 0
    assert (tmp_path / "manifest.json").is_file()
    hub.calls.clear()
    assert dl.main(base + ["--repo-id", "kevclark/parameter-golf", "--variant", "sp8192"], download=hub) == 0
    assert hub.calls[0][:2] == ("kevclark/parameter-golf", "datasets/manifest.json")
    assert hub.calls[0][2] == tmp_path / "manifests/kevclark__parameter-golf/manifest.json"
    assert json.loads((tmp_path / "manifest.json").read_text()) == FAKE_MANIFEST
    out = capsys.readouterr().out
    assert f"DATA_PATH={(tmp_path / 'datasets/fineweb10B_sp8192').resolve()}" in out and "VOCAB_SIZE=8192" in out
    assert "CASEOPS_ENABLED" not in out

    # One command fetches the CaseOps data with its sidecar.
    hub.calls.clear()
    assert dl.main(base + ["--repo-id", "romeerp/parameter-golf-caseops-v1", "--variant", CASEOPS_VARIANT],
                   download=hub) == 0
    folder = tmp_path / f"datasets/fineweb10B_{CASEOPS_VARIANT}"
    assert sorted(p.name for p in folder.iterdir()) == ["fineweb_train_000000.bin", "fineweb_val_000000.bin",
                                                         "fineweb_val_bytes_000000.bin"]
    assert "CASEOPS_ENABLED=1" in capsys.readouterr().out
    # A second run uses the cached manifests: nothing is fetched.
    hub.calls.clear()
    assert dl.main(base + ["--repo-id", "kevclark/parameter-golf", "--variant", "sp8192"], download=hub) == 0
    assert hub.calls == []


def test_errors_name_the_repo_the_variant_and_what_is_available(tmp_path, capsys):
    hub = StubHub(others={"kevclark/parameter-golf": SP8192_MANIFEST})
    argv = ["--output-root", str(tmp_path), "--no-progress", "--repo-id", "kevclark/parameter-golf",
            "--variant", "sp1024"]
    assert dl.main(argv, download=hub) == 2
    err = capsys.readouterr().err
    assert "variant 'sp1024' (fineweb10B_sp1024) is not in the manifest of kevclark/parameter-golf" in err
    assert "available: sp4096, sp8192" in err
    assert dl.main(argv[:-1] + ["sp4096", "--train-shards", "101"], download=hub) == 2
    assert "sp4096 has only 100 train shards in the manifest of kevclark/parameter-golf" in capsys.readouterr().err


def test_manifest_cache_paths():
    assert dl.manifest_relative_path(dl.DEFAULT_REPO_ID, dl.DEFAULT_REMOTE_ROOT) == "manifest.json"
    assert dl.manifest_relative_path("a/b", "datasets") == "manifests/a__b/manifest.json"
    assert dl.manifest_relative_path(dl.DEFAULT_REPO_ID, "other/root") == \
        "manifests/willdepueoai__parameter-golf__other_root/manifest.json"


def test_skip_manifest_needs_a_local_copy(tmp_path, capsys):
    hub = StubHub()
    assert dl.main(["--skip-manifest", "--output-root", str(tmp_path)], download=hub) == 2
    assert "no local manifest" in capsys.readouterr().err
    assert hub.calls == []


def test_check_only_and_legacy_positional_count(tmp_path, capsys):
    hub = StubHub()
    assert dl.main(["1", "--check-only", "--output-root", str(tmp_path)], download=hub) == 0
    out = capsys.readouterr().out.splitlines()
    assert hub.remote_paths == ["datasets/manifest.json"]  # the plan needs it; nothing else
    assert len(out) == 1 + 1 + 2 and all(line.startswith("missing\t") for line in out)


def test_is_complete(tmp_path):
    shard = tmp_path / "x.bin"
    bsd.write_shard(shard, np.arange(10))
    assert dl.is_complete(shard)
    shard.write_bytes(shard.read_bytes() + b"\0\0")
    assert not dl.is_complete(shard)
    assert not dl.is_complete(tmp_path / "absent.model")


@pytest.mark.parametrize("script", ["cached_challenge_fineweb.py", "build_sp_dataset.py"])
def test_scripts_show_help(script):
    result = subprocess.run([sys.executable, str(DATA_DIR / script), "--help"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0 and "usage:" in result.stdout


# ========================================================================================
# Build tool on a synthetic corpus
# ========================================================================================

VOCAB = 400
VAL_DOCS = 6
SHARD_TOKENS = 3000
VAL_ONLY_WORD = "zorblaxifrant"  # appears in validation documents only
LONG_ONLY_WORD = "quokkaberry"  # appears only inside single-line documents over the trainer limit


def _synthetic_docs(seed: int = 0) -> list[str]:
    """~120 KB of varied text: sentences, digits, accents, fullwidth forms, odd whitespace."""
    rng = random.Random(seed)
    syllables = ["ka", "lo", "mi", "ra", "te", "su", "no", "vi", "de", "an", "or", "el", "ish", "ump"]
    words = ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(300)]
    words += ["café", "über", "naïve", "Ｆｕｌｌ", "２０２４", "東京"]  # NFKC folds the fullwidth forms

    def sentence() -> str:
        body = " ".join(rng.choice(words) for _ in range(rng.randint(4, 14)))
        number = f" {rng.randint(0, 99999)}" if rng.random() < 0.3 else ""
        return body.capitalize() + number + rng.choice([".", "!", "?", ";"])

    docs = []
    for i in range(90):
        paragraphs = [" ".join(sentence() for _ in range(rng.randint(1, 6))) for _ in range(rng.randint(1, 4))]
        doc = rng.choice(["\n\n", "\n", "  \n\t"]).join(paragraphs)
        if i < VAL_DOCS:
            doc += f" The {VAL_ONLY_WORD} {VAL_ONLY_WORD} {VAL_ONLY_WORD}."
        docs.append(doc)
    # Two train documents of ~6 KB on one line without sentence punctuation.
    for _ in range(2):
        docs.append(" ".join(rng.choice(words + [LONG_ONLY_WORD] * 40) for _ in range(1500)))
    return docs


def _write_corpus(folder: Path, docs: list[str]) -> list[Path]:
    """Spread the documents over a .jsonl.gz file and a blank-line separated .txt file."""
    folder.mkdir(parents=True, exist_ok=True)
    jsonl = folder / "corpus.jsonl.gz"
    with gzip.open(jsonl, "wt", encoding="utf-8") as f:
        for doc in docs[:80]:
            f.write(json.dumps({"body": doc, "id": "x"}) + "\n")
    txt = folder / "more.txt"
    # Blocks must not contain the separator themselves: flatten their blank lines.
    txt.write_text("\n\n\n".join(doc.replace("\n\n", "\n") for doc in docs[80:]), encoding="utf-8")
    return [jsonl, txt]


def _build_argv(inputs: list[Path], out: Path) -> list[str]:
    return [*map(str, inputs), "--output-dir", str(out), "--prefix", "syn", "--vocab-size", str(VOCAB),
            "--val-docs", str(VAL_DOCS), "--shard-tokens", str(SHARD_TOKENS), "--text-field", "body",
            "--txt-doc-sep", r"\n\n\n", "--no-progress", "--encode-threads", "2"]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """Build the synthetic dataset once through the CLI; return (docs, output dir, manifest)."""
    root = tmp_path_factory.mktemp("synthetic")
    docs = _synthetic_docs()
    inputs = _write_corpus(root / "src", docs)
    expected_docs = docs[:80] + [d.replace("\n\n", "\n") for d in docs[80:]]
    assert bsd.main(_build_argv(inputs, root / "out")) == 0
    manifest = json.loads((root / "out/manifest.json").read_text())
    return expected_docs, root / "out", manifest, inputs


def _processor(out: Path) -> spm.SentencePieceProcessor:
    return spm.SentencePieceProcessor(model_file=str(out / f"syn_{VOCAB}_bpe.model"))


def test_read_documents_formats(tmp_path, synthetic):
    docs, _, _, inputs = synthetic
    got = [d for p in inputs for d in bsd.read_documents(p, text_field="body", txt_doc_sep="\n\n\n")]
    assert got == docs
    plain = tmp_path / "one.txt"
    plain.write_text("first\n\nsecond\r\n", encoding="utf-8")
    assert list(bsd.read_documents(plain)) == ["first\n\nsecond\n"]  # whole file, newlines normalized
    assert list(bsd.read_documents(plain, txt_doc_sep="\n\n")) == ["first", "second\n"]


def test_read_documents_errors_name_the_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n\n{"content": "no text field"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.jsonl:3: no 'text' field"):
        list(bsd.read_documents(bad))
    with pytest.raises(ValueError, match="unsupported input type"):
        list(bsd.read_documents(tmp_path / "corpus.csv"))


def test_tokenizer_settings_and_space_piece(synthetic):
    _, out, manifest, _ = synthetic
    sp = _processor(out)
    assert sp.get_piece_size() == VOCAB == manifest["vocab_size"]
    assert (sp.pad_id(), sp.bos_id(), sp.eos_id(), sp.unk_id()) == (0, 1, 2, 3)
    assert sp.piece_to_id("\u2581") != sp.unk_id()
    assert sp.is_byte(4) and sp.id_to_piece(4) == "<0x00>"  # byte fallback pieces follow the specials
    vocab_lines = (out / f"syn_{VOCAB}_bpe.vocab").read_text(encoding="utf-8").splitlines()
    assert len(vocab_lines) == VOCAB and vocab_lines[1] == "<s>\t0"
    settings = manifest["tokenizer"]["trainer_settings"]
    assert settings["normalization_rule_name"] == "nmt_nfkc" and settings["add_dummy_prefix"] is False


def test_digits_are_split_and_no_dummy_prefix(synthetic):
    _, out, _, _ = synthetic
    sp = _processor(out)
    assert len(sp.encode("90210")) == 5  # split_digits: one piece per digit
    assert not sp.id_to_piece(sp.encode("kalo")[0]).startswith("\u2581")  # add_dummy_prefix=False


def test_tokenizer_is_trained_on_train_docs_only(synthetic):
    _, out, _, _ = synthetic
    sp = _processor(out)
    assert not any(VAL_ONLY_WORD[:6] in sp.id_to_piece(i) for i in range(sp.get_piece_size()))
    # The word that only occurs inside overlong single-line train docs was learned, so those
    # docs reached the trainer. Had SentencePiece skipped them whole, "q" and "y" would not
    # even be characters of the vocabulary and the word would take 10 tokens, 2 byte-fallback.
    ids = sp.encode(LONG_ONLY_WORD)
    assert len(ids) <= 3 and not any(sp.is_byte(i) for i in ids)


def test_shards_layout_bos_and_split(synthetic):
    docs, out, manifest, _ = synthetic
    sp = _processor(out)
    for split, split_docs in (("val", docs[:VAL_DOCS]), ("train", docs[VAL_DOCS:])):
        names = manifest["shards"][split]
        assert names == [f"syn_{split}_{i:06d}.bin" for i in range(len(names))]
        sizes = [bsd.read_shard_header(out / n) for n in names]
        assert all(s == SHARD_TOKENS for s in sizes[:-1]) and 0 < sizes[-1] <= SHARD_TOKENS
        stream = np.concatenate([bsd.read_shard(out / n) for n in names])
        assert len(stream) == manifest[f"tokens_{split}"] == sum(sizes)
        assert not np.any(stream == sp.eos_id())
        parts = _split_docs(stream, sp.bos_id())
        assert len(parts) == len(split_docs) == manifest[f"docs_{split}"]
        # Round trip: each document decodes to its own text after nmt_nfkc normalization
        # (whitespace runs collapse, fullwidth forms fold); byte-fallback text survives.
        for ids, doc in zip(parts, split_docs):
            assert sp.decode(ids.tolist()) == sp.normalize(doc).replace("\u2581", " ")
        assert manifest[f"text_bytes_{split}"] == sum(len(sp.decode(p.tolist()).encode()) for p in parts)
    assert len(manifest["shards"]["train"]) > 2  # the small shard size forced several shards


def test_manifest_hashes_and_build_is_deterministic(synthetic, tmp_path):
    docs, out, manifest, inputs = synthetic
    for name, entry in manifest["files"].items():
        assert _sha256(out / name) == entry["sha256"] and (out / name).stat().st_size == entry["bytes"]
    assert bsd.main(_build_argv(inputs, tmp_path / "again")) == 0
    for name in list(manifest["files"]) + ["manifest.json"]:
        assert _sha256(tmp_path / "again" / name) == _sha256(out / name), name


def test_rebuild_removes_stale_shards(tmp_path):
    docs = _synthetic_docs(seed=1)
    src = tmp_path / "c.jsonl"
    src.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
    opts = dict(prefix="syn", vocab_size=VOCAB, val_docs=2)
    bsd.build_dataset([src], tmp_path / "o", bsd.BuildOptions(shard_tokens=1000, **opts), progress=False)
    many = sorted(p.name for p in (tmp_path / "o").glob("syn_train_*.bin"))
    (tmp_path / "o/other_train_000000.bin").write_bytes(b"not ours")
    m = bsd.build_dataset([src], tmp_path / "o", bsd.BuildOptions(shard_tokens=10**6, **opts), progress=False)
    assert len(many) > 1 and m["shards"]["train"] == ["syn_train_000000.bin"]
    assert sorted(p.name for p in (tmp_path / "o").glob("syn_train_*.bin")) == ["syn_train_000000.bin"]
    assert (tmp_path / "o/other_train_000000.bin").exists()


def test_build_rejects_bad_splits_and_small_corpora(tmp_path):
    src = tmp_path / "c.jsonl"
    src.write_text("".join(json.dumps({"text": f"doc number {i}."}) + "\n" for i in range(5)), encoding="utf-8")
    with pytest.raises(ValueError, match="leaves no train documents"):
        bsd.build_dataset([src], tmp_path / "o", bsd.BuildOptions(val_docs=5), progress=False)
    with pytest.raises(bsd.TokenizerError, match="too small"):
        bsd.build_dataset([src], tmp_path / "o", bsd.BuildOptions(val_docs=1, vocab_size=1024), progress=False)


def test_trainer_sentences_respect_the_byte_limit():
    rng = random.Random(3)
    line = " ".join(rng.choice(["alpha", "béta", "γάμμα", "delta."]) for _ in range(3000))
    doc = f"short line\n\n{line}\n{'x' * 50}{'é' * 40}\n"
    pieces = list(bsd.trainer_sentences(doc, max_bytes=64))
    assert all(0 < len(p.encode()) <= 64 for p in pieces)
    assert "".join(pieces).replace(" ", "") == doc.replace(" ", "").replace("\n", "")
    assert pieces[0] == "short line"


def test_shuffle_is_a_fixed_permutation():
    docs = [str(i) for i in range(20)]
    assert bsd.shuffled(docs, 7) == bsd.shuffled(docs, 7) != bsd.shuffled(docs, 8)
    assert sorted(bsd.shuffled(docs, 7)) == sorted(docs)
    assert bsd.shuffled(docs, 1)[:3] == ["7", "11", "4"]  # pinned: must not change across versions


# ========================================================================================
# Shard reader errors
# ========================================================================================


def test_shard_round_trip(tmp_path):
    path = tmp_path / "ok.bin"
    bsd.write_shard(path, [1, 2, 65535, 0])
    assert bsd.read_shard(path).tolist() == [1, 2, 65535, 0]
    assert path.stat().st_size == 1024 + 8
    with pytest.raises(ValueError, match="65535"):
        bsd.write_shard(tmp_path / "big.bin", [70000])


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda b: (12345).to_bytes(4, "little") + b[4:], "bad magic number 12345"),
        (lambda b: b[:4] + (2).to_bytes(4, "little") + b[8:], "unsupported shard version 2"),
        (lambda b: b[:-1], "truncated or corrupt"),
        (lambda b: b + b"\0\0", "truncated or corrupt"),
        (lambda b: b[:100], "shorter than the 1024-byte header"),
    ],
)
def test_shard_reader_errors_name_the_file(tmp_path, damage, message):
    path = tmp_path / "broken_shard.bin"
    bsd.write_shard(path, np.arange(50))
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(bsd.ShardFormatError, match=message) as info:
        bsd.read_shard(path)
    assert "broken_shard.bin" in str(info.value)


# ========================================================================================
# The bundled sample dataset (data/sample)
# ========================================================================================


@pytest.fixture(scope="module")
def sample_manifest():
    return json.loads((SAMPLE_DIR / "manifest.json").read_text(encoding="utf-8"))


def test_sample_files_match_manifest(sample_manifest):
    for name, entry in sample_manifest["files"].items():
        path = SAMPLE_DIR / name
        assert path.stat().st_size == entry["bytes"], name
        assert _sha256(path) == entry["sha256"], name


def test_sample_shards_are_consistent(sample_manifest):
    sp = spm.SentencePieceProcessor(model_file=str(SAMPLE_DIR / sample_manifest["tokenizer"]["model"]))
    assert sp.get_piece_size() == sample_manifest["vocab_size"] == 1024
    assert sp.piece_to_id("\u2581") != sp.unk_id()
    for split in ("val", "train"):
        stream = np.concatenate([bsd.read_shard(SAMPLE_DIR / n) for n in sample_manifest["shards"][split]])
        assert len(stream) == sample_manifest[f"tokens_{split}"]
        assert stream[0] == sp.bos_id() == sample_manifest["bos_id"]
        assert int(np.sum(stream == sp.bos_id())) == sample_manifest[f"docs_{split}"]
        assert int(stream.max()) < 1024
    assert 40_000 <= sample_manifest["tokens_val"] <= 80_000


def test_sample_text_bytes_match_the_bpb_byte_lut(sample_manifest):
    """text_bytes_* equals the tokenizer-agnostic BPB byte count (the LUT rule of the challenge)."""
    sp = spm.SentencePieceProcessor(model_file=str(SAMPLE_DIR / sample_manifest["tokenizer"]["model"]))
    n = sp.get_piece_size()
    base, leading_space, boundary = np.zeros(n, np.int64), np.zeros(n, bool), np.zeros(n, bool)
    for i in range(n):
        if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
            boundary[i] = True
        elif sp.is_byte(i):
            base[i] = 1
        else:
            piece = sp.id_to_piece(i)
            leading_space[i] = piece.startswith("\u2581")
            base[i] = len(piece.removeprefix("\u2581").encode())
    stream = np.concatenate([bsd.read_shard(SAMPLE_DIR / n) for n in sample_manifest["shards"]["val"]]).astype(np.int64)
    prev, target = stream[:-1], stream[1:]
    lut_bytes = base[target].sum() + (leading_space[target] & ~boundary[prev]).sum()
    assert lut_bytes == sample_manifest["text_bytes_val"]


def test_sample_readme_command_rebuilds_the_sample(sample_manifest, tmp_path):
    """The README's command has the manifest's options and, when the source text is
    available, rebuilds every file byte for byte."""
    readme = (SAMPLE_DIR / "README.md").read_text(encoding="utf-8")
    command = next(line.strip() for line in readme.splitlines()
                   if line.strip().startswith("python data/build_sp_dataset.py"))
    argv = shlex.split(command)[2:]
    args = bsd.build_parser().parse_args(argv)
    assert args.output_dir == Path("data/sample")
    assert {"prefix": args.prefix, "vocab_size": args.vocab_size, "val_docs": args.val_docs,
            "shard_tokens": args.shard_tokens, "shuffle_seed": args.shuffle_seed} == {
        k: sample_manifest["options"][k] for k in ("prefix", "vocab_size", "val_docs", "shard_tokens", "shuffle_seed")}

    source = REPO_ROOT / args.inputs[0]
    if not source.is_file():
        pytest.skip(f"source text {source} not available")
    if spm.__version__ != sample_manifest["tokenizer"]["sentencepiece_version"]:
        pytest.skip("a different sentencepiece version may train a different tokenizer")
    argv[argv.index("--output-dir") + 1] = str(tmp_path)
    assert bsd.main([str(REPO_ROOT / args.inputs[0]) if a == str(args.inputs[0]) else a for a in argv]
                    + ["--no-progress"]) == 0
    for name in list(sample_manifest["files"]) + ["manifest.json"]:
        assert _sha256(tmp_path / name) == _sha256(SAMPLE_DIR / name), name


# ========================================================================================
# Reading errors, CaseOps, the byte sidecar, --tokenizer, caps, split option, variables
# ========================================================================================


def test_bad_utf8_and_bad_gzip_errors_name_the_file(tmp_path):
    latin = tmp_path / "latin1.jsonl"
    latin.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(ValueError, match=r"latin1\.jsonl: not UTF-8 text"):
        list(bsd.read_documents(latin))
    fake = tmp_path / "fake.jsonl.gz"
    fake.write_bytes(b'{"text": "not compressed"}\n')
    with pytest.raises(ValueError, match=r"fake\.jsonl\.gz: not a valid gzip file"):
        list(bsd.read_documents(fake))
    cut = tmp_path / "cut.txt.gz"
    whole = gzip.compress(" ".join(str(random.Random(0).random()) for _ in range(2000)).encode())
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match=r"cut\.txt\.gz: not a valid gzip file, or truncated"):
        list(bsd.read_documents(cut))
    with pytest.raises(ValueError, match=r"latin1\.jsonl: not UTF-8"):  # through the CLI path too
        bsd.main([str(latin), "--output-dir", str(tmp_path / "o"), "--val-docs", "1", "--no-progress"])


OPS = bsd.CASEOPS_OPERATORS


@pytest.mark.parametrize("text, encoded", [
    ("The NASA Launch iPhone OpenAI café",
     f"{OPS[0]}the {OPS[1]}nasa {OPS[0]}launch i{OPS[2]}phone {OPS[0]}open{OPS[2]}a{OPS[2]}i café"),
    ("I", f"{OPS[0]}i"),
    ("a", "a"),
    ("ABc", f"{OPS[0]}a{OPS[2]}bc"),
    ("x\ue001y\ue004", f"x{OPS[3]}\ue001y{OPS[3]}\ue004"),
    ("Ünïcode ÉCOLE 42nd", f"Ünïcode É{OPS[1]}cole 42nd"),  # maximal runs of ASCII letters only
    ("", ""),
])
def test_caseops_transform_examples(text, encoded):
    assert bsd.caseops_encode(text) == encoded
    assert bsd.caseops_decode(encoded) == text


def test_caseops_round_trips_losslessly():
    rng = random.Random(11)
    alphabet = "aAbBzZ  \n\t.,'-0é東" + "".join(OPS)
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        encoded = bsd.caseops_encode(text)
        assert bsd.caseops_decode(encoded) == text, repr(text)
        assert not any(c.isascii() and c.isupper() for c in encoded)  # case lives in the operators only


@pytest.mark.parametrize("bad", [OPS[0], f"a{OPS[0]}b", f"{OPS[1]}ab{OPS[2]}c", f"{OPS[2]}A", f"{OPS[3]}x",
                                 f"{OPS[0]} x"])
def test_caseops_decode_rejects_malformed_operators(bad):
    with pytest.raises(bsd.CaseOpsError):
        bsd.caseops_decode(bad)


CLEAN_DOCS = [  # nmt_nfkc leaves these unchanged: no newlines, no repeated spaces, no foldable forms
    "The NASA Launch of the iPhone by OpenAI was not a thing that happened in HISTORY.",
    "McDonald and MacBook met O'Neil at the UN, said Dr. X; I agree.",
]


def _caseops_docs() -> list[str]:
    docs = _synthetic_docs(seed=2)
    extra = " The NASA Launch of iPhone by OpenAI: ÉCOLE MiXeD CamelCase ALLCAPS I a \ue002 x\ue004y."
    docs = [d + extra if i % 3 == 0 else d for i, d in enumerate(docs)]
    return docs[:2] + CLEAN_DOCS + docs[2:]


@pytest.fixture(scope="module")
def caseops_build(tmp_path_factory):
    root = tmp_path_factory.mktemp("caseops")
    docs = _caseops_docs()
    src = root / "c.jsonl"
    src.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
    out = root / "out"
    argv = [str(src), "--output-dir", str(out), "--vocab-size", str(VOCAB), "--val-docs", str(VAL_DOCS),
            "--caseops", "--shard-tokens", "2000", "--no-progress", "--workers", "2"]
    import contextlib
    import io
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert bsd.main(argv) == 0
    return docs, src, out, json.loads((out / "manifest.json").read_text()), argv, stdout.getvalue()


def test_caseops_tokenizer_reserves_the_operators(caseops_build):
    _, _, out, manifest, _, _ = caseops_build
    assert manifest["tokenizer"]["model"] == f"fineweb_{VOCAB}_bpe_lossless_caps_caseops_v1_reserved.model"
    sp = spm.SentencePieceProcessor(model_file=str(out / manifest["tokenizer"]["model"]))
    assert [sp.id_to_piece(i) for i in range(4, 8)] == list(OPS)
    assert all(sp.is_byte(i) for i in range(8, 264)) and sp.piece_to_id("\u2581") != sp.unk_id()
    assert manifest["text_transform"] == "lossless_caps_caseops_v1"
    # the build's audit compared the CaseOps sidecar with the decoded text, document by document
    side = manifest["audit"]["sidecar"]
    assert side["caseops"] and side["mismatched_docs"] == 0 and side["total"] == manifest["text_bytes_val"]


def test_caseops_sidecar_counts_the_original_bytes_document_by_document(caseops_build):
    docs, _, out, manifest, _, _ = caseops_build
    sp = spm.SentencePieceProcessor(model_file=str(out / manifest["tokenizer"]["model"]))
    names = manifest["shards"]["val_bytes"]
    assert names == [f"fineweb_val_bytes_{i:06d}.bin" for i in range(len(manifest["shards"]["val"]))]
    sizes = [bsd.read_shard_header(out / n) for n in names]
    assert sizes == [bsd.read_shard_header(out / n) for n in manifest["shards"]["val"]]  # shard k <-> shard k
    tokens = np.concatenate([bsd.read_shard(out / n) for n in manifest["shards"]["val"]])
    counts = np.concatenate([bsd.read_shard(out / n) for n in names]).astype(np.int64)
    assert (counts[tokens == 1] == 0).all() and (counts[np.isin(tokens, [4, 5, 6, 7])] <= 3).all()
    starts = list(np.flatnonzero(tokens == 1)) + [len(tokens)]
    assert len(starts) - 1 == VAL_DOCS
    for k, doc in enumerate(docs[:VAL_DOCS]):
        ids, side = tokens[starts[k] + 1:starts[k + 1]].tolist(), counts[starts[k]:starts[k + 1]]
        restored = bsd.caseops_decode(sp.decode(ids))
        # The bytes of the text the tokens stand for, in its original case: the text as the
        # tokenizer's normalizer left it (nmt_nfkc folds whitespace runs and compatibility forms).
        assert int(side.sum()) == len(restored.encode()), k
        assert restored.lower() == sp.normalize(doc).replace("\u2581", " ").lower()
        if doc in CLEAN_DOCS:  # text the normalizer keeps: exactly the raw UTF-8 bytes
            assert restored == doc and int(side.sum()) == len(doc.encode())
    assert sum(d in CLEAN_DOCS for d in docs[:VAL_DOCS]) == 2
    assert manifest["text_bytes_val"] == int(counts.sum())


def test_caseops_build_prints_the_trainer_variables(caseops_build):
    _, _, out, manifest, _, stdout = caseops_build
    line = stdout.strip().splitlines()[-1]
    env = dict(item.split("=", 1) for item in shlex.split(line))
    assert env == {"DATA_PATH": str(out.resolve()), "TRAIN_GLOB": "fineweb_train_*.bin", "VAL_GLOB": "fineweb_val_*.bin",
                   "TOKENIZER_PATH": str(out.resolve() / manifest["tokenizer"]["model"]), "VOCAB_SIZE": str(VOCAB),
                   "VAL_BYTES_GLOB": "fineweb_val_bytes_*.bin", "CASEOPS_ENABLED": "1"}


def test_caseops_build_does_not_depend_on_the_worker_count(caseops_build, tmp_path):
    _, _, out, manifest, argv, _ = caseops_build
    argv = list(argv)
    argv[argv.index("--output-dir") + 1] = str(tmp_path)
    argv[argv.index("--workers") + 1] = "1"
    assert bsd.main(argv) == 0
    for name in list(manifest["files"]) + ["manifest.json"]:
        assert _sha256(tmp_path / name) == _sha256(out / name), name


def test_plain_sidecar_equals_the_trainer_lut(tmp_path, synthetic):
    """With a plain tokenizer the sidecar is the trainer's LUT count, token for token, so
    sidecar BPB equals LUT BPB."""
    import train_gpt as tg
    _, out, manifest, inputs = synthetic
    argv = _build_argv(inputs, tmp_path) + ["--byte-sidecar", "--tokenizer", str(out / f"syn_{VOCAB}_bpe.model")]
    argv.remove("--vocab-size"), argv.remove(str(VOCAB))
    assert bsd.main(argv) == 0
    side = json.loads((tmp_path / "manifest.json").read_text())
    for name in side["shards"]["val"] + side["shards"]["train"]:  # the same tokenizer: the same shards
        assert _sha256(tmp_path / name) == manifest["files"][name]["sha256"]
    tokens = torch.cat([tg.load_shard(tmp_path / n) for n in side["shards"]["val"]])
    counts = torch.cat([tg.load_shard(tmp_path / n) for n in side["shards"]["val_bytes"]])
    lut = tg.build_byte_lut(spm.SentencePieceProcessor(model_file=str(tmp_path / f"syn_{VOCAB}_bpe.model")), VOCAB)
    assert torch.equal(counts, tg.lut_target_bytes(tokens, lut))
    assert side["text_bytes_val"] == manifest["text_bytes_val"] == int(counts.sum())
    assert side["tokenizer"]["trained_on"]["given"] == f"syn_{VOCAB}_bpe.model"


def test_given_tokenizer_checks(tmp_path, synthetic, capsys):
    """A tokenizer that does not fit the flags is a user error: one line naming it and the fix, exit 2."""
    _, out, _, inputs = synthetic
    model = out / f"syn_{VOCAB}_bpe.model"
    base = [*map(str, inputs), "--output-dir", str(tmp_path / "o"), "--val-docs", "2", "--text-field", "body",
            "--txt-doc-sep", r"\n\n\n", "--no-progress", "--tokenizer", str(model)]
    for extra, says in ((["--vocab-size", "512"], "has 400 pieces, --vocab-size says 512"),
                        (["--caseops"], "not trained for --caseops")):
        assert bsd.main(base + extra) == 2
        err = capsys.readouterr().err
        assert says in err and "the given --tokenizer was built for" in err and len(err.strip().splitlines()) == 1
        assert not (tmp_path / "o").exists()  # nothing half-written
    with pytest.raises(SystemExit):
        bsd.main(base + ["--tokenizer-train-docs", "3"])


def test_tokenizer_training_cap(tmp_path, synthetic):
    docs, _, _, inputs = synthetic
    opts = bsd.BuildOptions(tokenizer_train_docs=10)
    assert bsd.tokenizer_training_docs(docs, opts) == docs[:10]
    first = len(docs[0].encode())
    assert bsd.tokenizer_training_docs(docs, bsd.BuildOptions(tokenizer_train_bytes=first)) == docs[:1]
    assert bsd.tokenizer_training_docs(docs, bsd.BuildOptions(tokenizer_train_bytes=1)) == docs[:1]  # never empty
    both = bsd.BuildOptions(tokenizer_train_docs=3, tokenizer_train_bytes=10**9)
    assert bsd.tokenizer_training_docs(docs, both) == docs[:3]
    assert bsd.main(_build_argv(inputs, tmp_path) + ["--tokenizer-train-docs", "60"]) == 0
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["tokenizer"]["trained_on"]["train_docs"] == 60
    assert manifest["tokenizer"]["trained_on"]["of_train_docs"] == manifest["docs_train"]


def test_official_split_is_the_first_50000_documents_unshuffled(tmp_path, capsys):
    src = tmp_path / "c.jsonl"
    src.write_text("".join(json.dumps({"text": f"doc number {i}."}) + "\n" for i in range(5)), encoding="utf-8")
    assert bsd.main([str(src), "--output-dir", str(tmp_path / "o"), "--official-split", "--no-progress"]) == 2
    assert "val_docs=50000 leaves no train documents" in capsys.readouterr().err  # tests/test_data_audit.py: more
    with pytest.raises(SystemExit):
        bsd.main([str(src), "--output-dir", str(tmp_path / "o"), "--official-split", "--shuffle-seed", "1"])
    assert "cannot be combined with --shuffle-seed" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # one of the two split options is required
        bsd.main([str(src), "--output-dir", str(tmp_path / "o")])


def test_build_user_errors_are_one_line_and_leave_nothing(tmp_path, capsys):
    """A missing input or tokenizer, a file as --output-dir, a corpus too small for the vocabulary:
    one line that names the file or flag and the fix, exit 2, no traceback, no output folder left."""
    small = tmp_path / "small.txt"
    small.write_text("hello world this is doc one\n\nsecond doc here\n\nthird doc\n", encoding="utf-8")
    cases = [([str(tmp_path / "nothere.txt"), "--output-dir", str(tmp_path / "o"), "--val-docs", "1"],
              "input file(s) not found: "),
             ([str(small), "--output-dir", str(tmp_path / "o"), "--val-docs", "0", "--tokenizer", str(tmp_path / "no.model")],
              "--tokenizer "),
             ([str(small), "--output-dir", str(small), "--val-docs", "0"], "is a file, not a folder"),
             ([str(small), "--output-dir", str(tmp_path / "o"), "--val-docs", "0", "--no-progress", "--no-audit"],
              "the training text is too small for this vocab size: use a larger corpus or a smaller --vocab-size "
              "(nothing written)")]
    def exit_code(argv):
        try:
            return bsd.main(argv)
        except SystemExit as e:  # argparse's parser.error
            return e.code

    for argv, needle in cases:
        code = exit_code(argv)
        err = capsys.readouterr().err
        assert code == 2 and needle in err and err.count("\n") == 1 and "Traceback" not in err, (argv, err)
        assert not (tmp_path / "o").exists()
