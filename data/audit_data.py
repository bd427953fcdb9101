"""Audit a challenge-format dataset: no validation document in the training shards, and the
whole validation split there to be scored.

Usage (from the repository root):

    python data/audit_data.py DATA_DIR [--near-dup] [--tokenizer MODEL] [--report FILE] [--no-write]
    python data/audit_data.py DATA_DIR --sample      # the fast sampled check train_gpt.py runs

What it does, streaming every shard once in chunks of --chunk-tokens (memory: the validation
split, one chunk and the hash tables; never a whole training set):

1. Splits the validation and the training token streams into documents at BOS, as the
   scorer and score-first TTT split them: a document is a BOS and the tokens up to the next
   BOS (documents may continue from one shard into the next).
2. Hashes every document's tokens (blake2b-128 of the tokens after its BOS, uint16
   little-endian) and reports every training document whose tokens equal a validation
   document's (a hash match is confirmed token for token), with the shard, token offset of its
   BOS and length in tokens of both copies.
3. With --near-dup, also reports training documents that hold most of a validation document
   without being equal to it (the same document minus a prefix, a suffix, or embedded in a
   longer one): see `NearDupIndex`.
4. Reports validation coverage: documents and scored target tokens (every token but the
   first), against the published counts when the data is a known export (see OFFICIAL),
   and, when the split has a byte sidecar and a tokenizer is known, the sidecar's bytes
   against the UTF-8 size of each decoded validation document.
5. Writes the result into DATA_DIR/manifest.json under "audit" (unless --no-write), with a
   digest of what was audited: every shard's name, token count and content hash. The
   training run (train_gpt.py) trusts that result when its shards still match the per-shard
   fingerprints recorded there, and logs the digest.

Exit status: 0 clean, 1 any shared document (or near-duplicate with --fail-on-near-dup), a coverage
count that disagrees with the published one, or a sidecar that disagrees with the text; 2 a
usage error (no such folder, no shards, a manifest that cannot be written).

`--sample` runs only the check train_gpt.py runs before training (every validation document
hashed, the documents inside a few fixed blocks of every training shard looked up), in
seconds on 80 shards; it proves nothing about the documents it does not read.
"""

from __future__ import annotations

import argparse
import fnmatch
import glob
import hashlib
import importlib.util
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from tqdm import tqdm

AUDIT_VERSION = 1
HEADER_BYTES = 256 * 4
TOKEN_DTYPE = np.dtype("<u2")

# The fingerprint and the sampled check read the same fixed blocks of every shard: the first
# and last BLOCK_TOKENS tokens and evenly spaced ones between (SAMPLE_BLOCKS in all), or the
# whole shard when it is no longer than that. The head
# of the first training shard is where a split that holds out too few documents puts them.
BLOCK_TOKENS = 65536
SAMPLE_BLOCKS = 8

# The published exports' validation splits: 50,000 documents, and the target count their
# records log (`val_tokens:`), which is the stream's length minus one cut down to a multiple
# of the records' eval sequence length (2048, 2560): the full stream holds that many targets
# plus a tail shorter than the cut. Counts: the 04-27 and 05-01 records' logs (CaseOps), the
# SP8192 and sp1024 records' logs.
OFFICIAL_DOCS = 50_000
OFFICIAL_TAIL = 2048  # the shortest cut the records used
OFFICIAL = {
    "caseops": {"dataset": "fineweb10B_sp8192_lossless_caps_caseops_v1_reserved", "targets": 47_851_520},
    "sp8192": {"dataset": "fineweb10B_sp8192", "targets": 40_540_160},
    "sp1024": {"dataset": "fineweb10B_sp1024", "targets": 62_021_632},
}

SHOW = 50  # shared documents printed on stdout; --report has them all
KEEP = 100  # shared documents kept in the manifest


class AuditUsageError(ValueError):
    """A bad argument or an unusable folder: one line, exit status 2."""


def _sibling(name: str):
    """Import data/<name>.py (data/ is a folder of scripts, not a package)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------------------
# Hashes, fingerprints, digests (train_gpt.py has the same definitions; a test keeps them equal)
# ----------------------------------------------------------------------------------------


def doc_hash(tokens: np.ndarray) -> bytes:
    """The hash of one document: blake2b-128 of its tokens after the BOS, uint16 little-endian."""
    return hashlib.blake2b(np.ascontiguousarray(tokens, dtype=TOKEN_DTYPE).tobytes(), digest_size=16).digest()


def docs_digest(hashes: Sequence[bytes]) -> str:
    """sha256 over the document hashes in order: the identity of a split's documents."""
    h = hashlib.sha256()
    for d in hashes:
        h.update(d)
    return h.hexdigest()


def shard_tokens(path: str | Path) -> int:
    """Token count of a shard after checking its header and size (names the file otherwise)."""
    return _sibling("build_sp_dataset").read_shard_header(path)


def sample_blocks(n: int) -> list[tuple[int, int]]:
    """(start, length) of the fixed sample blocks of an n-token shard: the whole shard when it is
    no longer than the blocks together, else SAMPLE_BLOCKS blocks of BLOCK_TOKENS (they never overlap)."""
    if n <= BLOCK_TOKENS * SAMPLE_BLOCKS:
        return [(0, n)]
    return [(round(k * (n - BLOCK_TOKENS) / (SAMPLE_BLOCKS - 1)), BLOCK_TOKENS) for k in range(SAMPLE_BLOCKS)]


