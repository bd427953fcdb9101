"""Download the Parameter Golf challenge's published FineWeb shards and tokenizer.

Usage (from the repository root):

    python data/cached_challenge_fineweb.py --variant sp1024 --train-shards 80
    python data/cached_challenge_fineweb.py --repo-id kevclark/parameter-golf --variant sp8192
    python data/cached_challenge_fineweb.py --repo-id romeerp/parameter-golf-caseops-v1 \
        --variant sp8192_lossless_caps_caseops_v1_reserved

Files come from a Hugging Face dataset repo (default: the challenge's `willdepueoai/parameter-golf`,
everything under its `datasets/` folder) and land where the training script expects them:

    data/manifest.json                                   the default export's manifest
    data/manifests/<owner>__<name>/manifest.json         the manifest of any other repo
    data/datasets/fineweb10B_sp1024/fineweb_val_000000.bin ...   the full validation split
    data/datasets/fineweb10B_<variant>/fineweb_val_bytes_000000.bin ...  the val byte sidecar,
                                                         for variants that have one (CaseOps)
    data/datasets/fineweb10B_sp1024/fineweb_train_000000.bin ... the first N train shards
    data/tokenizers/fineweb_1024_bpe.model / .vocab      the tokenizer

The download is manifest-driven: the manifest lists, per dataset, how many train and val
shards exist (`stats.files_train`, `stats.files_val`), whether val byte-sidecar shards exist
(`val_bytes_glob`, or `stats.files_val_bytes`), and which tokenizer goes with it; its
tokenizer entry names the tokenizer files. Every variant a repo's manifest lists can be
fetched; each repo's manifest is cached separately. The train shards are a fixed shuffled order, so
the first N shards are the same prefix every run and for every participant.

A file that is already present and complete is not downloaded again. The manifest records
no per-file sizes, so "complete" means: a shard's size matches the token count in its own
header (which catches truncated files), and any other file is non-empty. Downloads are
written under a temporary name and renamed, so an interrupted run leaves no partial file
under the final name.

The environment variables MATCHED_FINEWEB_REPO_ID and MATCHED_FINEWEB_REMOTE_ROOT_PREFIX,
which the official downloader reads, set the defaults of --repo-id and --remote-root.

For tests, all network access goes through one function, `download_file`, which `main`
and `fetch_files` take as a parameter; everything else is pure path and manifest logic.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Sequence

from huggingface_hub import hf_hub_download
from tqdm import tqdm

DEFAULT_REPO_ID = "willdepueoai/parameter-golf"
DEFAULT_REMOTE_ROOT = "datasets"  # folder of the HF dataset repo that holds the export
DEFAULT_VARIANT = "sp1024"
DEFAULT_TRAIN_SHARDS = 80  # 8B training tokens at 100M tokens per shard
DATA_DIR = Path(__file__).resolve().parent  # files land under data/ by default

# The shard header (see data/build_sp_dataset.py): 256 int32 words, tokens are uint16.
SHARD_MAGIC = 20240520
SHARD_HEADER_BYTES = 256 * 4
SHARD_TOKEN_BYTES = 2

DownloadFn = Callable[[str, str, Path], None]
"""download(repo_id, remote_path, local_path): fetch one file of the dataset repo."""


@dataclass(frozen=True)
class FileRequest:
    """One file to fetch: its path inside the HF dataset repo and where it goes locally."""

    remote_path: str
    local_path: Path


# ----------------------------------------------------------------------------------------
# Pure path and manifest logic
# ----------------------------------------------------------------------------------------


def dataset_name_for_variant(variant: str) -> str:
    """Map a variant name to its dataset folder: "sp1024" -> "fineweb10B_sp1024",
    "sp8192_lossless_caps_caseops_v1_reserved" -> "fineweb10B_sp8192_lossless_caps_caseops_v1_reserved".

    Any name the manifest lists is accepted (plan_downloads checks); here only names that
    could not be a dataset folder (empty, path separators, odd characters) are refused."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", variant):
        raise ValueError(f"unknown variant {variant!r}: expected a name such as sp1024, sp8192, byte260 or "
                         "sp8192_lossless_caps_caseops_v1_reserved (letters, digits, '.', '_', '-')")
    return f"fineweb10B_{variant}"


