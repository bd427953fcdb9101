"""Command `diff`: compare two record folders or two logs."""
from __future__ import annotations

import difflib
import sys
from dataclasses import dataclass
from pathlib import Path

from .common import *
from .logs import *
from .scripts import *
from .stats import mean

@dataclass
class Side:
    label: str
    runs: list
    config: dict
    config_source: str
    script: str | None
    script_name: str


def load_side(path: Path) -> Side:
    path = Path(path)
    if path.is_dir():
        runs = find_logs(path)
        sp = script_in_folder(path)
        script = sp.read_text(encoding="utf-8", errors="replace") if sp else next((r.source for r in runs if r.source), None)
        name = f"{path.name}/{sp.name}" if sp else f"{path.name} (embedded source)"
    else:
        runs = [parse_log(path)]
        script, name = runs[0].source, f"{path.name} (embedded source)"
    logged = next((r for r in runs if r.config), None)
    if logged is not None:
        config, source = logged.config, f"{logged.config_source} of {logged.path.name}"
    elif script:
        config, source = env_defaults(script), "script env-var defaults (ast; run-time overrides are not in the log)"
    else:
        config, source = {}, "none (no logged config and no script)"
    return Side(str(path), runs, {k.upper(): v for k, v in config.items()}, source, script, name)


def metric_rows(a: Side, b: Side) -> list[str]:
    def agg(side: Side, fn):
        vals = [v for v in (fn(r) for r in side.runs) if v is not None]
        return vals

    specs = [("val_bpb (mean)", lambda r: r.score.val_bpb if r.score else None, mean, 8),
             ("val_loss (mean)", lambda r: r.score.val_loss if r.score else None, mean, 8),
             ("total bytes (max)", lambda r: r.total_bytes, max, 0),
             ("code bytes (max)", lambda r: r.code_bytes, max, 0),
             ("steps (mean)", lambda r: r.steps, mean, 1),
             ("step_avg ms (mean)", lambda r: r.step_avg_ms, mean, 2),
             ("train time s (max)", lambda r: None if r.train_time_ms is None else r.train_time_ms / 1000, max, 3),
             ("eval time s (max)", lambda r: None if r.eval_time_ms is None else r.eval_time_ms / 1000, max, 3),
             ("model params", lambda r: r.model_params, max, 0)]
    rows = []
    for label, fn, red, d in specs:
        va, vb = agg(a, fn), agg(b, fn)
        xa = red(va) if va else None
        xb = red(vb) if vb else None
        sa = NOT_IN_LOG if xa is None else f"{xa:,.{d}f}"
        sb = NOT_IN_LOG if xb is None else f"{xb:,.{d}f}"
        delta = f"  ({xb - xa:+,.{d}f})" if xa is not None and xb is not None else ""
        rows.append(f"  {label:<20} {sa:>20} -> {sb:<20}{delta}")
    na = ", ".join(sorted({r.score.name for r in a.runs if r.score})) or NOT_IN_LOG
    nb = ", ".join(sorted({r.score.name for r in b.runs if r.score})) or NOT_IN_LOG
    rows.append(f"  {'scored metric':<20} {na} -> {nb}")
    rows.append(f"  {'seeds':<20} {', '.join(seed_key(r) for r in a.runs)} -> {', '.join(seed_key(r) for r in b.runs)}")
    return rows


def cmd_diff(args) -> int:
    for p in (args.a, args.b):
        if not Path(p).exists():
            return refuse(f"{p} does not exist")
    a, b = load_side(Path(args.a)), load_side(Path(args.b))
    print(f"A: {a.label}  ({len(a.runs)} log(s); config from {a.config_source})")
    print(f"B: {b.label}  ({len(b.runs)} log(s); config from {b.config_source})")
    print("\n== configuration differences ==")
    keys = sorted(set(a.config) | set(b.config))
    diffs = [k for k in keys if norm_value(a.config.get(k, "<absent>")) != norm_value(b.config.get(k, "<absent>"))]
    shown = [k for k in diffs if args.all_keys or k not in VOLATILE_KEYS]
    for k in shown:
        print(f"  {k}: {a.config.get(k, '<absent>')} -> {b.config.get(k, '<absent>')}")
    hidden = len(diffs) - len(shown)
    print(f"  ({len(shown)} key(s) differ" + (f"; {hidden} run-identity key(s) hidden, --all-keys shows them" if hidden else "")
          + ")" if shown or hidden else "  (none)")
    print("\n== metric differences ==")
    print("\n".join(metric_rows(a, b)))
    print("\n== script diff ==")
    if a.script is None or b.script is None:
        missing = [s.label for s in (a, b) if s.script is None]
        print(f"  no script for {', '.join(missing)} (the log does not embed its source)")
    elif a.script == b.script:
        print("  scripts are identical")
    else:
        lines = difflib.unified_diff(a.script.splitlines(keepends=True), b.script.splitlines(keepends=True),
                                     fromfile=f"A/{a.script_name}", tofile=f"B/{b.script_name}", n=args.context)
        sys.stdout.writelines(line if line.endswith("\n") else line + "\n" for line in lines)
    return 0