def read_blocks(path: str | Path) -> tuple[str, list[tuple[int, np.ndarray]]]:
    """(fingerprint, [(offset, tokens)]) of a shard's sample blocks. The fingerprint is blake2b-128
    of the token count and the blocks' tokens: any rebuilt, re-tokenized, truncated or swapped
    shard changes it; an edit outside the blocks does not (the full audit's content hash does)."""
    n = shard_tokens(path)
    tokens = np.memmap(path, dtype=TOKEN_DTYPE, mode="r", offset=HEADER_BYTES, shape=(n,)) if n else np.zeros(0, TOKEN_DTYPE)
    h = hashlib.blake2b(n.to_bytes(8, "little"), digest_size=16)
    blocks = []
    for s, size in sample_blocks(n):
        block = np.array(tokens[s:s + size])
        h.update(block.tobytes())
        blocks.append((s, block))
    return h.hexdigest(), blocks


def audit_digest(shards: dict) -> str:
    """sha256 of what was audited: audit version, and each split's shards (name, tokens, content hash)."""
    ident = {"version": AUDIT_VERSION}
    for split in ("val", "train", "val_bytes"):
        ident[split] = [[s["name"], s["tokens"], s["blake2b"]] for s in shards.get(split, [])]
    return hashlib.sha256(json.dumps(ident, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


# ----------------------------------------------------------------------------------------
# Finding the shards
# ----------------------------------------------------------------------------------------


def sidecar_glob(val_glob: str, val_bytes_glob: str | None) -> str:
    """The sidecar glob as train_gpt.py derives it: VAL_BYTES_GLOB, else VAL_GLOB with _val_ -> _val_bytes_."""
    if val_bytes_glob:
        return val_bytes_glob
    return val_glob.replace("_val_", "_val_bytes_", 1) if "_val_" in val_glob else ""


def find_shards(data_dir: Path, train_glob: str, val_glob: str, val_bytes_glob: str | None) -> dict[str, list[Path]]:
    """The val, train and sidecar shards as train_gpt.py selects them (sorted; sidecar names are
    dropped from the val glob)."""
    if not data_dir.is_dir():
        raise AuditUsageError(f"{data_dir}: not a directory")
    side = sidecar_glob(val_glob, val_bytes_glob)
    out = {}
    for split, pattern in (("val", val_glob), ("train", train_glob), ("val_bytes", side)):
        paths = [Path(p) for p in sorted(glob.glob(os.path.join(data_dir, pattern)))] if pattern else []
        if split == "val" and side:
            paths = [p for p in paths if not fnmatch.fnmatch(p.name, side)]
        out[split] = paths
    for split, pattern in (("val", val_glob), ("train", train_glob)):
        if not out[split]:
            raise AuditUsageError(f"no {split} shards match {data_dir / pattern} (set --{split}-glob)")
    overlap = {p.resolve() for p in out["val"]} & {p.resolve() for p in out["train"]}
    if overlap:
        raise AuditUsageError(f"{sorted(overlap)[0]} matches both --val-glob and --train-glob")
    return out


# ----------------------------------------------------------------------------------------
# Streaming documents
# ----------------------------------------------------------------------------------------


@dataclass
class Chunk:
    """Whole documents from a token stream: tokens[starts[i]:ends[i]] is one document (its BOS
    first), located at shard `shard[i]`, token offset `offset[i]`. `lead` tokens before the
    first BOS of the stream (a stream that does not start with BOS) are not a document."""
    tokens: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    shard: np.ndarray
    offset: np.ndarray
    lead: int = 0


class ShardStream:
    """Reads shards in order, in chunks of about `chunk_tokens`, and yields Chunks of whole
    documents (a document's tail in the next shard is carried over), hashing each shard's
    content on the way (`info`). Memory: one chunk plus the longest document."""

    def __init__(self, paths: Sequence[Path], bos_id: int, chunk_tokens: int, bar: tqdm | None = None):
        self.paths, self.bos_id, self.chunk_tokens, self.bar = list(paths), bos_id, chunk_tokens, bar
        self.info: list[dict] = []

    def __iter__(self) -> Iterator[Chunk]:
        carry, segs = np.zeros(0, TOKEN_DTYPE), []  # segs: (position in the buffer, shard, offset in the shard)
        seen_bos, lead = False, 0
        sizes = [shard_tokens(p) for p in self.paths]
        for si, (path, n) in enumerate(zip(self.paths, sizes)):
            content = hashlib.blake2b(digest_size=16)
            with open(path, "rb") as f:
                f.seek(HEADER_BYTES)
                pos = 0
                while pos < n:
                    take = min(self.chunk_tokens, n - pos)
                    part = np.fromfile(f, dtype=TOKEN_DTYPE, count=take)
                    if len(part) != take:
                        raise ValueError(f"{path}: short read at token {pos} (did the file change?)")
                    content.update(part.tobytes())
                    buf, segs = np.concatenate([carry, part]), segs + [(len(carry), si, pos)]
                    pos += take
                    last = pos >= n and not any(sizes[si + 1:])
                    bos = np.flatnonzero(buf == self.bos_id)
                    if not seen_bos:  # tokens before the stream's first BOS belong to no document
                        skip = int(bos[0]) if len(bos) else len(buf)
                        lead, seen_bos = lead + skip, bool(len(bos))
                        buf, segs, bos = buf[skip:], _drop(segs, skip), bos - skip
                    cut = len(buf) if last else (int(bos[-1]) if len(bos) else 0)
                    starts = bos[bos < cut] if not last else bos
                    if len(starts) or lead:
                        ends = np.append(starts[1:], cut) if len(starts) else starts
                        seg_pos = np.array([x[0] for x in segs], np.int64)
                        j = np.searchsorted(seg_pos, starts, side="right") - 1
                        shard = np.array([segs[i][1] for i in j.tolist()], np.int64)
                        offset = np.array([segs[i][2] - segs[i][0] for i in j.tolist()], np.int64) + starts
                        yield Chunk(buf[:cut], starts, ends, shard, offset, lead)
                        lead = 0
                    carry, segs = buf[cut:].copy(), _drop(segs, cut)
                    if self.bar is not None:
                        self.bar.update(take)
            self.info.append({"name": path.name, "tokens": n, "blake2b": content.hexdigest()})


def _drop(segs: list, k: int) -> list:
    """The segments of a buffer after its first k tokens are removed."""
    out = []
    for i, (p, s, o) in enumerate(segs):
        if i + 1 < len(segs) and segs[i + 1][0] <= k:
            continue
        out.append((p - k, s, o) if p >= k else (0, s, o + k - p))
    return out


# ----------------------------------------------------------------------------------------
# Near-duplicates: content-defined anchors
# ----------------------------------------------------------------------------------------

_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_BASE = np.uint64(0x9E3779B97F4A7C15 | 1)
_BASE_INV = np.uint64(pow(int(_BASE), -1, 2**64))


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer, so that the low bits (the anchor choice) depend on every token."""
    z = z ^ (z >> np.uint64(30))
    z = z * _M1
    z = z ^ (z >> np.uint64(27))
    z = z * _M2
    return z ^ (z >> np.uint64(31))


def window_anchors(tokens: np.ndarray, bos_id: int, window: int, every: int) -> tuple[np.ndarray, np.ndarray]:
    """(positions, hashes) of the anchor windows of a token array: windows of `window` tokens
    without a BOS whose mixed polynomial hash is 0 modulo `every`. The choice depends only on
    the window's tokens, never on where the document starts, so a copy of a document minus a
    prefix keeps every anchor of the part it kept."""
    n = len(tokens)
    if n < window:
        return np.zeros(0, np.int64), np.zeros(0, np.uint64)
    with np.errstate(over="ignore"):
        x = tokens.astype(np.uint64) + np.uint64(1)
        powers = np.full(n, _BASE, np.uint64)
        powers[0] = 1
        powers = np.cumprod(powers, dtype=np.uint64)
        inv = np.full(n, _BASE_INV, np.uint64)
        inv[0] = 1
        inv = np.cumprod(inv, dtype=np.uint64)
        s = np.zeros(n + 1, np.uint64)
        np.cumsum(x * powers, dtype=np.uint64, out=s[1:])
        h = _mix((s[window:] - s[:-window]) * inv[: n - window + 1])
    bos = np.zeros(n + 1, np.int64)
    np.cumsum(tokens == bos_id, out=bos[1:])
    ok = (bos[window:] == bos[:-window]) & (h % np.uint64(every) == 0)
    pos = np.flatnonzero(ok)
    return pos, h[pos]


@dataclass
class NearDupIndex:
    """Anchors of the validation documents. An anchor hash that occurs in two or more
    validation documents (shared boilerplate) is dropped, so every kept anchor names one
    document. A training document is a near-duplicate of validation document k when it holds
    at least `fraction` of k's distinct anchors (and k has at least `min_anchors`)."""
    window: int = 32
    every: int = 8
    fraction: float = 0.5
    min_anchors: int = 4
    _hashes: list = field(default_factory=list)
    _docs: list = field(default_factory=list)

    def add_val(self, chunk: Chunk, first_doc: int, bos_id: int) -> None:
        pos, h = window_anchors(chunk.tokens, bos_id, self.window, self.every)
        self._hashes.append(h)
        self._docs.append(first_doc + np.searchsorted(chunk.starts, pos, side="right") - 1)

    def finish(self, n_docs: int) -> None:
        h = np.concatenate(self._hashes) if self._hashes else np.zeros(0, np.uint64)
        d = np.concatenate(self._docs) if self._docs else np.zeros(0, np.int64)
        pairs = np.unique(np.stack([h, d.astype(np.uint64)], 1), axis=0) if len(h) else np.zeros((0, 2), np.uint64)
        uh, first, count = np.unique(pairs[:, 0], return_index=True, return_counts=True)
        keep = count == 1
        self.hashes, self.docs = uh[keep], pairs[first[keep], 1].astype(np.int64)
        self.anchors = np.bincount(self.docs, minlength=n_docs)
        self._hashes, self._docs = [], []

    def match(self, chunk: Chunk, bos_id: int) -> list[tuple[int, int, int]]:
        """[(chunk document index, validation document, shared anchors)] over the threshold."""
        if not len(self.hashes):
            return []
        pos, h = window_anchors(chunk.tokens, bos_id, self.window, self.every)
        idx = np.minimum(np.searchsorted(self.hashes, h), len(self.hashes) - 1)
        hit = self.hashes[idx] == h
        if not hit.any():
            return []
        tdoc = np.searchsorted(chunk.starts, pos[hit], side="right") - 1
        pairs = np.unique(np.stack([tdoc, idx[hit]], 1), axis=0)  # distinct anchors per training document
        vdoc = self.docs[pairs[:, 1]]
        key, count = np.unique(np.stack([pairs[:, 0], vdoc], 1), axis=0, return_counts=True)
        need = np.maximum(self.min_anchors, np.ceil(self.fraction * self.anchors[key[:, 1]]))
        ok = (count >= need) & (self.anchors[key[:, 1]] >= self.min_anchors)
        return [(int(t), int(v), int(c)) for (t, v), c in zip(key[ok], count[ok])]


# ----------------------------------------------------------------------------------------
# The audit
# ----------------------------------------------------------------------------------------


@dataclass
class AuditOptions:
    train_glob: str = "fineweb_train_*.bin"
    val_glob: str = "fineweb_val_*.bin"
    val_bytes_glob: str | None = None
    bos_id: int | None = None  # default: the tokenizer's, else the manifest's, else 1
    tokenizer: Path | None = None  # default: the one DATA_DIR/manifest.json names, if present
    official: str = "auto"  # auto | caseops | sp8192 | sp1024 | none
    near_dup: bool = False
    window: int = 32
    anchor_every: int = 8
    near_dup_fraction: float = 0.5
    fail_on_near_dup: bool = False  # near-duplicates are reported; with this they also fail the audit
    chunk_tokens: int = 1 << 22


def _read_manifest(data_dir: Path) -> dict:
    path = data_dir / "manifest.json"
    if not path.is_file():
        return {}
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise AuditUsageError(f"{path}: unreadable ({exc})") from exc
    if not isinstance(manifest, dict):
        raise AuditUsageError(f"{path}: expected a JSON object")
    return manifest


def _official(data_dir: Path, choice: str, manifest: dict) -> tuple[str | None, dict]:
    """Which published split the data claims to be: (name or None, {docs, targets})."""
    if choice == "none":
        return None, {}
    if choice == "auto":
        name = data_dir.resolve().name
        for key, entry in OFFICIAL.items():
            if entry["dataset"] == name:
                return key, {"docs": OFFICIAL_DOCS, "targets": entry["targets"]}
        if manifest.get("options", {}).get("val_docs") == OFFICIAL_DOCS:  # a --official-split build
            return "official-split build", {"docs": OFFICIAL_DOCS}
        return None, {}
    return choice, {"docs": OFFICIAL_DOCS, "targets": OFFICIAL[choice]["targets"]}


def export_tokenizer(data_dir: Path) -> Path | None:
    """The tokenizer a downloaded export's manifest names for this dataset folder
    (data/datasets/<name>: data/manifest.json or data/manifests/*/manifest.json, the file under
    data/tokenizers/), if it is there."""
    root = data_dir.resolve().parent.parent
    for path in [root / "manifest.json", *sorted(root.glob("manifests/*/manifest.json"))]:
        try:
            export = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        except (OSError, ValueError):
            continue
        entry = next((d for d in export.get("datasets", []) if d.get("name") == data_dir.resolve().name), None)
        tok = next((t for t in export.get("tokenizers", []) if entry and t.get("name") == entry.get("tokenizer_name")), {})
        name = Path(tok.get("model_path") or "").name
        if name and (root / "tokenizers" / name).is_file():
            return root / "tokenizers" / name
    return None


def _tokenizer(data_dir: Path, opts: AuditOptions, manifest: dict):
    path = opts.tokenizer
    if path is None:
        name = manifest.get("tokenizer", {}).get("model") if isinstance(manifest.get("tokenizer"), dict) else None
        path = data_dir / name if name and (data_dir / name).is_file() else export_tokenizer(data_dir)
    if path is None:
        return None, None
    import sentencepiece as spm
    if not Path(path).is_file():
        raise AuditUsageError(f"--tokenizer {path}: no such file")
    try:
        return spm.SentencePieceProcessor(model_file=str(path)), Path(path)
    except (RuntimeError, OSError) as exc:
        raise AuditUsageError(f"--tokenizer {path}: not a SentencePiece model ({exc})") from exc


def _where(paths: list[Path], shard: int, offset: int) -> str:
    return f"{paths[shard].name}@{offset}"


def run_audit(data_dir: str | Path, opts: AuditOptions = AuditOptions(), *, progress: bool = True,
              report: Path | None = None, log=print) -> dict:
    """Audit DATA_DIR (module docstring); return the result that goes into the manifest."""
    data_dir = Path(data_dir)
    t0 = time.perf_counter()
    manifest = _read_manifest(data_dir)
    paths = find_shards(data_dir, opts.train_glob, opts.val_glob, opts.val_bytes_glob)
    sp, tok_path = _tokenizer(data_dir, opts, manifest)
    bos_id = opts.bos_id if opts.bos_id is not None else (sp.bos_id() if sp is not None else int(manifest.get("bos_id", 1)))
    total = {split: sum(shard_tokens(p) for p in paths[split]) for split in ("val", "train")}
    near = NearDupIndex(opts.window, opts.anchor_every, opts.near_dup_fraction) if opts.near_dup else None
    problems: list[str] = []

    # ---- validation: every document's hash, location and tokens
    bar = tqdm(total=total["val"], unit="tok", unit_scale=True, desc="val", disable=not progress, mininterval=2)
    val_stream = ShardStream(paths["val"], bos_id, opts.chunk_tokens, bar)
    parts, hashes, v_shard, v_off, v_len = [], [], [], [], []
    base, lead = 0, 0
    for chunk in val_stream:
        lead += chunk.lead
        if near is not None:
            near.add_val(chunk, len(hashes), bos_id)
        for s, e in zip(chunk.starts.tolist(), chunk.ends.tolist()):
            hashes.append(doc_hash(chunk.tokens[s + 1:e]))
        v_shard.append(chunk.shard)
        v_off.append(chunk.offset)
        v_len.append(chunk.ends - chunk.starts)
        v_start = chunk.starts + base
        parts.append((chunk.tokens, v_start))
        base += len(chunk.tokens)
    bar.close()
    t_val = time.perf_counter() - t0
    val_tokens = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, TOKEN_DTYPE)
    val_starts = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.int64)
    v_shard, v_off, v_len = (np.concatenate(a) if a else np.zeros(0, np.int64) for a in (v_shard, v_off, v_len))
    n_val = len(hashes)
    index: dict[bytes, int] = {}
    repeated = empty = 0
    for k, h in enumerate(hashes):
        if v_len[k] <= 1:
            empty += 1
        elif h in index:
            repeated += 1  # the same document twice in validation: looked up once
        else:
            index[h] = k
    val_lengths = np.unique(v_len[v_len > 1] - 1)
    if near is not None:
        near.finish(n_val)
    if lead:
        problems.append(f"the validation stream starts with {lead} tokens before its first BOS (a cut document)")

    # ---- training: look every document up
    bar = tqdm(total=total["train"], unit="tok", unit_scale=True, desc="train", disable=not progress, mininterval=2)
    train_stream = ShardStream(paths["train"], bos_id, opts.chunk_tokens, bar)
    shared, near_found = [], []
    n_train = hashed = 0
    for chunk in train_stream:
        lengths = chunk.ends - chunk.starts - 1
        n_train += len(lengths)
        cand = np.flatnonzero((lengths > 0) & np.isin(lengths, val_lengths))
        hashed += len(cand)
        view = memoryview(chunk.tokens).cast("B")
        exact = set()
        for i in cand.tolist():
            s, e = int(chunk.starts[i]), int(chunk.ends[i])
            k = index.get(hashlib.blake2b(view[2 * (s + 1):2 * e], digest_size=16).digest())
            if k is None:
                continue
            vs = int(val_starts[k])
            if not np.array_equal(chunk.tokens[s + 1:e], val_tokens[vs + 1:vs + int(v_len[k])]):
                continue  # a hash collision, not a copy
            exact.add((i, k))
            shared.append({"val_doc": k, "val": _where(paths['val'], int(v_shard[k]), int(v_off[k])),
                           "train_shard": int(chunk.shard[i]), "train_offset": int(chunk.offset[i]),
                           "tokens": e - s})
        if near is not None:
            for i, k, count in near.match(chunk, bos_id):
                if (i, k) in exact:
                    continue
                near_found.append({"val_doc": k, "val": _where(paths['val'], int(v_shard[k]), int(v_off[k])),
                                   "val_tokens": int(v_len[k]), "train_shard": int(chunk.shard[i]),
                                   "train_offset": int(chunk.offset[i]), "tokens": int(chunk.ends[i] - chunk.starts[i]),
                                   "anchors": f"{count}/{int(near.anchors[k])}"})
    bar.close()
    t_train = time.perf_counter() - t0 - t_val
    for entry in shared + near_found:
        entry["train"] = _where(paths["train"], entry.pop("train_shard"), entry.pop("train_offset"))
    if shared:
        first = shared[0]
        problems.append(f"{len(shared)} training documents are copies of {len({s['val_doc'] for s in shared})} "
                        f"validation documents (first: validation document {first['val_doc']} at {first['val']} = "
                        f"training {first['train']}, {first['tokens']} tokens)")
    if near_found and opts.fail_on_near_dup:
        problems.append(f"{len(near_found)} training documents hold most of {len({s['val_doc'] for s in near_found})} "
                        "validation documents (near-duplicates)")

    # ---- coverage
    targets = max(len(val_tokens) + lead - 1, 0)
    claim, expected = _official(data_dir, opts.official, manifest)
    coverage = {"docs": n_val, "targets": targets, "official": claim, **{f"expected_{k}": v for k, v in expected.items()}}
    if "docs" in expected and n_val != expected["docs"]:
        problems.append(f"the validation split has {n_val:,} documents, the official split {expected['docs']:,}")
    if "targets" in expected and not 0 <= targets - expected["targets"] < OFFICIAL_TAIL:
        problems.append(f"the validation split has {targets:,} target tokens; the published {claim} split has "
                        f"{expected['targets']:,} (+ a tail under {OFFICIAL_TAIL})")
    want_digest = manifest.get("val_docs_digest")
    digest = docs_digest(hashes)
    if want_digest and want_digest != digest:
        problems.append(f"the validation documents' digest {digest[:16]}... differs from the one the build wrote "
                        f"into manifest.json ({want_digest[:16]}...)")

    # ---- byte sidecar against the decoded text
    side = None
    if paths["val_bytes"]:
        side = _check_sidecar(paths["val_bytes"], val_tokens, val_starts, v_len, bos_id, sp, tok_path, lead, problems)

    shards = {"val": val_stream.info, "train": train_stream.info,
              "val_bytes": [{"name": p.name, "tokens": shard_tokens(p), "blake2b": _content_hash(p)}
                            for p in paths["val_bytes"]]}
    for split, infos in shards.items():
        for info, path in zip(infos, paths[split]):
            info["fingerprint"] = read_blocks(path)[0]
    result = {
        "tool": "data/audit_data.py",
        "version": AUDIT_VERSION,
        "result": "FAIL" if problems else "PASS",
        # training documents that are (or, with --fail-on-near-dup, nearly are) validation documents:
        # what makes train_gpt.py refuse the data; other problems it logs
        "overlap": len(shared) + (len(near_found) if opts.fail_on_near_dup else 0),
        "digest": audit_digest(shards),
        "bos_id": bos_id,
        "globs": {"train": opts.train_glob, "val": opts.val_glob,
                  "val_bytes": sidecar_glob(opts.val_glob, opts.val_bytes_glob)},
        "val": {"docs": n_val, "tokens": len(val_tokens) + lead, "targets": targets, "empty_docs": empty,
                "repeated_docs": repeated, "docs_digest": digest},
        "train": {"docs": n_train, "tokens": total["train"], "hashed_docs": hashed},
        "shared_docs": {"count": len(shared), "val_docs": len({s["val_doc"] for s in shared}), "first": shared[:KEEP]},
        "near_duplicates": None if near is None else {
            "window": near.window, "anchor_every": near.every, "fraction": near.fraction,
            "min_anchors": near.min_anchors, "fail": opts.fail_on_near_dup, "count": len(near_found),
            "first": near_found[:KEEP]},
        "coverage": coverage,
        "sidecar": side,
        "problems": problems,
        "shards": shards,
    }
    seconds = (time.perf_counter() - t0, t_val, t_train)
    _print_report(result, shared, near_found, seconds, log)
    if report is not None:
        _write_report(report, shared, near_found)
    return result