def manifest_relative_path(repo_id: str, remote_root: str) -> str:
    """Where a repo's manifest is cached, relative to the output root.

    The default export keeps the official place, manifest.json. Every other repo (or root
    folder) gets its own file, manifests/<owner>__<name>[__<root>]/manifest.json, so fetching
    from a second repo never reuses the first one's manifest."""
    if repo_id == DEFAULT_REPO_ID and remote_root == DEFAULT_REMOTE_ROOT:
        return "manifest.json"
    key = repo_id.replace("/", "__")
    if remote_root != DEFAULT_REMOTE_ROOT:
        key += "__" + (remote_root.strip("/").replace("/", "_") or "_")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", key):
        raise ValueError(f"repo id {repo_id!r} / remote root {remote_root!r}: unexpected characters")
    return f"manifests/{key}/manifest.json"


def remote_path(remote_root: str, relative: str) -> str:
    """Join the export's root folder and a path relative to it, as a repo path."""
    return str(PurePosixPath(remote_root, relative)) if remote_root else relative


def local_path_for(relative: str, output_root: Path) -> Path:
    """Local home of a file given by its path relative to the export root.

    The export's layout (datasets/<name>/..., tokenizers/..., manifest.json) is kept as is
    under `output_root`, so datasets/ and tokenizers/ become data/datasets/ and
    data/tokenizers/. Paths that could escape `output_root` are refused.
    """
    parts = PurePosixPath(relative).parts
    if not parts or PurePosixPath(relative).is_absolute() or ".." in parts:
        raise ValueError(f"refusing unsafe path from the manifest: {relative!r}")
    return output_root.joinpath(*parts)


def available_variants(manifest: dict) -> list[str]:
    """Variant names of the datasets the manifest lists ("fineweb10B_sp1024" -> "sp1024")."""
    names = [str(entry.get("name", "")) for entry in manifest.get("datasets", [])]
    return sorted(name.removeprefix("fineweb10B_") for name in names if name.startswith("fineweb10B_"))


def sidecar_shard_count(dataset: dict) -> int:
    """How many val byte-sidecar shards (fineweb_val_bytes_NNNNNN.bin) a dataset has: the
    CaseOps exports mark them with `val_bytes_glob` (one sidecar per val shard) or count them
    in `stats.files_val_bytes`; other datasets have none."""
    stats = dataset.get("stats") or {}
    if stats.get("files_val_bytes") is not None:
        return int(stats["files_val_bytes"])
    return int(stats.get("files_val", 0)) if dataset.get("val_bytes_glob") else 0


