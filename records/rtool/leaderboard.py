"""Command `leaderboard`: every record under a root, sorted by score."""
from __future__ import annotations

import json
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
    note: str = ""


def record_folders(root: Path) -> list[Path]:
    """Folders holding submission.json, plus log-only folders not inside one."""
    with_json = sorted(p.parent for p in root.rglob("submission.json"))
    out = list(with_json)
    for p in sorted(root.rglob("*")):
        if p.is_dir() and p not in with_json and not any(j in p.parents for j in with_json):
            if any(c.suffix in LOG_SUFFIXES and c.name.lower() not in NON_LOG_NAMES for c in p.iterdir() if c.is_file()):
                if find_logs(p):
                    out.append(p)
    return sorted(set(out))


def load_entry(folder: Path, root: Path) -> Entry:
    rel = folder.relative_to(root)
    track = rel.parts[0] if len(rel.parts) > 1 else "-"
    runs = find_logs(folder)
    sub = {}
    if (folder / "submission.json").is_file():
        try:
            sub = json.loads((folder / "submission.json").read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            sub = {}
    bpbs, losses = score_values(runs, "val_bpb"), score_values(runs, "val_loss")
    totals = [r.total_bytes for r in runs if r.total_bytes is not None]
    if bpbs:
        e = Entry(folder, track, mean(bpbs), mean(losses) if losses else None, len(bpbs),
                  max(totals) if totals else None, "logs")
        if "val_bpb" in sub and not agrees(sub["val_bpb"], e.val_bpb):
            e.note = f"json val_bpb {sub['val_bpb']} != logs"
        return e
    bpb = sub.get("val_bpb")
    return Entry(folder, track, bpb if isinstance(bpb, (int, float)) else None,
                 sub.get("val_loss") if isinstance(sub.get("val_loss"), (int, float)) else None,
                 len(sub.get("seeds") or []) or 1, sub.get("bytes_total"), "submission.json" if sub else "-",
                 "no parsable log" if sub else "nothing parsable")


def cmd_leaderboard(args) -> int:
    root = Path(args.root)
    if not root.is_dir():
        return refuse(f"{root} is not a directory")
    entries = [load_entry(f, root) for f in record_folders(root)]
    if args.track:
        entries = [e for e in entries if e.track in (args.track, f"track_{args.track}")]
    key = "val_loss" if args.by == "loss" else "val_bpb"
    entries.sort(key=lambda e: (getattr(e, key) is None, getattr(e, key) or 0.0, e.folder.name))
    if not entries:
        print(f"no records under {root}")
        return 0
    print(f"{'#':>3}  {'val_bpb':>10}  {'val_loss':>10}  {'seeds':>5}  {'bytes_max':>11}  {'source':<15}  "
          f"{'track':<24}  record")
    for i, e in enumerate(entries, 1):
        bpb = "-" if e.val_bpb is None else f"{e.val_bpb:.5f}"
        loss = "-" if e.val_loss is None else f"{e.val_loss:.5f}"
        size = "-" if e.bytes_max is None else f"{e.bytes_max:,}"
        note = f"  [{e.note}]" if e.note else ""
        print(f"{i:>3}  {bpb:>10}  {loss:>10}  {e.n_seeds:>5}  {size:>11}  {e.source:<15}  {e.track:<24}  "
              f"{e.folder.name}{note}")
    print(f"sorted by {key} (lower is better); scores from the logs' scored metric where a log parses, "
          f"else from submission.json")
    return 0

