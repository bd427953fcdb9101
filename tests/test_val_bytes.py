"""The one BPB byte count every eval path uses: a per-position byte tensor of the validation
stream, from the tokenizer LUT or from a byte sidecar (CaseOps), with its loading errors."""
import math
import shutil

import numpy as np
import pytest
import sentencepiece as spm
import torch

from conftest import SAMPLE
from test_model_and_muon import cpu, randomize, tiny_cfg

BOS = 1


def write_shard(path, values):
    header = np.zeros(256, dtype="<i4")
    header[:3] = (20240520, 1, len(values))
    with open(path, "wb") as f:
        f.write(header.tobytes())
        f.write(np.asarray(values, dtype="<u2").tobytes())


@pytest.fixture(scope="module")
def sp():
    return spm.SentencePieceProcessor(model_file=str(SAMPLE / "sotu_1024_bpe.model"))


def test_lut_target_bytes_are_the_pair_counts(tg, sp):
    tokens = tg.load_shard(SAMPLE / "sotu_val_000000.bin")
    lut = tg.build_byte_lut(sp, 1024)
    vb = tg.lut_target_bytes(tokens, lut)
    assert vb.dtype == torch.int32 and len(vb) == len(tokens) and vb[0] == 0
    assert torch.equal(vb[1:].long(), lut.count(tokens[:-1].long(), tokens[1:].long()))
    assert (vb[tokens == BOS] == 0).all()


@pytest.fixture(scope="module")
def setup(tg):
    cfg = tiny_cfg(tg, EVAL_BATCH_SEQS=4, TTT_EVAL_SEQ_LEN=32, TTT_CHUNK_SIZE=16, VAL_BATCH_SIZE=32 * 4)
    torch.manual_seed(0)
    model = randomize(tg.build_model(cfg, cpu(tg))).eval()
    g = torch.Generator().manual_seed(3)
    tokens = torch.randint(2, 128, (301,), generator=g)
    tokens[[0, 57, 58, 200]] = BOS
    lut = tg.ByteLUT(torch.randint(1, 5, (128,), generator=g).to(torch.int16), torch.rand(128, generator=g) < 0.4,
                     torch.arange(128) < 2)
    return cfg, model, tokens, lut


@pytest.mark.parametrize("path", ["evaluate", "sliding", "ttt"])
def test_every_eval_path_counts_the_lut_bytes_of_what_it_scores(tg, setup, path):
    """Each path sums the byte tensor at exactly the targets it scores: its byte total is the
    LUT count of those (input, target) pairs, and bpb = nats / (ln 2 * bytes)."""
    cfg, model, tokens, lut = setup
    vb = tg.lut_target_bytes(tokens, lut)
    pair = lut.count(tokens[:-1].long(), tokens[1:].long())
    if path == "evaluate":
        r = tg.evaluate(model, tokens, vb, cfg, cpu(tg))
        scored = (len(tokens) - 1) // cfg.train_seq_len * cfg.train_seq_len  # the partial last window is dropped
    elif path == "sliding":
        r = tg.evaluate_sliding(model, tokens, vb, cfg, cpu(tg), stride=16)
        scored = len(tokens) - 1
    else:
        r = tg.evaluate_ttt(model, tokens, vb, cfg, cpu(tg), print)
        scored = len(tokens) - 1
    assert r.tokens == scored and r.bytes == int(pair[:scored].sum())
    assert r.bpb == pytest.approx(r.loss * r.tokens / (math.log(2) * r.bytes), rel=1e-12)


def test_eval_bytes_follow_the_tensor_not_the_tokens(tg, setup):
    """A sidecar's counts are used as given: doubling every entry halves bpb, same loss."""
    cfg, model, tokens, lut = setup
    vb = tg.lut_target_bytes(tokens, lut)
    for fn in (lambda b: tg.evaluate_sliding(model, tokens, b, cfg, cpu(tg), stride=16),
               lambda b: tg.evaluate(model, tokens, b, cfg, cpu(tg))):
        a, b = fn(vb), fn(vb * 2)
        assert b.bytes == 2 * a.bytes and b.loss == a.loss and b.bpb == pytest.approx(a.bpb / 2, rel=1e-12)


