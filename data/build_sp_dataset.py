"""Build a SentencePiece tokenizer and challenge-format token shards from raw text.

Usage (from the repository root):

    python data/build_sp_dataset.py CORPUS [CORPUS ...] --output-dir DIR (--val-docs N | --official-split) \
        [--prefix fineweb] [--vocab-size 1024 | --tokenizer MODEL] [--tokenizer-train-docs N] \
        [--tokenizer-train-bytes N] [--caseops] [--byte-sidecar] [--shard-tokens 100000000] \
        [--shuffle-seed S] [--workers W]

Pipeline:
  1. Read documents from the inputs, in the order given (see `read_documents` for formats).
  2. Optionally shuffle them with a seed (a fixed, platform-independent permutation).
  3. Split: validation = the first `--val-docs` documents, train = the rest.
     `--official-split` is the challenge's split: the first 50,000 documents, unshuffled.
  4. Train a SentencePiece BPE tokenizer on the train documents only (all of them, or the
     leading ones within --tokenizer-train-docs/--tokenizer-train-bytes), with the trainer
     settings of the Parameter Golf challenge (`CHALLENGE_TRAINER_SETTINGS`); or take an
     existing model with `--tokenizer`.
  5. Encode every document whole as [BOS] + pieces (no EOS) and write the token stream in
     the challenge's shard format, validation first, then train, in parallel processes.
     With `--caseops` the text goes through the lossless-caps transform first (see the
     CaseOps section), and a byte sidecar is written beside the val shards.
  6. Write `manifest.json` with counts, settings and the sha256 of every output file, and
     print the train_gpt.py variables that point the trainer at the new data.

Outputs in DIR:
  <prefix>_<vocab>_bpe.model / .vocab      the tokenizer (CaseOps: ..._bpe_lossless_caps_caseops_v1_reserved)
  <prefix>_val_000000.bin, ...             validation shards
  <prefix>_val_bytes_000000.bin, ...       with --caseops/--byte-sidecar: per val token, the
                                           UTF-8 bytes of original text it stands for
  <prefix>_train_000000.bin, ...           train shards
  manifest.json

Shard format (the challenge's): a header of 256 little-endian int32 words
[20240520 (magic), 1 (version), n_tokens, 0, ...], then n_tokens little-endian uint16 values
(token ids; byte counts in a sidecar).

The build is deterministic: the same inputs, options and sentencepiece version give
byte-identical outputs (the trainer runs single-threaded on a fixed sentence order, the
encoder's output does not depend on the number of workers, and nothing time- or
path-dependent is stored in the model or the manifest).
"""

from __future__ import annotations

import argparse
import collections
import gzip
import hashlib
import importlib.util
import io
import json
import multiprocessing
import os
import shlex
import shutil
import re
import sys
import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import sentencepiece as spm
from tqdm import tqdm

# ----------------------------------------------------------------------------------------
# Shard format
# ----------------------------------------------------------------------------------------

SHARD_MAGIC = 20240520
SHARD_VERSION = 1
HEADER_WORDS = 256
HEADER_BYTES = HEADER_WORDS * 4
HEADER_DTYPE = np.dtype("<i4")
TOKEN_DTYPE = np.dtype("<u2")
MAX_SHARD_TOKENS = 2**31 - 1  # n_tokens is stored in an int32 header word


class ShardFormatError(ValueError):
    """A file is not a well-formed challenge shard. The message names the file."""


def write_shard(path: str | Path, tokens: Sequence[int] | np.ndarray) -> None:
    """Write `tokens` to `path` as one challenge-format shard."""
    tokens = np.asarray(tokens)
    if tokens.ndim != 1:
        raise ValueError(f"{path}: tokens must be 1-D, got shape {tokens.shape}")
    if len(tokens) > MAX_SHARD_TOKENS:
        raise ValueError(f"{path}: {len(tokens)} tokens do not fit the int32 header")
    if tokens.size and (tokens.min() < 0 or tokens.max() > np.iinfo(np.uint16).max):
        raise ValueError(f"{path}: token ids must be in [0, 65535] to be stored as uint16")
    header = np.zeros(HEADER_WORDS, dtype=HEADER_DTYPE)
    header[0] = SHARD_MAGIC
    header[1] = SHARD_VERSION
    header[2] = len(tokens)
    with open(path, "wb") as f:
        f.write(header.tobytes())
        f.write(tokens.astype(TOKEN_DTYPE, copy=False).tobytes())


def read_shard_header(path: str | Path) -> int:
    """Validate a shard's header and its file size; return its token count.

    Raises ShardFormatError, naming the file, for a short header, a bad magic number or
    version, or a file size that disagrees with the header (e.g. a truncated download).
    """
    path = Path(path)
    size = path.stat().st_size
    if size < HEADER_BYTES:
        raise ShardFormatError(f"{path}: file has {size} bytes, shorter than the {HEADER_BYTES}-byte header")
    with open(path, "rb") as f:
        header = np.frombuffer(f.read(HEADER_BYTES), dtype=HEADER_DTYPE)
    if header[0] != SHARD_MAGIC:
        raise ShardFormatError(f"{path}: bad magic number {int(header[0])}, expected {SHARD_MAGIC}")
    if header[1] != SHARD_VERSION:
        raise ShardFormatError(f"{path}: unsupported shard version {int(header[1])}, expected {SHARD_VERSION}")
    n_tokens = int(header[2])
    expected = HEADER_BYTES + n_tokens * TOKEN_DTYPE.itemsize
    if n_tokens < 0 or size != expected:
        raise ShardFormatError(
            f"{path}: header says {n_tokens} tokens ({expected} bytes in all) but the file has {size} bytes"
            " (truncated or corrupt)"
        )
    return n_tokens


def read_shard(path: str | Path) -> np.ndarray:
    """Return the tokens of a challenge-format shard as a uint16 array (validated)."""
    n_tokens = read_shard_header(path)
    with open(path, "rb") as f:
        f.seek(HEADER_BYTES)
        return np.frombuffer(f.read(), dtype=TOKEN_DTYPE, count=n_tokens).astype(np.uint16)


# ----------------------------------------------------------------------------------------
# Reading documents
# ----------------------------------------------------------------------------------------


def _open_text(path: Path):
    """Open a text file for reading, decompressing `.gz` transparently."""
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, "r", encoding="utf-8")


