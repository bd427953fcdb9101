"""Build a SentencePiece tokenizer and challenge-format token shards from raw text.

Usage (from the repository root):

    python data/build_sp_dataset.py CORPUS [CORPUS ...] --output-dir DIR --val-docs N \
        [--prefix fineweb] [--vocab-size 1024] [--shard-tokens 100000000] [--shuffle-seed S]

Pipeline:
  1. Read documents from the inputs, in the order given (see `read_documents` for formats).
  2. Optionally shuffle them with a seed (a fixed, platform-independent permutation).
  3. Split: validation = the first `--val-docs` documents, train = the rest.
  4. Train a SentencePiece BPE tokenizer on the train documents only, with the trainer
     settings of the Parameter Golf challenge (`CHALLENGE_TRAINER_SETTINGS`).
  5. Encode every document whole as [BOS] + pieces (no EOS) and write the token stream in
     the challenge's shard format, validation first, then train.
  6. Write `manifest.json` with counts, settings and the sha256 of every output file.

Outputs in DIR:
  <prefix>_<vocab>_bpe.model / .vocab      the tokenizer
  <prefix>_val_000000.bin, ...             validation shards
  <prefix>_train_000000.bin, ...           train shards
  manifest.json

Shard format (the challenge's): a header of 256 little-endian int32 words
[20240520 (magic), 1 (version), n_tokens, 0, ...], then n_tokens little-endian uint16 tokens.

The build is deterministic: the same inputs, options and sentencepiece version give
byte-identical outputs (the trainer runs single-threaded on a fixed sentence order, and
nothing time- or path-dependent is stored in the model or the manifest).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import re
import sys
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
    if name.endswith(".jsonl"):
        yield from _read_jsonl(path, text_field)
    elif name.endswith(".txt"):
        with _open_text(path) as f:
            text = f.read()
        blocks = text.split(txt_doc_sep) if txt_doc_sep else [text]
        yield from (block for block in blocks if block.strip())
    else:
        raise ValueError(f"{path}: unsupported input type; expected .txt, .jsonl, .txt.gz or .jsonl.gz")


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


class TokenizerError(RuntimeError):
    """The trained tokenizer does not meet the challenge's requirements."""


def train_tokenizer(
    docs: Iterable[str],
    vocab_size: int = 1024,
    *,
    max_sentence_length: int = DEFAULT_MAX_SENTENCE_LENGTH,
) -> bytes:
    """Train a SentencePiece BPE model on `docs` with the challenge's settings.

    Returns the serialized model. The model is produced in memory (no model_prefix), so no
    output path ends up inside it and two builds in different folders give identical bytes.
    Raises TokenizerError if the vocabulary came out smaller than asked (the corpus is too
    small for it) or if "▁" is not a piece of its own.
    """
    sentences = (s for doc in docs for s in trainer_sentences(doc, max_sentence_length))
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=sentences,
        model_writer=model,
        vocab_size=vocab_size,
        max_sentence_length=max_sentence_length,
        minloglevel=2,  # the trainer logs every step at INFO; keep warnings and errors
        **CHALLENGE_TRAINER_SETTINGS,
        **DETERMINISM_SETTINGS,
    )
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


def encode_documents(
    sp: spm.SentencePieceProcessor,
    docs: Sequence[str],
    *,
    threads: int = 1,
    batch_size: int = 256,
    desc: str = "encode",
    progress: bool = True,
) -> Iterator[np.ndarray]:
    """Yield [BOS] + pieces for each document, as uint16 arrays, in order (no EOS).

    Each document is encoded whole: unlike the trainer, the encoder has no length limit.
    """
    bos = sp.bos_id()
    with tqdm(total=len(docs), unit="doc", desc=desc, disable=not progress) as bar:
        for start in range(0, len(docs), batch_size):
            batch = list(docs[start : start + batch_size])
            for ids in sp.encode(batch, out_type=int, num_threads=threads):
                yield np.asarray([bos, *ids], dtype=np.uint16)
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


@dataclass(frozen=True)
class BuildOptions:
    """Everything that determines the output of a build, besides the input bytes."""

    prefix: str = "fineweb"
    vocab_size: int = 1024
    val_docs: int = 0  # validation = the first val_docs documents (after the optional shuffle)
    shard_tokens: int = 100_000_000  # the challenge's shard size
    shuffle_seed: int | None = None  # None keeps the input order
    text_field: str = "text"  # JSON field holding the text in .jsonl inputs
    txt_doc_sep: str | None = None  # None: a .txt file is one document
    max_sentence_length: int = DEFAULT_MAX_SENTENCE_LENGTH  # trainer limit, UTF-8 bytes

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


def _remove_old_shards(output_dir: Path, prefix: str) -> None:
    """Delete <prefix>_{val,train}_NNNNNN.bin left by an earlier build, which may have had
    more shards than this one; files with other names are left alone."""
    for split in ("val", "train"):
        for old in output_dir.glob(f"{prefix}_{split}_*.bin"):
            if re.fullmatch(rf"{re.escape(prefix)}_{split}_\d{{6}}\.bin", old.name):
                old.unlink()