def _content_hash(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        f.seek(HEADER_BYTES)
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _check_sidecar(paths, val_tokens, val_starts, v_len, bos_id, sp, tok_path, lead, problems) -> dict:
    counts = np.concatenate([np.fromfile(p, dtype=TOKEN_DTYPE, count=shard_tokens(p), offset=HEADER_BYTES)
                             for p in paths]).astype(np.int64)
    out = {"files": len(paths), "entries": len(counts), "total": int(counts.sum())}
    if len(counts) != len(val_tokens) + lead:
        problems.append(f"the byte sidecar has {len(counts):,} entries, the validation split {len(val_tokens) + lead:,} "
                        "tokens")
        return out
    counts = counts[lead:]
    bos_bytes = int((counts[val_tokens == bos_id] != 0).sum())
    if bos_bytes:
        problems.append(f"the byte sidecar gives {bos_bytes} BOS positions a nonzero byte count")
    if sp is None:
        out["decoded_text_bytes"] = None
        out["note"] = "no tokenizer (pass --tokenizer): sidecar not compared with the decoded text"
        return out
    bsd = _sibling("build_sp_dataset")
    caseops = [sp.id_to_piece(i) for i in range(4, 8)] == list(bsd.CASEOPS_OPERATORS)
    per_doc = np.add.reduceat(counts, val_starts) if len(val_starts) else np.zeros(0, np.int64)
    decoded, bad = 0, []
    for k, s in enumerate(val_starts.tolist()):
        text = sp.decode(val_tokens[s + 1:s + int(v_len[k])].tolist())
        n = len((bsd.caseops_decode(text) if caseops else text).encode("utf-8"))
        decoded += n
        if n != per_doc[k]:
            bad.append(k)
    out.update({"tokenizer": tok_path.name, "caseops": caseops, "decoded_text_bytes": decoded,
                "mismatched_docs": len(bad), "first_mismatched_docs": bad[:20]})
    if bad:
        problems.append(f"the byte sidecar disagrees with the decoded text in {len(bad)} validation documents "
                        f"(sidecar {out['total']:,} bytes, text {decoded:,}; first: document {bad[0]})")
    return out


def _print_report(r: dict, shared: list, near_found: list, seconds: tuple, log) -> None:
    v, t, c = r["val"], r["train"], r["coverage"]
    log(f"val: {len(r['shards']['val'])} shard(s), {v['tokens']:,} tokens, {v['docs']:,} documents "
        f"({v['empty_docs']} empty, {v['repeated_docs']} repeated within val), docs_digest {v['docs_digest']}")
    log(f"train: {len(r['shards']['train'])} shard(s), {t['tokens']:,} tokens, {t['docs']:,} documents "
        f"({t['hashed_docs']:,} of a validation document's length, hashed)")
    for s in shared[:SHOW]:
        log(f"shared: val document {s['val_doc']} ({s['val']}) = train {s['train']}, {s['tokens']} tokens")
    for s in near_found[:SHOW]:
        log(f"near-duplicate: val document {s['val_doc']} ({s['val']}, {s['val_tokens']} tokens) in train "
            f"{s['train']} ({s['tokens']} tokens), anchors {s['anchors']}")
    if len(shared) > SHOW or len(near_found) > SHOW:
        log(f"... {max(len(shared) - SHOW, 0)} more shared, {max(len(near_found) - SHOW, 0)} more near-duplicates "
            "(--report FILE lists all)")
    log(f"shared_docs: {len(shared)}" + ("" if r["near_duplicates"] is None else f" near_duplicates: {len(near_found)}"
                                        + ("" if r["near_duplicates"]["fail"] else " (reported; --fail-on-near-dup fails on them)")))
    expect = ""
    if c["official"]:
        expect = f" (official {c['official']}: {c.get('expected_docs', '?'):,} documents" + (
            f", {c['expected_targets']:,} targets + a tail under {OFFICIAL_TAIL}" if "expected_targets" in c else "") + ")"
    log(f"coverage: {c['docs']:,} documents, {c['targets']:,} target tokens scored{expect}")
    if r["sidecar"] is not None:
        s = r["sidecar"]
        log(f"sidecar: {s['files']} file(s), {s['entries']:,} entries, {s['total']:,} bytes; decoded text "
            + (f"{s['decoded_text_bytes']:,} bytes, {s['mismatched_docs']} documents differ"
               if s.get("decoded_text_bytes") is not None else f"not compared ({s.get('note', 'length mismatch')})"))
    for p in r["problems"]:
        log(f"problem: {p}")
    log(f"audit: {r['result']} digest:{r['digest']} time:{seconds[0]:.1f}s (validation {seconds[1]:.1f}s, "
        f"training {seconds[2]:.1f}s)")


def _write_report(path: Path, shared: list, near_found: list) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write("kind\tval_doc\tval_location\ttrain_location\ttrain_tokens\tanchors\n")
        for s in shared:
            f.write(f"shared\t{s['val_doc']}\t{s['val']}\t{s['train']}\t{s['tokens']}\t\n")
        for s in near_found:
            f.write(f"near\t{s['val_doc']}\t{s['val']}\t{s['train']}\t{s['tokens']}\t{s['anchors']}\n")


def write_into_manifest(data_dir: Path, result: dict) -> Path:
    """Put `result` under "audit" in DATA_DIR/manifest.json (created if absent), atomically."""
    path = Path(data_dir) / "manifest.json"
    manifest = _read_manifest(Path(data_dir))
    manifest["audit"] = result
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise AuditUsageError(f"cannot write {path} ({exc.strerror or exc}); use --no-write to only report") from exc
    return path


# ----------------------------------------------------------------------------------------
# The sampled check (what train_gpt.py runs before training)
# ----------------------------------------------------------------------------------------


def split_docs(tokens: np.ndarray, bos_id: int, complete_tail: bool) -> list[tuple[int, int]]:
    """(start, end) of the documents in a token array, from each BOS to the next; the span after
    the last BOS counts only when `complete_tail` (the end of a stream, not of a sample block)."""
    starts = np.flatnonzero(tokens == bos_id).tolist()
    ends = starts[1:] + ([len(tokens)] if complete_tail else [])
    return list(zip(starts, ends))


def sampled_check(val_paths: Sequence[Path], train_paths: Sequence[Path], bos_id: int) -> dict:
    """Every validation document hashed; the whole documents inside every training shard's
    sample blocks looked up. Returns the fingerprints of all shards and what was found."""
    val = np.concatenate([np.fromfile(p, dtype=TOKEN_DTYPE, count=shard_tokens(p), offset=HEADER_BYTES)
                          for p in val_paths])
    index = {}
    for k, (s, e) in enumerate(split_docs(val, bos_id, True)):
        if e - s > 1:
            index.setdefault(doc_hash(val[s + 1:e]), k)
    found, docs, prints = [], 0, {}
    for p in val_paths:
        prints[p.name] = read_blocks(p)[0]
    for p in train_paths:
        prints[p.name], blocks = read_blocks(p)
        for off, block in blocks:
            for s, e in split_docs(block, bos_id, False):
                docs += 1
                k = index.get(doc_hash(block[s + 1:e])) if e - s > 1 else None
                if k is not None:
                    found.append({"val_doc": k, "train": f"{p.name}@{off + s}", "tokens": e - s})
    return {"val_docs": len(split_docs(val, bos_id, True)), "train_docs_sampled": docs, "shared": found,
            "fingerprints": prints}


# ----------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    d = AuditOptions()
    p = argparse.ArgumentParser(
        description="Prove that no validation document is in the training shards and that the whole validation "
                    "split is there: hash every document of both splits (split at BOS), report every shared one "
                    "with its shard, offset and length, report validation coverage and the byte sidecar against "
                    "the decoded text, and write the result with a digest into DATA_DIR/manifest.json. "
                    "Exit 0 clean, 1 overlap or coverage problem, 2 usage error.")
    p.add_argument("data_dir", type=Path, help="the folder of the shards (train_gpt.py's DATA_PATH)")
    p.add_argument("--train-glob", default=d.train_glob, help="training shards, as TRAIN_GLOB (default: %(default)s)")
    p.add_argument("--val-glob", default=d.val_glob, help="validation shards, as VAL_GLOB (default: %(default)s)")
    p.add_argument("--val-bytes-glob", default=None,
                   help="the val byte sidecar, as VAL_BYTES_GLOB (default: --val-glob with _val_ -> _val_bytes_)")
    p.add_argument("--tokenizer", type=Path, default=None,
                   help="SentencePiece model, to compare the sidecar with the decoded text (default: the model "
                        "DATA_DIR/manifest.json names, else the one a downloaded export's manifest names)")
    p.add_argument("--bos-id", type=int, default=None,
                   help="the document separator (default: the tokenizer's, else the manifest's bos_id, else 1)")
    p.add_argument("--official", choices=["auto", *OFFICIAL, "none"], default="auto",
                   help="compare coverage with this published split (default auto: by the folder's name, "
                        "fineweb10B_sp8192 etc., or 50,000 documents for a --official-split build)")
    p.add_argument("--near-dup", action="store_true",
                   help="also report training documents that hold most of a validation document (the same text "
                        "minus a prefix, or inside a longer document), by content-defined token windows")
    p.add_argument("--window", type=int, default=d.window, help="near-dup window in tokens (default: %(default)s)")
    p.add_argument("--anchor-every", type=int, default=d.anchor_every,
                   help="near-dup: keep about one window in this many as an anchor (default: %(default)s)")
    p.add_argument("--near-dup-fraction", type=float, default=d.near_dup_fraction,
                   help="near-dup: share of a validation document's anchors a training document must hold "
                        "(default: %(default)s)")
    p.add_argument("--fail-on-near-dup", action="store_true",
                   help="with --near-dup: near-duplicates also fail the audit (default: reported only; natural "
                        "corpora share quoted text and boilerplate)")
    p.add_argument("--chunk-tokens", type=int, default=d.chunk_tokens,
                   help="tokens read at a time; bounds memory (default: %(default)s)")
    p.add_argument("--report", type=Path, default=None, help="write every shared document and near-duplicate here (TSV)")
    p.add_argument("--no-write", action="store_true", help="do not write the result into DATA_DIR/manifest.json")
    p.add_argument("--json", type=Path, default=None, help="also write the result as JSON here")
    p.add_argument("--sample", action="store_true",
                   help="only the fast sampled check train_gpt.py runs before training (nothing written)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.fail_on_near_dup and not args.near_dup:
            raise AuditUsageError("--fail-on-near-dup needs --near-dup")
        if args.window < 2 or args.anchor_every < 1 or not 0 < args.near_dup_fraction <= 1 or args.chunk_tokens < 1:
            raise AuditUsageError("--window >= 2, --anchor-every >= 1, 0 < --near-dup-fraction <= 1, --chunk-tokens >= 1")
        if args.sample:
            paths = find_shards(args.data_dir, args.train_glob, args.val_glob, args.val_bytes_glob)
            bos = args.bos_id if args.bos_id is not None else int(_read_manifest(args.data_dir).get("bos_id", 1))
            t0 = time.perf_counter()
            r = sampled_check(paths["val"], paths["train"], bos)
            for s in r["shared"][:SHOW]:
                print(f"shared: val document {s['val_doc']} = train {s['train']}, {s['tokens']} tokens")
            print(f"sampled: val_docs:{r['val_docs']} train_shards:{len(paths['train'])} "
                  f"train_docs_sampled:{r['train_docs_sampled']} shared:{len(r['shared'])} "
                  f"time:{time.perf_counter() - t0:.2f}s")
            return 1 if r["shared"] else 0
        opts = AuditOptions(train_glob=args.train_glob, val_glob=args.val_glob, val_bytes_glob=args.val_bytes_glob,
                            bos_id=args.bos_id, tokenizer=args.tokenizer, official=args.official,
                            near_dup=args.near_dup, window=args.window, anchor_every=args.anchor_every,
                            near_dup_fraction=args.near_dup_fraction, fail_on_near_dup=args.fail_on_near_dup,
                            chunk_tokens=args.chunk_tokens)
        if not args.no_write and not os.access(args.data_dir, os.W_OK) and args.data_dir.is_dir():
            raise AuditUsageError(f"{args.data_dir} is not writable; use --no-write to only report")
        result = run_audit(args.data_dir, opts, progress=not args.no_progress, report=args.report)
        if args.json is not None:
            args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        if not args.no_write:
            print(f"written: {write_into_manifest(args.data_dir, result)} (audit)")
    except (AuditUsageError, ValueError, OSError) as exc:
        print(f"audit_data.py: error: {exc}", file=sys.stderr)
        return 2
    return 0 if result["result"] == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