def read_documents(
    path: str | Path, *, text_field: str = "text", txt_doc_sep: str | None = None
) -> Iterator[str]:
    """Yield the documents of one corpus file, in file order.

    Formats (optionally gzip-compressed, `.gz`):
      - `.jsonl`: one JSON object per line; the document is the string in `text_field`.
        Blank lines are ignored.
      - `.txt`: the whole file is one document, unless `txt_doc_sep` is given, in which case
        the file is split on that literal separator (e.g. "\\n\\n" for blank-line separated
        paragraphs). Line endings are normalized to "\\n" first.

    Documents that are empty or only whitespace are dropped: they would encode to a lone BOS.
    """
    path = Path(path)
    name = path.name[: -len(".gz")] if path.name.endswith(".gz") else path.name
    if not (name.endswith(".jsonl") or name.endswith(".txt")):
        raise ValueError(f"{path}: unsupported input type; expected .txt, .jsonl, .txt.gz or .jsonl.gz")
    try:
        if name.endswith(".jsonl"):
            yield from _read_jsonl(path, text_field)
        else:
            with _open_text(path) as f:
                text = f.read()
            blocks = text.split(txt_doc_sep) if txt_doc_sep else [text]
            yield from (block for block in blocks if block.strip())
    # Decoding and decompression fail deep inside the io layers, with messages that do not
    # say which of several inputs was bad.
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start} of a read block)") from exc
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise ValueError(f"{path}: not a valid gzip file, or truncated ({type(exc).__name__}: {exc})") from exc


def _read_jsonl(path: Path, text_field: str) -> Iterator[str]:
    with _open_text(path) as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{line_no}: invalid JSON ({exc.msg})") from exc
            if not isinstance(record, dict) or text_field not in record:
                raise ValueError(f"{path}:{line_no}: no {text_field!r} field (set --text-field)")
            text = record[text_field]
            if not isinstance(text, str):
                raise ValueError(f"{path}:{line_no}: field {text_field!r} is {type(text).__name__}, not a string")
            if text.strip():
                yield text


def shuffled(docs: Sequence[str], seed: int) -> list[str]:
    """Return `docs` in a seeded pseudo-random order.

    The permutation sorts document indices by sha256("<seed>:<index>"), so it depends only on
    the seed and the number of documents, never on the Python or numpy version.
    """
    keys = [hashlib.sha256(f"{seed}:{i}".encode()).digest() for i in range(len(docs))]
    return [docs[i] for i in sorted(range(len(docs)), key=keys.__getitem__)]


# ----------------------------------------------------------------------------------------
# CaseOps: the lossless-caps transform (lossless_caps_caseops_v1)
# ----------------------------------------------------------------------------------------
#
# Capitalization is moved out of the words into four operator characters from the Unicode
# Private Use Area, so "The", "THE" and "the" share one lower-case piece. Only maximal runs
# of ASCII letters are touched; every other character passes through, except a literal
# operator character, which is escaped. Per run w:
#   all lower case                  -> w
#   length >= 2 and all upper case  -> ALLCAPS + lower(w)
#   first upper, rest lower (or w is a single capital)  -> TITLE + lower(w)
#   mixed                           -> [TITLE if the first letter is upper] + the lowered
#                                      letters, with CAPNEXT before every later capital

CASEOPS_TITLE = "\ue001"    # the next word is TitleCase
CASEOPS_ALLCAPS = "\ue002"  # the next word is all caps
CASEOPS_CAPNEXT = "\ue003"  # the next letter is upper case
CASEOPS_ESC = "\ue004"      # the next character is a literal operator character
CASEOPS_OPERATORS = (CASEOPS_TITLE, CASEOPS_ALLCAPS, CASEOPS_CAPNEXT, CASEOPS_ESC)
CASEOPS_NAME = "lossless_caps_caseops_v1"

_ASCII_LETTER_RUN = re.compile(r"[A-Za-z]+")
_OPERATOR_CHAR = re.compile("[" + "".join(CASEOPS_OPERATORS) + "]")


def _is_ascii_letter(ch: str) -> bool:
    return "a" <= ch <= "z" or "A" <= ch <= "Z"


def _caseops_word(w: str) -> str:
    if w.islower():
        return w
    if len(w) >= 2 and w.isupper():
        return CASEOPS_ALLCAPS + w.lower()
    if w[0].isupper() and (len(w) == 1 or w[1:].islower()):
        return CASEOPS_TITLE + w.lower()
    head = (CASEOPS_TITLE if w[0].isupper() else "") + w[0].lower()
    return head + "".join(CASEOPS_CAPNEXT + c.lower() if c.isupper() else c for c in w[1:])


def caseops_encode(text: str) -> str:
    """Apply the lossless-caps transform; `caseops_decode` inverts it exactly."""
    text = _OPERATOR_CHAR.sub(lambda m: CASEOPS_ESC + m.group(), text)
    return _ASCII_LETTER_RUN.sub(lambda m: _caseops_word(m.group()), text)


class CaseOpsError(ValueError):
    """Operator characters in a place the transform never puts them."""


def caseops_decode(text: str) -> str:
    """Invert `caseops_encode`: a small state machine over the characters.

    Raises CaseOpsError for malformed operator placement: an operator at the end, ESC before
    a non-operator, TITLE/ALLCAPS not at the start of a letter run, CAPNEXT not before a
    lower-case letter inside a run, or ALLCAPS on a run that holds another operator."""
    out: list[str] = []
    i, n = 0, len(text)
    word_mode = ""  # "" | "allcaps" while inside the run an ALLCAPS opened
    while i < n:
        ch = text[i]
        nxt = text[i + 1] if i + 1 < n else ""
        prev_letter = bool(out) and _is_ascii_letter(out[-1])
        if ch == CASEOPS_ESC:
            if nxt not in CASEOPS_OPERATORS or not nxt:
                raise CaseOpsError(f"ESC at {i} is not followed by an operator character")
            out.append(nxt)
            word_mode = ""
            i += 2
            continue
        if ch in (CASEOPS_TITLE, CASEOPS_ALLCAPS):
            if not _is_ascii_letter(nxt) or prev_letter:
                raise CaseOpsError(f"{'TITLE' if ch == CASEOPS_TITLE else 'ALLCAPS'} at {i} is not at the start of a word")
            if ch == CASEOPS_TITLE:
                out.append(nxt.upper())
                word_mode = ""
            else:
                out.append(nxt.upper())
                word_mode = "allcaps"
            i += 2
            continue
        if ch == CASEOPS_CAPNEXT:
            if not ("a" <= nxt <= "z") or word_mode == "allcaps":
                raise CaseOpsError(f"CAPNEXT at {i} is not before a lower-case letter of a mixed-case word")
            out.append(nxt.upper())
            i += 2
            continue
        if _is_ascii_letter(ch):
            out.append(ch.upper() if word_mode == "allcaps" else ch)
        else:
            out.append(ch)
            word_mode = ""
        i += 1
    return "".join(out)