# ---------------------------------------------------------------------------------------
# Loading: LUT or sidecar, and the errors
# ---------------------------------------------------------------------------------------


@pytest.fixture()
def data_dir(tmp_path):
    """The sample's val shard under the published names, no sidecar yet."""
    shutil.copy(SAMPLE / "sotu_val_000000.bin", tmp_path / "fineweb_val_000000.bin")
    return tmp_path


def cfg_for(tg, data_dir, **env):
    return tg.Config.from_env({"DATA_PATH": str(data_dir), "TRAIN_SEQ_LEN": "128", **env})


def test_sidecar_equal_to_the_lut_gives_the_lut_bytes_and_is_not_read_as_tokens(tg, sp, data_dir):
    lut = tg.build_byte_lut(sp, 1024)
    tokens = tg.load_shard(data_dir / "fineweb_val_000000.bin")
    expected = tg.lut_target_bytes(tokens, lut)
    # Two sidecar shards that split the stream where the token shard does not: only the
    # concatenation has to line up.
    write_shard(data_dir / "fineweb_val_bytes_000000.bin", expected[:1000].numpy())
    write_shard(data_dir / "fineweb_val_bytes_000001.bin", expected[1000:].numpy())
    lines = []
    cfg = cfg_for(tg, data_dir)
    val = tg.load_validation_tokens(cfg, lines.append)  # fineweb_val_*.bin matches the sidecar too
    assert torch.equal(val, tokens)
    vb = tg.load_val_bytes(cfg, val, lut, BOS, lines.append)
    assert torch.equal(vb, expected) and "bpb_bytes:sidecar files:2" in lines[-1] and "detected" in lines[-1]
    # With VAL_MAX_TOKENS the sidecar is cut with the tokens.
    cut = cfg_for(tg, data_dir, VAL_MAX_TOKENS="5000", CASEOPS_ENABLED="1")
    val = tg.load_validation_tokens(cut, lines.append)
    assert torch.equal(tg.load_val_bytes(cut, val, lut, BOS, lines.append), expected[:5000])


def test_no_sidecar_means_the_lut(tg, sp, data_dir):
    lut = tg.build_byte_lut(sp, 1024)
    cfg = cfg_for(tg, data_dir)
    lines = []
    val = tg.load_validation_tokens(cfg, lines.append)
    assert torch.equal(tg.load_val_bytes(cfg, val, lut, BOS, lines.append), tg.lut_target_bytes(val, lut))
    assert lines[-1].startswith("bpb_bytes:lut")


def test_caseops_without_a_sidecar_is_an_error(tg, sp, data_dir):
    cfg = cfg_for(tg, data_dir, CASEOPS_ENABLED="1")
    val = tg.load_validation_tokens(cfg, print)
    with pytest.raises(FileNotFoundError, match=r"CASEOPS_ENABLED=1 but no byte sidecar matches .*fineweb_val_bytes_\*\.bin"):
        tg.load_val_bytes(cfg, val, tg.build_byte_lut(sp, 1024), BOS, print)
    other = cfg_for(tg, data_dir, CASEOPS_ENABLED="1", VAL_BYTES_GLOB="mine_*.bin")
    with pytest.raises(FileNotFoundError, match=r"mine_\*\.bin"):
        tg.load_val_bytes(other, val, tg.build_byte_lut(sp, 1024), BOS, print)


@pytest.mark.parametrize("damage, message", [
    (lambda b: b[:-1], "has 59788 entries but the val shards hold 59789 tokens"),
    (lambda b: np.concatenate([b, [3]]), "has 59790 entries"),
    (lambda b: np.roll(b, 1), "BOS positions a nonzero byte count"),
])
def test_a_sidecar_that_does_not_fit_the_tokens_is_an_error(tg, sp, data_dir, damage, message):
    lut = tg.build_byte_lut(sp, 1024)
    tokens = tg.load_shard(data_dir / "fineweb_val_000000.bin")
    write_shard(data_dir / "fineweb_val_bytes_000000.bin", damage(tg.lut_target_bytes(tokens, lut).numpy()))
    cfg = cfg_for(tg, data_dir)
    with pytest.raises(ValueError, match=message):
        tg.load_val_bytes(cfg, tg.load_validation_tokens(cfg, print), lut, BOS, print)