def plan_downloads(
    manifest: dict,
    variant: str,
    train_shards: int,
    *,
    output_root: Path,
    remote_root: str = DEFAULT_REMOTE_ROOT,
    with_docs: bool = False,
    source: str = "the manifest",
) -> list[FileRequest]:
    """List the files to fetch for `variant`, in download order, from the manifest.

    Order: the val shards, the val byte sidecar (where the dataset has one), the first
    `train_shards` train shards, the tokenizer files, then (with_docs) the raw documents.
    Raises ValueError, naming `source` (the repo and its manifest), for a malformed variant
    name, a variant the manifest does not list, a tokenizer missing from the manifest, or
    more train shards than the export has.
    """
    dataset_name = dataset_name_for_variant(variant)
    if train_shards < 0:
        raise ValueError(f"--train-shards must be >= 0, got {train_shards}")
    dataset = next((d for d in manifest.get("datasets", []) if d.get("name") == dataset_name), None)
    if dataset is None:
        raise ValueError(
            f"variant {variant!r} ({dataset_name}) is not in {source}; "
            f"available: {', '.join(available_variants(manifest)) or 'none'}"
        )
    stats = dataset.get("stats") or {}
    try:
        max_train, n_val = int(stats["files_train"]), int(stats["files_val"])
        n_sidecar = sidecar_shard_count(dataset)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"entry for {dataset_name} in {source} lacks stats.files_train/files_val") from exc
    if train_shards > max_train:
        raise ValueError(f"{variant} has only {max_train} train shards in {source}, {train_shards} requested")

    tokenizer_name = dataset.get("tokenizer_name")
    tokenizer = next((t for t in manifest.get("tokenizers", []) if t.get("name") == tokenizer_name), None)
    if tokenizer is None:
        raise ValueError(f"tokenizer {tokenizer_name!r} of {dataset_name} is not in {source}")
    # SentencePiece tokenizers list model_path and vocab_path; the byte tokenizer one path.
    tokenizer_files = [str(tokenizer[key]) for key in ("model_path", "vocab_path", "path") if tokenizer.get(key)]
    if not tokenizer_files:
        raise ValueError(f"tokenizer {tokenizer_name!r} names no files in {source}")

    relatives = [f"datasets/{dataset_name}/fineweb_val_{i:06d}.bin" for i in range(n_val)]
    relatives += [f"datasets/{dataset_name}/fineweb_val_bytes_{i:06d}.bin" for i in range(n_sidecar)]
    relatives += [f"datasets/{dataset_name}/fineweb_train_{i:06d}.bin" for i in range(train_shards)]
    relatives += tokenizer_files
    if with_docs:
        relatives += ["docs_selected.jsonl", "docs_selected.source_manifest.json"]
    return [FileRequest(remote_path(remote_root, rel), local_path_for(rel, output_root)) for rel in relatives]


def is_complete(path: Path) -> bool:
    """True if `path` exists and looks whole (see the module docstring)."""
    if not path.is_file():
        return False
    size = path.stat().st_size
    if path.suffix != ".bin":
        return size > 0
    if size < SHARD_HEADER_BYTES:
        return False
    with open(path, "rb") as f:
        header = f.read(12)
    magic, _version, n_tokens = (int.from_bytes(header[i : i + 4], "little", signed=True) for i in (0, 4, 8))
    return magic == SHARD_MAGIC and size == SHARD_HEADER_BYTES + n_tokens * SHARD_TOKEN_BYTES


# ----------------------------------------------------------------------------------------
# Network
# ----------------------------------------------------------------------------------------


def download_file(repo_id: str, remote_path: str, local_path: Path) -> None:
    """Fetch one file of the HF dataset repo `repo_id` to `local_path`.

    hf_hub_download stores the file in the Hugging Face cache (showing its own byte-level
    progress bar) and returns a path that may be a symlink into the cache; the file is
    hard-linked (or copied, across file systems) into place so data/ holds real files.
    """
    remote = PurePosixPath(remote_path)
    cached = hf_hub_download(
        repo_id=repo_id,
        repo_type="dataset",
        filename=remote.name,
        subfolder=str(remote.parent) if str(remote.parent) != "." else None,
    )
    source = Path(cached).resolve(strict=True)
    local_path.parent.mkdir(parents=True, exist_ok=True)
    partial = local_path.with_name(local_path.name + ".part")
    partial.unlink(missing_ok=True)
    try:
        os.link(source, partial)
    except OSError:
        shutil.copyfile(source, partial)
    os.replace(partial, local_path)


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def probe_hub(repo_id: str, timeout: float = 8.0) -> str | None:
    """None when the Hugging Face dataset repo answers, else why not, in one sentence. One
    request with a short timeout (proxies from the environment apply), so an offline machine
    fails in seconds instead of after the hub client's retries."""
    import urllib.error
    import urllib.request
    url = f"{hub_endpoint()}/api/datasets/{repo_id}"
    headers = {"Authorization": f"Bearer {os.environ['HF_TOKEN']}"} if os.environ.get("HF_TOKEN") else {}
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD", headers=headers), timeout=timeout)
        return None
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403, 404):
            return (f"the dataset repo {repo_id} is not on {hub_endpoint()} (HTTP {exc.code}); check --repo-id "
                    "(private repos need HF_TOKEN)")
        return f"{url} answered HTTP {exc.code} {exc.reason}; try again later"
    except (urllib.error.URLError, OSError) as exc:
        cause = getattr(exc, "reason", exc)
        return (f"cannot reach {hub_endpoint()} for the dataset repo {repo_id} ({cause}): this machine looks offline; "
                "download on a machine with internet and copy data/datasets/ and data/tokenizers/ over")