def caseops_original_bytes(piece_text: str, escaped: bool = False) -> tuple[int, bool]:
    """UTF-8 bytes of original text that a run of transformed characters stands for, and
    whether an ESC is still pending at its end. Operators count 0; an escaped operator
    counts its own length; every other character its UTF-8 length (an ASCII letter is one
    byte whatever its case)."""
    n = 0
    for ch in piece_text:
        if escaped:
            n += _utf8_len(ch)
            escaped = False
        elif ch == CASEOPS_ESC:
            escaped = True
        elif ch not in CASEOPS_OPERATORS:
            n += _utf8_len(ch)
    return n, escaped


# ----------------------------------------------------------------------------------------
# Tokenizer training
# ----------------------------------------------------------------------------------------

# The challenge's SentencePiece trainer settings (data/download_hf_docs_and_tokenize.py in
# openai/parameter-golf). Ids: pad 0, bos 1, eos 2, unk 3; byte pieces follow at 4..259.
CHALLENGE_TRAINER_SETTINGS = {
    "model_type": "bpe",
    "character_coverage": 0.999,
    "byte_fallback": True,
    "split_digits": True,
    "normalization_rule_name": "nmt_nfkc",
    "add_dummy_prefix": False,
    "pad_id": 0,
    "bos_id": 1,
    "eos_id": 2,
    "unk_id": 3,
    "hard_vocab_limit": False,
}

# Extra settings that make training reproducible; none changes what the challenge trains on
# a given sentence list. input_sentence_size=0 uses every sentence (no sampling, so the
# shuffle flag is moot, but it is pinned anyway), and one thread fixes the order of work.
DETERMINISM_SETTINGS = {
    "input_sentence_size": 0,
    "shuffle_input_sentence": False,
    "num_threads": 1,
}

# CaseOps: the operators are user-defined symbols, so ids 4-7 hold them and the byte
# pieces move to 8..263, the layout of the published CaseOps tokenizer.
CASEOPS_TRAINER_SETTINGS = {"user_defined_symbols": list(CASEOPS_OPERATORS)}

DEFAULT_MAX_SENTENCE_LENGTH = 4192  # SentencePiece's default, in UTF-8 bytes
SPACE_PIECE = "\u2581"  # "▁", SentencePiece's whitespace marker

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_WHITESPACE = re.compile(r"\s+")


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8"))


def trainer_sentences(doc: str, max_bytes: int = DEFAULT_MAX_SENTENCE_LENGTH) -> Iterator[str]:
    """Split one document into trainer "sentences" of at most `max_bytes` UTF-8 bytes.

    SentencePiece silently skips any training sentence longer than max_sentence_length, so a
    corpus of long single-line documents (such as whole speeches) would lose most of its
    text. Split at line breaks first, then pack sentences (., !, ? boundaries) greedily up to
    the limit, falling back to words and, for a single overlong word, to characters.
    Whitespace inside a piece may change (runs become one space); the nmt_nfkc normalizer
    collapses it anyway. Only tokenizer training sees these pieces: shards encode whole
    documents.
    """
    if max_bytes < 4:
        raise ValueError("max_bytes must be at least 4 (one UTF-8 character)")
    for line in doc.replace("\x00", " ").splitlines():
        line = line.strip()
        if not line:
            continue
        if _utf8_len(line) <= max_bytes:
            yield line
        else:
            yield from _pack(_SENTENCE_END.split(line), max_bytes, _split_sentence)


def _pack(units: Iterable[str], max_bytes: int, split_oversized) -> Iterator[str]:
    """Join consecutive units with single spaces into chunks of at most max_bytes bytes.

    A unit that alone exceeds the limit is handed to `split_oversized` instead.
    """
    chunk: list[str] = []
    size = 0
    for unit in units:
        if not unit:
            continue
        n = _utf8_len(unit)
        if n > max_bytes:
            if chunk:
                yield " ".join(chunk)
                chunk, size = [], 0
            yield from split_oversized(unit, max_bytes)
            continue
        if chunk and size + 1 + n > max_bytes:
            yield " ".join(chunk)
            chunk, size = [], 0
        size += n + (1 if chunk else 0)
        chunk.append(unit)
    if chunk:
        yield " ".join(chunk)


def _split_sentence(sentence: str, max_bytes: int) -> Iterator[str]:
    return _pack(_WHITESPACE.split(sentence), max_bytes, _split_word)


def _split_word(word: str, max_bytes: int) -> Iterator[str]:
    """Cut a whitespace-free string into pieces of at most max_bytes, at character bounds."""
    piece: list[str] = []
    size = 0
    for ch in word:
        n = _utf8_len(ch)
        if size + n > max_bytes:
            yield "".join(piece)
            piece, size = [], 0
        piece.append(ch)
        size += n
    if piece:
        yield "".join(piece)


class SplitError(ValueError):
    """The corpus cannot give the asked-for split (too few documents); checked before anything is written."""


class TokenizerError(RuntimeError):
    """The trained tokenizer does not meet the challenge's requirements."""