def _write_split(
    sp: spm.SentencePieceProcessor, docs: Sequence[str], writer: ShardWriter, *, threads: int, progress: bool
) -> tuple[list[str], int, int]:
    """Encode one split into shards; return (shard names, token count, decoded text bytes)."""
    n_tokens = n_bytes = 0
    for tokens in encode_documents(sp, docs, threads=threads, desc=f"encode {writer.split}", progress=progress):
        writer.add(tokens)
        n_tokens += len(tokens)
        # UTF-8 size of the decoded text: the byte count tokenizer-agnostic bpb should reach.
        n_bytes += _utf8_len(sp.decode(tokens[1:].tolist()))
    return [path.name for path in writer.close()], n_tokens, n_bytes


def build_dataset(
    inputs: Sequence[str | Path],
    output_dir: str | Path,
    options: BuildOptions,
    *,
    encode_threads: int | None = None,
    progress: bool = True,
) -> dict:
    """Run the whole pipeline (module docstring) and return the manifest it wrote."""
    options.validate()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    threads = encode_threads or os.cpu_count() or 1

    docs = [
        doc
        for path in inputs
        for doc in read_documents(path, text_field=options.text_field, txt_doc_sep=options.txt_doc_sep)
    ]
    if options.shuffle_seed is not None:
        docs = shuffled(docs, options.shuffle_seed)
    if options.val_docs >= len(docs):
        raise ValueError(f"val_docs={options.val_docs} leaves no train documents ({len(docs)} documents read)")
    splits = {"val": docs[: options.val_docs], "train": docs[options.val_docs :]}

    model_proto = train_tokenizer(splits["train"], options.vocab_size,
                                  max_sentence_length=options.max_sentence_length)
    stem = f"{options.prefix}_{options.vocab_size}_bpe"
    model_path, vocab_path = output_dir / f"{stem}.model", output_dir / f"{stem}.vocab"
    save_tokenizer(model_proto, model_path, vocab_path)
    sp = spm.SentencePieceProcessor(model_proto=model_proto)

    _remove_old_shards(output_dir, options.prefix)
    counts: dict[str, int] = {}
    shard_names: dict[str, list[str]] = {}
    for split in ("val", "train"):
        shard_names[split], n_tokens, n_bytes = _write_split(
            sp, splits[split], ShardWriter(output_dir, options.prefix, split, options.shard_tokens),
            threads=threads, progress=progress,
        )
        counts.update({f"docs_{split}": len(splits[split]), f"tokens_{split}": n_tokens,
                       f"text_bytes_{split}": n_bytes})

    outputs = [model_path, vocab_path] + [output_dir / n for split in ("val", "train") for n in shard_names[split]]
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
        },
        "tokenizer": {
            "model": model_path.name,
            "vocab": vocab_path.name,
            "trainer_settings": {"vocab_size": options.vocab_size,
                                 "max_sentence_length": options.max_sentence_length,
                                 **CHALLENGE_TRAINER_SETTINGS, **DETERMINISM_SETTINGS},
            "trained_on": "train split only",
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
    return manifest


# ----------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------


def _unescape_separator(text: str) -> str:
    """Turn the escapes \\n, \\t and \\\\ typed on a command line into the characters."""
    return re.sub(r"\\([nt\\])", lambda m: {"n": "\n", "t": "\t", "\\": "\\"}[m.group(1)], text)


def build_parser() -> argparse.ArgumentParser:
    defaults = BuildOptions()
    parser = argparse.ArgumentParser(
        description="Train a SentencePiece BPE tokenizer with the Parameter Golf settings and write "
        "challenge-format shards (validation = the first --val-docs documents).",
    )
    parser.add_argument("inputs", nargs="+", type=Path,
                        help="corpus files: .jsonl / .jsonl.gz (one JSON object per line) or .txt / .txt.gz")
    parser.add_argument("--output-dir", type=Path, required=True,
                        help="folder for the tokenizer, shards and manifest")
    parser.add_argument("--val-docs", type=int, required=True,
                        help="number of leading documents (after --shuffle-seed) that form the validation split")
    parser.add_argument("--prefix", default=defaults.prefix,
                        help="file name prefix: <prefix>_train_000000.bin, <prefix>_<vocab>_bpe.model "
                        "(default: %(default)s)")
    parser.add_argument("--vocab-size", type=int, default=defaults.vocab_size,
                        help="tokenizer vocabulary size (default: %(default)s)")
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
    parser.add_argument("--encode-threads", type=int, default=None,
                        help="threads for encoding the shards; does not change the output (default: all CPUs)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    options = BuildOptions(
        prefix=args.prefix,
        vocab_size=args.vocab_size,
        val_docs=args.val_docs,
        shard_tokens=args.shard_tokens,
        shuffle_seed=args.shuffle_seed,
        text_field=args.text_field,
        txt_doc_sep=_unescape_separator(args.txt_doc_sep) if args.txt_doc_sep else None,
        max_sentence_length=args.max_sentence_length,
    )
    manifest = build_dataset(args.inputs, args.output_dir, options,
                             encode_threads=args.encode_threads, progress=not args.no_progress)
    for split in ("val", "train"):
        print(f"{split}: {manifest[f'docs_{split}']} docs, {manifest[f'tokens_{split}']} tokens, "
              f"{len(manifest['shards'][split])} shard(s)")
    print(f"tokenizer: {manifest['tokenizer']['model']} (vocab {manifest['vocab_size']})")
    print(f"manifest: {args.output_dir / 'manifest.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