def test_val_glob_matching_only_sidecars_is_an_error(tg, data_dir):
    (data_dir / "fineweb_val_000000.bin").rename(data_dir / "fineweb_val_bytes_000000.bin")
    with pytest.raises(FileNotFoundError, match="matches only byte-sidecar files"):
        tg.load_validation_tokens(cfg_for(tg, data_dir), print)


# ---------------------------------------------------------------------------------------
# Tokenizer identity: sha256 in the log, and the data folder's manifest must agree
# ---------------------------------------------------------------------------------------

SAMPLE_MODEL = SAMPLE / "sotu_1024_bpe.model"


def _sha(path):
    import hashlib
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_tokenizer_sha256_is_logged_and_checked_against_the_build_manifest(tg, sp, tmp_path):
    import json
    cfg = tg.Config.from_env({"DATA_PATH": str(SAMPLE), "TOKENIZER_PATH": str(SAMPLE_MODEL)})
    lines = []
    assert tg.check_tokenizer(cfg, sp, lines.append) == _sha(SAMPLE_MODEL)
    assert f"sha256:{_sha(SAMPLE_MODEL)}" in lines[0] and str(SAMPLE / "manifest.json") in lines[1]
    # The same shards with another manifest entry: a different tokenizer was used to make them.
    data = tmp_path / "d"
    data.mkdir()
    manifest = json.loads((SAMPLE / "manifest.json").read_text())
    manifest["tokenizer"]["sha256"] = "ab" * 32
    (data / "manifest.json").write_text(json.dumps(manifest))
    bad = tg.Config.from_env({"DATA_PATH": str(data), "TOKENIZER_PATH": str(SAMPLE_MODEL)})
    with pytest.raises(ValueError, match=r"is not the tokenizer of .*manifest\.json: it names sotu_1024_bpe\.model "
                                         r"with sha256 abab"):
        tg.check_tokenizer(bad, sp, print)
    # A manifest without tokenizer.sha256 (older builds): the sha256 of its files entry counts.
    del manifest["tokenizer"]["sha256"]
    manifest["files"]["sotu_1024_bpe.model"]["sha256"] = "cd" * 32
    (data / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"with sha256 cdcd"):
        tg.check_tokenizer(bad, sp, print)
    # A manifest with only counts (such as a proxy corpus's) checks the piece count.
    (data / "manifest.json").write_text(json.dumps({"docs_val": 5, "vocab_size": 8192}))
    with pytest.raises(ValueError, match="says vocab_size 8192 but TOKENIZER_PATH"):
        tg.check_tokenizer(bad, sp, print)
    (data / "manifest.json").write_text(json.dumps({"docs_val": 5, "vocab_size": 1024}))
    tg.check_tokenizer(bad, sp, print)


@pytest.mark.parametrize("where", ["manifest.json", "manifests/someone__golf/manifest.json"])
def test_downloaded_data_needs_the_tokenizer_its_export_names(tg, sp, tmp_path, where):
    import json
    data = tmp_path / "datasets" / "fineweb10B_sp1024"
    data.mkdir(parents=True)
    (tmp_path / where).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / where).write_text(json.dumps({
        "datasets": [{"name": "fineweb10B_sp1024", "tokenizer_name": "sp_1024", "stats": {}}],
        "tokenizers": [{"name": "sp_1024", "model_path": "tokenizers/fineweb_1024_bpe.model"}]}))
    cfg = tg.Config.from_env({"DATA_PATH": str(data), "TOKENIZER_PATH": str(SAMPLE_MODEL)})
    with pytest.raises(ValueError, match=r"does not match .*manifest\.json: its dataset fineweb10B_sp1024 uses the "
                                         r"tokenizer fineweb_1024_bpe\.model"):
        tg.check_tokenizer(cfg, sp, print)
    named = tmp_path / "tokenizers" / "fineweb_1024_bpe.model"
    named.parent.mkdir()
    shutil.copy(SAMPLE_MODEL, named)
    lines = []
    tg.check_tokenizer(tg.Config.from_env({"DATA_PATH": str(data), "TOKENIZER_PATH": str(named)}), sp, lines.append)
    assert where in lines[-1]
