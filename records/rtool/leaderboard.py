"""Command `leaderboard`: every record under a root, one table per track, sorted by score."""
from __future__ import annotations

import re

from dataclasses import dataclass
from pathlib import Path

from .common import *
from .logs import *
from .stats import mean


@dataclass
class Entry:
    folder: Path
    track: str
    val_bpb: float | None
    val_loss: float | None
    n_seeds: int
    bytes_max: int | None
    source: str
    author: str = "-"
    name: str = "-"
    date: str = "-"
    notes: list | None = None


def record_folders(root: Path) -> list[Path]:
    """Folders holding submission.json, plus log-only folders not inside one (a `logs/` folder
    inside a record belongs to that record)."""
    with_json = sorted(p.parent for p in root.rglob("submission.json"))
    out = list(with_json)
    for p in sorted(root.rglob("*")):
        if p.is_dir() and p not in with_json and not any(j in p.parents for j in with_json) \
                and not any(o in p.parents for o in out):
            if any(c.suffix in LOG_SUFFIXES and c.name.lower() not in NON_LOG_NAMES for c in p.iterdir() if c.is_file()):
                folder = p.parent if p.name == "logs" else p  # a record that keeps its logs in logs/
                if folder not in out and find_logs(folder):
                    out.append(folder)
    return sorted(set(out))


def _text(sub: dict, key: str) -> str:
    v = sub.get(key)
    return str(v) if isinstance(v, (str, int)) and not isinstance(v, bool) and str(v).strip() else "-"


def load_entry(folder: Path, root: Path) -> Entry:
    """The score is the metric submission.json reports; without one, the mean of each log's
    scored metric. Notes flag what a reader must know: logs that disagree with the json, a log over
    the size cap, logs set aside as copies or repeats, a broken json."""
    rel = folder.relative_to(root)
    track = rel.parts[0] if len(rel.parts) > 1 else "-"
    rec = load_record(folder)
    sub = rec.sub or {}
    runs = rec.runs
    notes = [rec.sub_error] if rec.sub_error else []
    bpbs, losses = score_values(runs, "val_bpb"), score_values(runs, "val_loss")
    totals = [r.total_bytes for r in runs if r.total_bytes is not None]
    over = [r for r in runs if r.total_bytes is not None and r.total_bytes > CAP_BYTES]
    if over:
        notes.append("over the cap: " + ", ".join(f"{r.label} {r.total_bytes:,} bytes" for r in over))
    nonfinite = [r for r in runs if r.score is not None and not is_finite(r.score.val_bpb)]
    if nonfinite:
        notes.append("non-finite score: " + ", ".join(f"{r.label} val_bpb {r.score.val_bpb}" for r in nonfinite))
    dup = [n for n in rec.notes]
    if dup:
        notes.append(f"{len(dup)} log(s) set aside as copies or repeated seeds")
    finite_bpbs = [b for b in bpbs if is_finite(b)]
    finite_losses = [x for x in losses if is_finite(x)]
    if is_number(sub.get("val_bpb")):
        e = Entry(folder, track, float(sub["val_bpb"]), sub.get("val_loss") if is_number(sub.get("val_loss")) else
                  (mean(finite_losses) if finite_losses and len(finite_losses) == len(finite_bpbs) else None),
                  len(runs) or len(sub.get("seeds") or []) or 1, max(totals) if totals else
                  (sub.get("bytes_total") if is_number(sub.get("bytes_total")) else None), "submission.json")
        if finite_bpbs and not agrees(sub["val_bpb"], mean(finite_bpbs)):
            notes.append(f"logs' scored metric averages {mean(finite_bpbs):.5f}")
        if not runs:
            notes.append("no parsable log")
    elif finite_bpbs:
        e = Entry(folder, track, mean(finite_bpbs), mean(finite_losses) if finite_losses else None, len(finite_bpbs),
                  max(totals) if totals else None, "logs")
        if "val_bpb" in sub:
            notes.append(f"json val_bpb {sub['val_bpb']!r} is not a finite number")
    else:
        e = Entry(folder, track, None, None, len(runs), max(totals) if totals else None, "-")
        notes.append("nothing parsable")
    if is_number(sub.get("bytes_total")) and sub["bytes_total"] > CAP_BYTES and not over:
        notes.append(f"over the cap: submission.json bytes_total {sub['bytes_total']:,}")
    e.author = _text(sub, "author") if _text(sub, "author") != "-" else _text(sub, "github_id")
    e.name, e.date = _text(sub, "name"), record_date(_text(sub, "date"))
    if e.date == "-" and len(folder.name) > 10 and folder.name[4] == "-" and folder.name[10] == "_":
        e.date = folder.name[:10]
    e.notes = notes
    return e


def record_date(text: str) -> str:
    """The YYYY-MM-DD of a submission's date: published ones write a day or an ISO timestamp
    (2026-03-19T12:34:56Z, 2026-03-19 12:34:56+00:00); anything else is kept, clipped to the column."""
    m = re.match(r"\s*(\d{4}-\d{2}-\d{2})(?:$|[T ]\d)", text)
    return m.group(1) if m else _clip(text, 10)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "~"


def cmd_leaderboard(args) -> int:
    root = Path(args.root)
    if not root.is_dir():
        return refuse(f"{root} is not a directory")
    folders = record_folders(root)
    tracks = sorted({(f.relative_to(root).parts[0] if len(f.relative_to(root).parts) > 1 else "-") for f in folders})
    if args.track:
        want = {args.track, f"track_{args.track}"}
        tracks = [t for t in tracks if t in want]
        folders = [f for f in folders if f.relative_to(root).parts[0] in want]
    total = len(folders)
    entries = []
    for i, f in enumerate(folders, 1):
        if args.progress and (i % 10 == 0 or i == total):
            print(f"  read {i}/{total} folders", file=sys.stderr)
        entries.append(load_entry(f, root))
    if not entries:
        print(f"no records under {root}" + (f" in track {args.track}" if args.track else ""))
        return 0
    key = "val_loss" if args.by == "loss" else "val_bpb"
    for track in tracks:
        rows = [e for e in entries if e.track == track]
        rows.sort(key=lambda e: (getattr(e, key) is None, getattr(e, key) or 0.0, e.folder.name))
        print(f"== {track} ({len(rows)} record(s)) ==")
        print(f"{'#':>3}  {'val_bpb':>8}  {'val_loss':>8}  {'seeds':>5}  {'bytes_max':>10}  {'date':<10}  "
              f"{'author':<18}  {'name':<40}  {'score from':<15}  record")
        for i, e in enumerate(rows, 1):
            bpb = "-" if e.val_bpb is None else f"{e.val_bpb:.5f}"
            loss = "-" if e.val_loss is None else f"{e.val_loss:.5f}"
            size = "-" if e.bytes_max is None else f"{e.bytes_max:,}"
            note = f"  [{'; '.join(e.notes)}]" if e.notes else ""
            print(f"{i:>3}  {bpb:>8}  {loss:>8}  {e.n_seeds:>5}  {size:>10}  {e.date:<10}  {_clip(e.author, 18):<18}  "
                  f"{_clip(e.name, 40):<40}  {e.source:<15}  {e.folder.name}{note}")
        print()
    print(f"sorted by {key} (lower is better) within each track; the score is the one submission.json reports, "
          "else the mean of the logs' scored metric; val_loss is in nats of each record's own tokenizer")
    return 0