def train_tokenizer(
    docs: Iterable[str],
    vocab_size: int = 1024,
    *,
    max_sentence_length: int = DEFAULT_MAX_SENTENCE_LENGTH,
    caseops: bool = False,
    progress: bool = False,
) -> bytes:
    """Train a SentencePiece BPE model on `docs` with the challenge's settings.

    With `caseops`, `docs` must already be transformed, and the four operators become
    user-defined symbols (ids 4-7, always pieces of their own, before the byte pieces).
    Returns the serialized model. The model is produced in memory (no model_prefix), so no
    output path ends up inside it and two builds in different folders give identical bytes.
    Raises TokenizerError if the vocabulary came out smaller than asked (the corpus is too
    small for it) or if "▁" is not a piece of its own.
    """
    sentences = (s for doc in docs for s in trainer_sentences(doc, max_sentence_length))
    # SentencePiece first reads every sentence (this bar), then trains without a callback.
    sentences = iter(tqdm(sentences, unit="sent", desc="tokenizer input", disable=not progress, mininterval=2))
    model = io.BytesIO()
    t0 = time.perf_counter()
    spm.SentencePieceTrainer.train(
        sentence_iterator=sentences,
        model_writer=model,
        vocab_size=vocab_size,
        max_sentence_length=max_sentence_length,
        minloglevel=2,  # the trainer logs every step at INFO; keep warnings and errors
        **CHALLENGE_TRAINER_SETTINGS,
        **DETERMINISM_SETTINGS,
        **(CASEOPS_TRAINER_SETTINGS if caseops else {}),
    )
    if progress:
        print(f"tokenizer trained: vocab {vocab_size} in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    model_proto = model.getvalue()
    sp = spm.SentencePieceProcessor(model_proto=model_proto)
    if sp.get_piece_size() != vocab_size:
        # hard_vocab_limit=False lets SentencePiece stop early on a small corpus; a trainer
        # configured with VOCAB_SIZE=vocab_size would then disagree with the tokenizer.
        raise TokenizerError(
            f"trained vocabulary has {sp.get_piece_size()} pieces, not {vocab_size}: "
            "the training text is too small for this vocab size"
        )
    check_space_piece(sp)
    return model_proto


def check_space_piece(sp: spm.SentencePieceProcessor) -> None:
    """Require "▁" to be a piece of its own.

    Tokenizer-agnostic BPB counts the space of a "▁"-prefixed piece as one byte. If "▁" alone
    is not in the vocabulary it is byte-fallback encoded as three 1-byte tokens, which
    miscounts bytes and makes bpb look better than it is (parameter-golf #897).
    """
    if sp.piece_to_id(SPACE_PIECE) == sp.unk_id():
        raise TokenizerError(
            f'"{SPACE_PIECE}" (U+2581) is not a piece of the trained tokenizer; '
            "BPB byte counting would be wrong. Use a larger or more varied corpus."
        )


def save_tokenizer(model_proto: bytes, model_path: str | Path, vocab_path: str | Path) -> None:
    """Write the .model file and a .vocab file in SentencePiece's own format ("piece\\tscore")."""
    Path(model_path).write_bytes(model_proto)
    sp = spm.SentencePieceProcessor(model_proto=model_proto)
    # "%g" prints scores the way SentencePiece's C++ writer does (0, -1, ..., -1e+06).
    lines = [f"{sp.id_to_piece(i)}\t{sp.get_score(i):g}\n" for i in range(sp.get_piece_size())]
    with open(vocab_path, "w", encoding="utf-8", newline="\n") as f:
        f.writelines(lines)


# ----------------------------------------------------------------------------------------
# Encoding and shard writing
# ----------------------------------------------------------------------------------------


class ShardWriter:
    """Stream tokens into consecutive shards named `<prefix>_<split>_NNNNNN.bin`.

    Every shard except the last holds exactly `shard_tokens` tokens; a document may span two
    shards, as in the challenge's export.
    """

    def __init__(self, output_dir: Path, prefix: str, split: str, shard_tokens: int):
        if not 0 < shard_tokens <= MAX_SHARD_TOKENS:
            raise ValueError(f"shard_tokens must be in [1, {MAX_SHARD_TOKENS}], got {shard_tokens}")
        self.output_dir = output_dir
        self.prefix = prefix
        self.split = split
        self.buffer = np.empty(shard_tokens, dtype=np.uint16)
        self.fill = 0
        self.paths: list[Path] = []

    def add(self, tokens: np.ndarray) -> None:
        pos = 0
        while pos < len(tokens):
            take = min(len(self.buffer) - self.fill, len(tokens) - pos)
            self.buffer[self.fill : self.fill + take] = tokens[pos : pos + take]
            self.fill += take
            pos += take
            if self.fill == len(self.buffer):
                self._flush()

    def close(self) -> list[Path]:
        self._flush()
        return self.paths

    def _flush(self) -> None:
        if self.fill == 0:
            return
        path = self.output_dir / f"{self.prefix}_{self.split}_{len(self.paths):06d}.bin"
        write_shard(path, self.buffer[: self.fill])
        self.paths.append(path)
        self.fill = 0


class ByteCounter:
    """The byte sidecar: for each token, the UTF-8 bytes of text it stands for.

    A plain token counts the bytes of its decoded piece (its leading "▁" is one space byte,
    except right after BOS, where SentencePiece adds no real space), a byte-fallback token
    exactly 1, BOS and other control tokens 0: the tokenizer-agnostic BPB rule, so for a plain
    tokenizer the sidecar equals the trainer's LUT count token for token. With CaseOps the
    operator tokens count 0 and an ESC-escaped operator its own UTF-8 length, so the counts
    are bytes of the original, untransformed text.
    """

    def __init__(self, sp: spm.SentencePieceProcessor, caseops: bool):
        n = sp.get_piece_size()
        self.base = np.zeros(n, dtype=np.int64)
        self.space = np.zeros(n, dtype=bool)
        self.boundary = np.zeros(n, dtype=bool)
        self.operator = np.zeros(n, dtype=bool)
        self.esc_id = -1
        for i in range(n):
            if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
                self.boundary[i] = True
                continue
            if sp.is_byte(i):
                self.base[i] = 1
                continue
            piece = sp.id_to_piece(i)
            if caseops and piece in CASEOPS_OPERATORS:
                self.operator[i] = True
                self.base[i] = _utf8_len(piece)  # counted only when escaped (see counts)
                self.esc_id = i if piece == CASEOPS_ESC else self.esc_id
                continue
            if caseops and _OPERATOR_CHAR.search(piece):
                raise TokenizerError(f"piece {i} ({piece!r}) merges a CaseOps operator with text: "
                                     "the operators must be user-defined symbols")
            if piece.startswith(SPACE_PIECE):
                self.space[i], piece = True, piece[1:]
            self.base[i] = _utf8_len(piece.replace(SPACE_PIECE, " "))
        if caseops and int(self.operator.sum()) != len(CASEOPS_OPERATORS):
            raise TokenizerError(f"the tokenizer has {int(self.operator.sum())} of the {len(CASEOPS_OPERATORS)} "
                                 "CaseOps operator pieces (U+E001..U+E004); it was not trained for --caseops")

    def counts(self, ids: np.ndarray) -> np.ndarray:
        """Byte counts of one document's tokens, [BOS] + pieces (uint16, BOS = 0)."""
        ids = ids.astype(np.int64)
        out = np.where(self.operator[ids], 0, self.base[ids])
        out[1:] += self.space[ids[1:]] & ~self.boundary[ids[:-1]]
        if self.esc_id >= 0:
            escaped = np.zeros(len(ids), dtype=bool)
            for p in np.flatnonzero(ids == self.esc_id):  # in order: an escaped ESC escapes nothing
                if escaped[p]:
                    continue
                if p + 1 >= len(ids) or not self.operator[ids[p + 1]]:
                    raise CaseOpsError(f"token {p}: ESC is not followed by an operator token")
                escaped[p + 1] = True
            out[escaped] = self.base[ids[escaped]]
        return out.astype(np.uint16)


@dataclass
class EncodedDoc:
    tokens: np.ndarray              # [BOS] + pieces, uint16
    byte_counts: np.ndarray | None  # the sidecar entries of these tokens (when asked for)
    text_bytes: int                 # UTF-8 bytes of the text the tokens stand for


_WORKER_STATE: dict = {}


def _encode_batch(task: tuple[bytes, bool, bool, list[str]]) -> list[EncodedDoc]:
    """Encode a batch of documents (in a worker process, or in-process for one worker)."""
    model_proto, caseops, sidecar, docs = task
    key = hashlib.sha256(model_proto).digest()
    if _WORKER_STATE.get("key") != key:
        sp = spm.SentencePieceProcessor(model_proto=model_proto)
        _WORKER_STATE.update(key=key, sp=sp, counter=ByteCounter(sp, caseops) if sidecar or caseops else None)
    sp, counter = _WORKER_STATE["sp"], _WORKER_STATE["counter"]
    texts = [caseops_encode(d) for d in docs] if caseops else docs
    out = []
    for ids in sp.encode(texts, out_type=int, num_threads=1):
        tokens = np.asarray([sp.bos_id(), *ids], dtype=np.uint16)
        counts = counter.counts(tokens) if counter is not None else None
        # Without CaseOps the decoded text is what tokenizer-agnostic bpb counts; with it, the
        # sidecar sum is (operators carry no original bytes).
        text_bytes = int(counts.sum()) if caseops else _utf8_len(sp.decode(ids))
        out.append(EncodedDoc(tokens, counts if sidecar else None, text_bytes))
    return out


def encode_documents(
    model_proto: bytes,
    docs: Sequence[str],
    *,
    caseops: bool = False,
    sidecar: bool = False,
    workers: int = 1,
    batch_size: int = 256,
    desc: str = "encode",
    progress: bool = True,
) -> Iterator[EncodedDoc]:
    """Yield each document encoded whole as [BOS] + pieces (no EOS), in order.

    With `caseops` the text is transformed first; with `sidecar` each document also gets its
    byte counts (ByteCounter). `workers` > 1 spreads batches over that many processes; the
    output does not depend on it. Unlike the trainer, the encoder has no length limit.
    """
    tasks = ((model_proto, caseops, sidecar, list(docs[i : i + batch_size])) for i in range(0, len(docs), batch_size))
    with tqdm(total=len(docs), unit="doc", desc=desc, disable=not progress, mininterval=2) as bar:
        if workers <= 1:
            for task in tasks:
                batch = _encode_batch(task)
                yield from batch
                bar.update(len(batch))
            return
        # fork: the workers need nothing but the task (the data tools are not a package, so a
        # spawned child could not re-import this module by name). At most 4 batches per worker
        # are in flight, so memory stays bounded whatever the corpus size.
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            pending: collections.deque = collections.deque()
            for task in tasks:
                pending.append(pool.apply_async(_encode_batch, (task,)))
                if len(pending) >= 4 * workers:
                    batch = pending.popleft().get()
                    yield from batch
                    bar.update(len(batch))
            while pending:
                batch = pending.popleft().get()
                yield from batch
                bar.update(len(batch))


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ----------------------------------------------------------------------------------------
# Whole build
# ----------------------------------------------------------------------------------------


OFFICIAL_VAL_DOCS = 50_000  # the challenge's validation split: the first 50,000 documents, unshuffled


@dataclass(frozen=True)
class BuildOptions:
    """Everything that determines the output of a build, besides the input bytes (and, with
    an existing tokenizer, its bytes, whose sha256 the manifest records)."""

    prefix: str = "fineweb"
    vocab_size: int = 1024  # of the trained tokenizer; an existing one brings its own
    val_docs: int = 0  # validation = the first val_docs documents (after the optional shuffle)
    shard_tokens: int = 100_000_000  # the challenge's shard size
    shuffle_seed: int | None = None  # None keeps the input order
    text_field: str = "text"  # JSON field holding the text in .jsonl inputs
    txt_doc_sep: str | None = None  # None: a .txt file is one document
    max_sentence_length: int = DEFAULT_MAX_SENTENCE_LENGTH  # trainer limit, UTF-8 bytes
    tokenizer_train_docs: int | None = None  # train the tokenizer on at most this many train docs
    tokenizer_train_bytes: int | None = None  # ... and at most this many UTF-8 bytes of them
    caseops: bool = False  # lossless-caps transform before tokenizing; implies byte_sidecar
    byte_sidecar: bool = False  # write <prefix>_val_bytes_NNNNNN.bin beside the val shards

    def validate(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", self.prefix):
            raise ValueError(f"prefix {self.prefix!r}: use letters, digits, '.', '_' or '-'")
        if not 260 < self.vocab_size <= 65536:
            # 4 special + 256 byte-fallback pieces come first; uint16 storage caps the top.
            raise ValueError(f"vocab_size={self.vocab_size}: must be in [261, 65536]")
        if self.val_docs < 0:
            raise ValueError(f"val_docs={self.val_docs}: must be >= 0")
        if not 0 < self.shard_tokens <= MAX_SHARD_TOKENS:
            raise ValueError(f"shard_tokens={self.shard_tokens}: must be in [1, {MAX_SHARD_TOKENS}]")
        if self.max_sentence_length < 4:
            raise ValueError(f"max_sentence_length={self.max_sentence_length}: must be >= 4")
        for name in ("tokenizer_train_docs", "tokenizer_train_bytes"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}: must be >= 1")

    @property
    def sidecar(self) -> bool:
        return self.caseops or self.byte_sidecar


SPLIT_NAMES = ("val", "train", "val_bytes")


def _remove_old_shards(output_dir: Path, prefix: str) -> None:
    """Delete <prefix>_{val,train,val_bytes}_NNNNNN.bin left by an earlier build, which may
    have had more shards (or a sidecar) than this one; files with other names are left alone."""
    for split in SPLIT_NAMES:
        for old in output_dir.glob(f"{prefix}_{split}_*.bin"):
            if re.fullmatch(rf"{re.escape(prefix)}_{split}_\d{{6}}\.bin", old.name):
                old.unlink()


def tokenizer_training_docs(train_docs: Sequence[str], options: BuildOptions) -> list[str]:
    """The leading train documents the tokenizer learns from, within the caps.

    The records' exporter trained on every document; at FineWeb scale that is hours of
    trainer time and memory for little gain, so --tokenizer-train-docs/-bytes cap it. The
    prefix is taken in order (after the optional shuffle), so the choice is reproducible."""
    take, total = [], 0
    for doc in train_docs:
        if options.tokenizer_train_docs is not None and len(take) >= options.tokenizer_train_docs:
            break
        size = _utf8_len(doc)
        if options.tokenizer_train_bytes is not None and take and total + size > options.tokenizer_train_bytes:
            break
        take.append(doc)
        total += size
    return take


def _write_split(
    model_proto: bytes, docs: Sequence[str], output_dir: Path, options: BuildOptions, split: str,
    *, workers: int, progress: bool,
) -> dict:
    """Encode one split into shards (and, for val, the sidecar); return its counts and names."""
    writer = ShardWriter(output_dir, options.prefix, split, options.shard_tokens)
    sidecar = options.sidecar and split == "val"
    # Same shard size, so sidecar shard k lines up with token shard k.
    side_writer = ShardWriter(output_dir, options.prefix, "val_bytes", options.shard_tokens) if sidecar else None
    n_tokens = n_bytes = 0
    hashes = []  # each document's hash (the audit's): their digest is the identity of the split
    audit = _audit_module()
    for doc in encode_documents(model_proto, docs, caseops=options.caseops, sidecar=sidecar, workers=workers,
                                desc=f"encode {split}", progress=progress):
        writer.add(doc.tokens)
        if split == "val":
            hashes.append(audit.doc_hash(doc.tokens[1:]))
        if side_writer is not None:
            side_writer.add(doc.byte_counts)
        n_tokens += len(doc.tokens)
        n_bytes += doc.text_bytes
    out = {"shards": [p.name for p in writer.close()], "tokens": n_tokens, "text_bytes": n_bytes}
    if split == "val":
        out["docs_digest"] = audit.docs_digest(hashes)
    if side_writer is not None:
        out["sidecar"] = [p.name for p in side_writer.close()]
    return out


def _read_all(inputs: Sequence[str | Path], options: BuildOptions, progress: bool) -> list[str]:
    docs: list[str] = []
    for path in inputs:
        with tqdm(unit="doc", desc=f"read {Path(path).name}", disable=not progress, mininterval=2) as bar:
            for doc in read_documents(path, text_field=options.text_field, txt_doc_sep=options.txt_doc_sep):
                docs.append(doc)
                bar.update()
    return docs


def _given_tokenizer(path: Path, options: BuildOptions, vocab_size: int | None) -> bytes:
    """Read and check an existing tokenizer for --tokenizer."""
    if not path.is_file():
        raise FileNotFoundError(f"--tokenizer {path}: no such file")
    model_proto = path.read_bytes()
    try:
        sp = spm.SentencePieceProcessor(model_proto=model_proto)
    except RuntimeError as exc:
        raise TokenizerError(f"--tokenizer {path}: not a SentencePiece model ({exc})") from exc
    if vocab_size is not None and sp.get_piece_size() != vocab_size:
        raise TokenizerError(f"--tokenizer {path} has {sp.get_piece_size()} pieces, --vocab-size says {vocab_size}")
    check_space_piece(sp)
    ByteCounter(sp, options.caseops)  # a --caseops build needs the operator pieces
    return model_proto


def build_dataset(
    inputs: Sequence[str | Path],
    output_dir: str | Path,
    options: BuildOptions,
    *,
    tokenizer: str | Path | None = None,
    encode_threads: int | None = None,
    progress: bool = True,
    audit: bool = True,
) -> dict:
    """Run the whole pipeline (module docstring) and return the manifest it wrote.

    `tokenizer`: encode with this existing SentencePiece model instead of training one (its
    piece count must equal options.vocab_size); it is copied into `output_dir` under its own
    name, with its .vocab when one lies beside it. `encode_threads`: worker processes for
    encoding (default: all CPUs); the output does not depend on it. `audit`: run
    data/audit_data.py on the output and write its verdict into the manifest under "audit"."""
    options.validate()
    output_dir = Path(output_dir)
    workers = encode_threads or os.cpu_count() or 1
    t0 = time.perf_counter()

    def note(msg: str) -> None:
        if progress:
            print(f"[{time.perf_counter() - t0:7.1f}s] {msg}", file=sys.stderr, flush=True)

    docs = _read_all(inputs, options, progress)
    note(f"read {len(docs)} documents from {len(inputs)} file(s)")
    if options.shuffle_seed is not None:
        docs = shuffled(docs, options.shuffle_seed)
    if options.val_docs >= len(docs):
        raise SplitError(f"val_docs={options.val_docs} leaves no train documents ({len(docs)} documents read)")
    splits = {"val": docs[: options.val_docs], "train": docs[options.val_docs :]}
    output_dir.mkdir(parents=True, exist_ok=True)  # only now: a refused split leaves nothing behind

    if tokenizer is not None:
        tokenizer = Path(tokenizer)
        model_proto = _given_tokenizer(tokenizer, options, options.vocab_size)
        model_path = output_dir / tokenizer.name
        vocab_path = output_dir / (tokenizer.stem + ".vocab")
        if model_path.resolve() != tokenizer.resolve():
            model_path.write_bytes(model_proto)
        given_vocab = tokenizer.with_suffix(".vocab")
        if given_vocab.is_file() and given_vocab.resolve() != vocab_path.resolve():
            shutil.copyfile(given_vocab, vocab_path)
        elif not given_vocab.is_file():
            save_tokenizer(model_proto, model_path, vocab_path)
        trained_on = {"given": tokenizer.name, "sha256": hashlib.sha256(model_proto).hexdigest()}
        note(f"tokenizer: {tokenizer} (given)")
    else:
        train_docs = tokenizer_training_docs(splits["train"], options)
        train_bytes = sum(_utf8_len(d) for d in train_docs)
        note(f"training the tokenizer (vocab {options.vocab_size}) on {len(train_docs)} of {len(splits['train'])} "
             f"train documents ({train_bytes / 1e6:.1f} MB)")
        text = (caseops_encode(d) for d in train_docs) if options.caseops else train_docs
        model_proto = train_tokenizer(text, options.vocab_size, max_sentence_length=options.max_sentence_length,
                                      caseops=options.caseops, progress=progress)
        stem = f"{options.prefix}_{options.vocab_size}_bpe" + ("_lossless_caps_caseops_v1_reserved" if options.caseops else "")
        model_path, vocab_path = output_dir / f"{stem}.model", output_dir / f"{stem}.vocab"
        save_tokenizer(model_proto, model_path, vocab_path)
        trained_on = ("train split only" if len(train_docs) == len(splits["train"]) else
                      {"train_docs": len(train_docs), "train_text_bytes": train_bytes, "of_train_docs": len(splits["train"])})
        note("tokenizer trained")
    sp = spm.SentencePieceProcessor(model_proto=model_proto)

    _remove_old_shards(output_dir, options.prefix)
    counts: dict[str, int] = {}
    shard_names: dict[str, list[str]] = {}
    for split in ("val", "train"):
        result = _write_split(model_proto, splits[split], output_dir, options, split, workers=workers, progress=progress)
        shard_names[split] = result["shards"]
        if "sidecar" in result:
            shard_names["val_bytes"] = result["sidecar"]
        counts.update({f"docs_{split}": len(splits[split]), f"tokens_{split}": result["tokens"],
                       f"text_bytes_{split}": result["text_bytes"]})
        if split == "val":
            counts["val_docs_digest"] = result["docs_digest"]
        note(f"encoded {split}: {result['tokens']} tokens, {result['text_bytes'] / max(result['tokens'], 1):.3f} "
             "text bytes per token")

    outputs = [model_path, vocab_path] + [output_dir / n for names in shard_names.values() for n in names]
    settings = {"vocab_size": sp.get_piece_size(), "max_sentence_length": options.max_sentence_length,
                **CHALLENGE_TRAINER_SETTINGS, **DETERMINISM_SETTINGS, **(CASEOPS_TRAINER_SETTINGS if options.caseops else {})}
    manifest = {
        # Flat counts first, with the same keys as the proxy corpus's manifest.
        **counts,
        "bos_id": sp.bos_id(),
        "vocab_size": sp.get_piece_size(),
        "format": {
            "header_int32_words": HEADER_WORDS,
            "magic": SHARD_MAGIC,
            "version": SHARD_VERSION,
            "token_dtype": "uint16 little-endian",
            "doc_layout": "[BOS] + pieces, no EOS",
            **({"val_bytes": "uint16 per val token: UTF-8 bytes of the original text it stands for (BOS 0)"}
               if options.sidecar else {}),
        },
        **({"text_transform": CASEOPS_NAME} if options.caseops else {}),
        "tokenizer": {
            "model": model_path.name,
            "vocab": vocab_path.name,
            "sha256": hashlib.sha256(model_proto).hexdigest(),
            **({"trainer_settings": settings} if tokenizer is None else {}),
            "trained_on": trained_on,
            "sentencepiece_version": spm.__version__,
        },
        "shards": shard_names,
        "options": asdict(options),
        "inputs": [{"name": Path(p).name, "bytes": Path(p).stat().st_size, "sha256": _sha256_file(Path(p))}
                   for p in inputs],
        "files": {p.name: {"bytes": p.stat().st_size, "sha256": _sha256_file(p)} for p in outputs},
    }
    manifest_path = output_dir / "manifest.json"
    manifest_path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if audit:
        # The audit of what was just written: no validation document in the train shards, every
        # one in the val shards (their digest against val_docs_digest), the sidecar against the text.
        audit_mod = _audit_module()
        opts = audit_mod.AuditOptions(train_glob=f"{options.prefix}_train_*.bin", val_glob=f"{options.prefix}_val_*.bin",
                                      val_bytes_glob=f"{options.prefix}_val_bytes_*.bin", bos_id=sp.bos_id(),
                                      tokenizer=model_path)
        manifest["audit"] = audit_mod.run_audit(output_dir, opts, progress=progress, log=note)
        audit_mod.write_into_manifest(output_dir, manifest["audit"])
    note(f"wrote {manifest_path}")
    return manifest


def _audit_module():
    """data/audit_data.py (data/ is a folder of scripts, not a package)."""
    if "audit_data" not in sys.modules:
        spec = importlib.util.spec_from_file_location("audit_data", Path(__file__).with_name("audit_data.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules["audit_data"] = module
        spec.loader.exec_module(module)
    return sys.modules["audit_data"]


def trainer_variables(manifest: dict, output_dir: Path) -> dict[str, str]:
    """The train_gpt.py environment variables that point it at a built dataset."""
    prefix = manifest["options"]["prefix"]
    env = {
        "DATA_PATH": str(output_dir.resolve()),
        "TRAIN_GLOB": f"{prefix}_train_*.bin",
        "VAL_GLOB": f"{prefix}_val_*.bin",
        "TOKENIZER_PATH": str(output_dir.resolve() / manifest["tokenizer"]["model"]),
        "VOCAB_SIZE": str(manifest["vocab_size"]),
    }
    if "val_bytes" in manifest["shards"]:
        env["VAL_BYTES_GLOB"] = f"{prefix}_val_bytes_*.bin"
    if manifest.get("text_transform") == CASEOPS_NAME:
        env["CASEOPS_ENABLED"] = "1"
    return env


# ----------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------


def _unescape_separator(text: str) -> str:
    """Turn the escapes \\n, \\t and \\\\ typed on a command line into the characters."""
    return re.sub(r"\\([nt\\])", lambda m: {"n": "\n", "t": "\t", "\\": "\\"}[m.group(1)], text)


class OneLineParser(argparse.ArgumentParser):
    """A usage error is one line naming the flag and pointing at --help (exit 2), not the usage block."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    defaults = BuildOptions()
    parser = OneLineParser(
        description="Train a SentencePiece BPE tokenizer with the Parameter Golf settings (or take an existing "
        "one) and write challenge-format shards (validation = the first --val-docs documents).",
    )
    parser.add_argument("inputs", nargs="+", type=Path,
                        help="corpus files: .jsonl / .jsonl.gz (one JSON object per line) or .txt / .txt.gz")
    parser.add_argument("--output-dir", type=Path, required=True,
                        help="folder for the tokenizer, shards and manifest")
    split = parser.add_mutually_exclusive_group(required=True)
    split.add_argument("--val-docs", type=int,
                       help="number of leading documents (after --shuffle-seed) that form the validation split")
    split.add_argument("--official-split", action="store_true",
                       help=f"the challenge's split: the first {OFFICIAL_VAL_DOCS:,} documents, in input order "
                       "(no shuffle), are validation; use it on the published docs_selected.jsonl")
    parser.add_argument("--prefix", default=defaults.prefix,
                        help="file name prefix: <prefix>_train_000000.bin, <prefix>_<vocab>_bpe.model "
                        "(default: %(default)s)")
    parser.add_argument("--vocab-size", type=int, default=None,
                        help=f"tokenizer vocabulary size (default: {defaults.vocab_size}; with --tokenizer, "
                        "the model's, and a different value is an error)")
    parser.add_argument("--tokenizer", type=Path, default=None,
                        help="encode with this existing SentencePiece .model instead of training one (copied "
                        "into the output folder, with the .vocab beside it if there is one)")
    parser.add_argument("--tokenizer-train-docs", type=int, default=None,
                        help="train the tokenizer on at most the first N train documents (default: all)")
    parser.add_argument("--tokenizer-train-bytes", type=int, default=None,
                        help="train the tokenizer on at most N UTF-8 bytes of leading train documents "
                        "(default: all); with --tokenizer-train-docs, the tighter cap wins")
    parser.add_argument("--caseops", action="store_true",
                        help="apply the lossless-caps (CaseOps) transform before tokenizing, reserve its four "
                        "operators as user-defined pieces, and write the val byte sidecar "
                        "<prefix>_val_bytes_NNNNNN.bin that train_gpt.py scores BPB with")
    parser.add_argument("--byte-sidecar", action="store_true",
                        help="write the val byte sidecar without CaseOps (it then equals the trainer's LUT count)")
    parser.add_argument("--shard-tokens", type=int, default=defaults.shard_tokens,
                        help="tokens per shard; the last shard of a split holds the rest (default: %(default)s)")
    parser.add_argument("--shuffle-seed", type=int, default=None,
                        help="shuffle the documents with this seed before the split (default: keep input order)")
    parser.add_argument("--text-field", default=defaults.text_field,
                        help="JSON field with the text in .jsonl inputs (default: %(default)s)")
    parser.add_argument("--txt-doc-sep", default=None,
                        help=r"split .txt inputs into documents at this literal separator; \n and \t are "
                        r"understood, e.g. '\n\n' for blank-line separated blocks (default: one document per file)")
    parser.add_argument("--max-sentence-length", type=int, default=defaults.max_sentence_length,
                        help="SentencePiece trainer limit in UTF-8 bytes; longer text is split for training "
                        "(default: %(default)s)")
    parser.add_argument("--workers", "--encode-threads", dest="workers", type=int, default=None,
                        help="processes for encoding the shards; does not change the output (default: all CPUs)")
    parser.add_argument("--no-audit", action="store_true",
                        help="skip the audit of the output (data/audit_data.py: no validation document in the train "
                        "shards, the val split complete); by default its verdict goes into manifest.json")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars and step notes")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.official_split and args.shuffle_seed is not None:
        parser.error("--official-split keeps the input order; it cannot be combined with --shuffle-seed")
    if args.tokenizer is not None and (args.tokenizer_train_docs or args.tokenizer_train_bytes):
        parser.error("--tokenizer-train-docs/--tokenizer-train-bytes cap tokenizer training; --tokenizer trains none")
    missing = [str(p) for p in args.inputs if not Path(p).is_file()]
    if missing:
        parser.error(f"input file(s) not found: {', '.join(missing)}")
    if args.tokenizer is not None and not args.tokenizer.is_file():
        parser.error(f"--tokenizer {args.tokenizer}: no such file (leave it out to train one)")
    if args.output_dir.exists() and not args.output_dir.is_dir():
        parser.error(f"--output-dir {args.output_dir} is a file, not a folder")
    vocab_size = args.vocab_size
    if vocab_size is None:
        vocab_size = BuildOptions.vocab_size
        if args.tokenizer is not None and args.tokenizer.is_file():
            try:
                vocab_size = spm.SentencePieceProcessor(model_file=str(args.tokenizer)).get_piece_size()
            except (RuntimeError, OSError) as exc:
                parser.error(f"--tokenizer {args.tokenizer}: not a SentencePiece model ({exc})")
    options = BuildOptions(
        prefix=args.prefix,
        vocab_size=vocab_size,
        val_docs=OFFICIAL_VAL_DOCS if args.official_split else args.val_docs,
        shard_tokens=args.shard_tokens,
        shuffle_seed=args.shuffle_seed,
        text_field=args.text_field,
        txt_doc_sep=_unescape_separator(args.txt_doc_sep) if args.txt_doc_sep else None,
        max_sentence_length=args.max_sentence_length,
        tokenizer_train_docs=args.tokenizer_train_docs,
        tokenizer_train_bytes=args.tokenizer_train_bytes,
        caseops=args.caseops,
        byte_sidecar=args.byte_sidecar,
    )
    created = not args.output_dir.exists()
    try:
        manifest = build_dataset(args.inputs, args.output_dir, options, tokenizer=args.tokenizer,
                                 encode_threads=args.workers, progress=not args.no_progress, audit=not args.no_audit)
    except (TokenizerError, CaseOpsError, ShardFormatError, OSError, UnicodeDecodeError) as exc:
        # a corpus or a place the tool cannot use: one line; a folder this run created is removed
        if created:
            shutil.rmtree(args.output_dir, ignore_errors=True)
        where = (f"{exc.filename}: " if isinstance(exc, OSError) and exc.filename else "")
        fix = {TokenizerError: "pass the --vocab-size and --caseops the given --tokenizer was built for"
               if args.tokenizer else "use a larger corpus or a smaller --vocab-size",
               UnicodeDecodeError: "inputs must be UTF-8 text"}.get(type(exc), "check the inputs and --output-dir")
        print(f"build_sp_dataset.py: error: {where}{getattr(exc, 'strerror', None) or exc}: {fix} "
              + ("(nothing written)" if created else f"({args.output_dir} existed before and may hold a partial build)"),
              file=sys.stderr)
        return 2
    except SplitError as exc:
        hint = (f"--official-split holds out the first {OFFICIAL_VAL_DOCS:,} documents as validation; "
                "use --val-docs N for a smaller corpus" if args.official_split else "lower --val-docs")
        print(f"build_sp_dataset.py: error: {exc}: {hint} (nothing written)", file=sys.stderr)
        return 2
    for split in ("val", "train"):
        print(f"{split}: {manifest[f'docs_{split}']} docs, {manifest[f'tokens_{split}']} tokens, "
              f"{len(manifest['shards'][split])} shard(s), "
              f"{manifest[f'text_bytes_{split}'] / max(manifest[f'tokens_{split}'], 1):.4f} text bytes/token")
    if "val_bytes" in manifest["shards"]:
        print(f"val byte sidecar: {len(manifest['shards']['val_bytes'])} shard(s), {manifest['text_bytes_val']} bytes")
    print(f"tokenizer: {manifest['tokenizer']['model']} (vocab {manifest['vocab_size']}, "
          f"sha256 {manifest['tokenizer']['sha256']})")
    print(f"manifest: {args.output_dir / 'manifest.json'}")
    if "audit" in manifest:
        a = manifest["audit"]
        print(f"audit: {a['result']} shared_docs:{a['shared_docs']['count']} val_docs:{a['val']['docs']} "
              f"val_targets:{a['val']['targets']} digest:{a['digest']}" + "".join(f"\n  problem: {p}" for p in a["problems"]))
    print("train_gpt.py variables for this data:")
    print(" ".join(f"{k}={shlex.quote(v)}" for k, v in trainer_variables(manifest, args.output_dir).items()))
    return 0 if manifest.get("audit", {}).get("result", "PASS") == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