class HubUnreachable(Exception):
    """The dataset repo cannot be reached (offline, wrong repo id): the message says which and why."""


def probed(download: DownloadFn, probe: Callable[[str], str | None]) -> DownloadFn:
    """`download`, preceded on its first call by probe(repo_id); a problem raises HubUnreachable.
    Files already present never call it, so an offline re-run with complete data still succeeds."""
    ok: set = set()

    def run(repo_id: str, remote: str, local: Path) -> None:
        if repo_id not in ok:
            problem = probe(repo_id)
            if problem is not None:
                raise HubUnreachable(problem)
            ok.add(repo_id)
        download(repo_id, remote, local)
    return run


def fetch_files(
    requests: Sequence[FileRequest],
    repo_id: str,
    *,
    download: DownloadFn = download_file,
    progress: bool = True,
) -> list[FileRequest]:
    """Download the requested files that are not already complete; return those fetched."""
    missing = [r for r in requests if not is_complete(r.local_path)]
    for request in tqdm(missing, unit="file", desc="download", disable=not progress or not missing):
        download(repo_id, request.remote_path, request.local_path)
        if not is_complete(request.local_path):
            raise RuntimeError(f"{request.local_path}: downloaded file is empty or truncated")
    return missing


def load_manifest(
    repo_id: str,
    remote_root: str,
    output_root: Path,
    *,
    download: DownloadFn = download_file,
    allow_download: bool = True,
) -> dict:
    """Read the export's manifest.json, fetching it first if it is not present locally (in its
    per-repo place, see manifest_relative_path)."""
    local = local_path_for(manifest_relative_path(repo_id, remote_root), output_root)
    request = FileRequest(remote_path(remote_root, "manifest.json"), local)
    if not is_complete(request.local_path):
        if not allow_download:
            raise FileNotFoundError(f"{request.local_path}: no local manifest, and --skip-manifest forbids fetching it")
        fetch_files([request], repo_id, download=download, progress=False)
    try:
        return json.loads(request.local_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{request.local_path}: not valid JSON ({exc.msg}); delete it to fetch it again") from exc


# ----------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------


class OneLineParser(argparse.ArgumentParser):
    """A usage error is one line naming the flag and pointing at --help (exit 2), not the usage block."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        description="Download the Parameter Golf FineWeb shards and tokenizer from Hugging Face "
        "into data/datasets/ and data/tokenizers/.",
    )
    parser.add_argument("--variant", default=DEFAULT_VARIANT,
                        help="dataset variant, any the repo's manifest lists: sp1024, sp8192, byte260, "
                        "sp8192_lossless_caps_caseops_v1_reserved, ... (default: %(default)s)")
    parser.add_argument("--train-shards", type=int, default=DEFAULT_TRAIN_SHARDS,
                        help="number of train shards to fetch, from the first one; 100M tokens each "
                        "(default: %(default)s). The whole val split is always fetched.")
    # The official script also takes the shard count as a bare positional argument.
    parser.add_argument("train_shards_positional", nargs="?", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--with-docs", action="store_true",
                        help="also fetch docs_selected.jsonl (the raw documents) and its sidecar, for retokenizing")
    parser.add_argument("--skip-manifest", action="store_true",
                        help="never fetch manifest.json; use the copy already in the output root")
    parser.add_argument("--check-only", action="store_true",
                        help="print the files that would be fetched and their state, download nothing")
    parser.add_argument("--repo-id", default=os.environ.get("MATCHED_FINEWEB_REPO_ID", DEFAULT_REPO_ID),
                        help="Hugging Face dataset repo (default: %(default)s)")
    parser.add_argument("--remote-root",
                        default=os.environ.get("MATCHED_FINEWEB_REMOTE_ROOT_PREFIX", DEFAULT_REMOTE_ROOT),
                        help="folder of the repo that holds the export (default: %(default)s)")
    parser.add_argument("--output-root", type=Path, default=DATA_DIR,
                        help="local folder that receives manifest.json, datasets/ and tokenizers/ "
                        "(default: this script's folder)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def main(argv: Sequence[str] | None = None, *, download: DownloadFn = download_file,
         probe: Callable[[str], str | None] = probe_hub) -> int:
    args = build_parser().parse_args(argv)
    train_shards = args.train_shards if args.train_shards_positional is None else args.train_shards_positional
    if download is download_file:  # the hub is probed once, before the first real download only
        download = probed(download, probe)
    if train_shards < 0:
        print(f"error: --train-shards {train_shards} must be 0 or more", file=sys.stderr)
        return 2
    try:
        dataset_name_for_variant(args.variant)  # reject a malformed variant before any network use

        manifest = load_manifest(args.repo_id, args.remote_root, args.output_root,
                                 download=download, allow_download=not args.skip_manifest)
        source = (f"the manifest of {args.repo_id} ({remote_path(args.remote_root, 'manifest.json')}, cached as "
                  f"{local_path_for(manifest_relative_path(args.repo_id, args.remote_root), args.output_root)})")
        requests = plan_downloads(manifest, args.variant, train_shards, output_root=args.output_root,
                                  remote_root=args.remote_root, with_docs=args.with_docs, source=source)
    except (ValueError, FileNotFoundError, HubUnreachable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    if args.check_only:
        for request in requests:
            state = "present" if is_complete(request.local_path) else "missing"
            print(f"{state}\t{request.remote_path}\t->\t{request.local_path}")
        return 0
    try:
        fetched = fetch_files(requests, args.repo_id, download=download, progress=not args.no_progress)
    except HubUnreachable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (OSError, RuntimeError, ValueError) as exc:  # the hub client's errors derive from these
        print(f"error: downloading from {args.repo_id} failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
              "(files already complete are kept; run the same command again to resume)", file=sys.stderr)
        return 2
    print(f"{args.variant}: {len(requests)} files in {args.output_root} "
          f"({len(fetched)} downloaded, {len(requests) - len(fetched)} already present)")
    print("train_gpt.py variables for this data:")
    print(" ".join(f"{k}={v}" for k, v in trainer_variables(requests).items()))
    return 0


def trainer_variables(requests: Sequence[FileRequest]) -> dict[str, str]:
    """The train_gpt.py environment variables that point it at the fetched files (the vocab
    size is read from the tokenizer by the trainer's check; it is named here when the variant
    spells it, sp<N>)."""
    shard = next(r.local_path for r in requests if r.local_path.name.startswith("fineweb_val_"))
    model = next((r.local_path for r in requests if r.local_path.suffix == ".model"), None)
    env = {"DATA_PATH": str(shard.parent.resolve())}
    if model is not None:
        env["TOKENIZER_PATH"] = str(model.resolve())
    vocab = re.match(r"fineweb10B_sp([0-9]+)", shard.parent.name)
    if vocab:
        env["VOCAB_SIZE"] = vocab.group(1)
    if any(r.local_path.name.startswith("fineweb_val_bytes_") for r in requests):
        env["CASEOPS_ENABLED"] = "1"
    return env


if __name__ == "__main__":
    sys.exit(main())
