"""Command `pack`: write a script as a small self-extracting train_gpt.py plus its readable source."""
from __future__ import annotations

from pathlib import Path

from .common import *
from .scripts import HUMAN_NAME, PACKED_NAME, minify_source, pack_source, unpack_source


def write_packed(source: str, folder: Path) -> tuple[bytes, bytes]:
    """Write folder/train_gpt.py (packed) and folder/train_gpt_human.py (readable); returns both."""
    compile(source, HUMAN_NAME, "exec")  # a source that does not compile would only fail on the GPU box
    packed, readable = pack_source(source), source.encode("utf-8")
    if unpack_source(packed) != minify_source(source):  # the round trip is checked before anything is written
        raise RuntimeError("packing did not round-trip: the unpacked source differs from the minified input")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / PACKED_NAME).write_bytes(packed)
    (folder / HUMAN_NAME).write_bytes(readable)
    return packed, readable


def cmd_pack(args) -> int:
    script = Path(args.script)
    if not script.is_file():
        return refuse(f"script {script} not found")
    data = script.read_bytes()
    if unpack_source(data) is not None:
        return refuse(f"{script} is already a packed script (its readable source is inside)")
    try:
        source = data.decode("utf-8")
        compile(source, str(script), "exec")
    except (UnicodeDecodeError, SyntaxError) as e:
        return refuse(f"{script} is not a Python source this interpreter compiles: {e}")
    out = Path(args.out)
    targets = [out / PACKED_NAME, out / HUMAN_NAME]
    if any(t.exists() and t.resolve() == script.resolve() for t in targets):
        return refuse(f"--out {out} would overwrite the input {script}; pack into another folder")
    existing = [str(t) for t in targets if t.exists()]
    if existing and not args.force:
        return refuse(f"{', '.join(existing)} exist (use --force to overwrite)")
    packed, readable = write_packed(source, out)
    print(f"wrote {out / PACKED_NAME} ({len(packed):,} bytes: the counted code) and {out / HUMAN_NAME} "
          f"({len(readable):,} bytes, the readable source)")
    print(f"saved {len(readable) - len(packed):,} bytes of the {CAP_BYTES:,}-byte cap "
          f"({100.0 * len(packed) / len(readable):.1f}% of the readable size); round trip checked")
    # from where the data paths resolve: the defaults (./data/...) are relative to the directory
    # the run starts in, so `cd {out}` first would look for the data inside the output folder
    print(f"run it from the directory your data paths are relative to (the repository root for the defaults): "
          f"torchrun --standalone --nproc_per_node=8 {out / PACKED_NAME}")
    return 0
