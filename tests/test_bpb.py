"""Tokenizer-agnostic BPB: the byte LUT against brute-force counts from decoded text."""
import numpy as np
import pytest
import sentencepiece as spm
import torch

from conftest import SAMPLE


@pytest.fixture(scope="module")
def sp():
    return spm.SentencePieceProcessor(model_file=str(SAMPLE / "sotu_1024_bpe.model"))


def split_docs(tokens, bos):
    starts = np.flatnonzero(tokens == bos)
    return [tokens[s + 1:e] for s, e in zip(starts, list(starts[1:]) + [len(tokens)])]


def test_lut_matches_decoded_text_on_the_sample(tg, sp):
    tokens = tg.load_shard(SAMPLE / "sotu_val_000000.bin")
    lut = tg.build_byte_lut(sp, 1024)
    lut_bytes = int(lut.count(tokens[:-1].long(), tokens[1:].long()).sum())
    docs = split_docs(tokens.numpy(), sp.bos_id())
    brute = sum(len(sp.decode(d.tolist()).encode("utf-8")) for d in docs)
    assert lut_bytes == brute > 100_000


def test_lut_matches_per_token_decoding(tg, sp):
    """Byte by byte: the bytes a token adds to its document's decoded text."""
    tokens = tg.load_shard(SAMPLE / "sotu_val_000000.bin").numpy()
    lut = tg.build_byte_lut(sp, 1024)
    doc = split_docs(tokens, sp.bos_id())[0][:400].tolist()
    ids = [sp.bos_id()] + doc
    counts = lut.count(torch.tensor(ids[:-1]), torch.tensor(ids[1:])).tolist()
    for k in range(1, len(doc) + 1):
        added = len(sp.decode(doc[:k]).encode()) - len(sp.decode(doc[:k - 1]).encode())
        assert counts[k - 1] == added, (k, sp.id_to_piece(doc[k - 1]))


def test_space_rule_and_byte_fallback(tg, sp):
    lut = tg.build_byte_lut(sp, 1024)
    space_piece = sp.piece_to_id("\u2581the")
    assert space_piece != sp.unk_id()
    word = next(i for i in range(1024) if sp.is_unknown(i) is False and not sp.is_control(i) and not sp.is_byte(i)
                and sp.id_to_piece(i).isalpha())  # a plain piece with no leading space
    bos = sp.bos_id()
    # "▁the" is 4 bytes after a normal token, 3 right after BOS (no real space at a doc start).
    assert lut.count(torch.tensor([word]), torch.tensor([space_piece])).item() == 4
    assert lut.count(torch.tensor([bos]), torch.tensor([space_piece])).item() == 3
    # BOS as a target carries no bytes; byte-fallback pieces are exactly one byte.
    assert lut.count(torch.tensor([word]), torch.tensor([bos])).item() == 0
    byte_ids = [i for i in range(1024) if sp.is_byte(i)]
    assert len(byte_ids) == 256 and all(lut.base_bytes[i] == 1 for i in byte_ids)
    assert not lut.has_leading_space[byte_ids].any()


def test_bpb_formula(tg, sp):
    """val_bpb = sum(nats) / (ln 2 * sum(bytes)) on a model that predicts uniformly."""
    class Uniform(torch.nn.Module):
        def forward(self, x):
            return torch.zeros(*x.shape, 1024)
    cfg = tg.Config.from_env({"TRAIN_SEQ_LEN": "128", "VAL_BATCH_SIZE": "1024"})
    tokens = tg.load_shard(SAMPLE / "sotu_val_000000.bin")[:2049]
    lut = tg.build_byte_lut(sp, 1024)
    r = tg.evaluate(Uniform(), tokens, tg.lut_target_bytes(tokens, lut), cfg, tg.Dist(0, 1, 0, torch.device("cpu")))
    nbytes = int(lut.count(tokens[:2048].long(), tokens[1:2049].long()).sum())
    assert r.tokens == 2048 and r.bytes == nbytes
    assert r.loss == pytest.approx(np.log(1024))
    assert r.bpb == pytest.approx(2048 * np.log(1024) / (np.log(2) * nbytes))


def test_tokenizer_checks(tg, sp):
    with pytest.raises(ValueError, match="VOCAB_SIZE=2048 does not match the tokenizer's vocab size 1024"):
        tg.build_byte_lut(sp, 2048)

    class NoSpacePiece:
        def vocab_size(self):
            return 1024

        def piece_to_id(self, piece):
            return 0

        def unk_id(self):
            return 0

    with pytest.raises(ValueError, match="no standalone U\\+2581 piece"):
        tg.build_byte_lut(NoSpacePiece(), 1024)
