"""Command `diff`: compare two record folders or two logs."""
from __future__ import annotations

import ast
import difflib
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .common import *
from .logs import *
from .scripts import *
from .new import PATH_KEYS
from .stats import mean


@dataclass
class Side:
    label: str
    runs: list
    config: dict
    config_source: str
    script: str | None
    script_name: str
    from_defaults: set = field(default_factory=set)   # keys whose value is only the script default


_RUN_LINE = re.compile(r"(?:torchrun|python3?)\b[^\n]*?\btrain_gpt[\w.]*\.py")


def readme_run_env(readme: Path) -> dict:
    """KEY=VALUE assignments of the first run command in a README (a `... torchrun ... train_gpt.py`
    or `python train_gpt.py` line, with backslash continuations), shell-unquoted."""
    if not readme.is_file():
        return {}
    text = readme.read_text(encoding="utf-8", errors="replace").replace("\\\n", " ")
    for line in text.splitlines():
        m = _RUN_LINE.search(line)
        if not m:
            continue
        try:
            words = shlex.split(line[:m.start()], comments=False)
        except ValueError:
            continue
        env = {}
        for w in words:
            k, eq, v = w.partition("=")
            if eq and re.fullmatch(r"[A-Z][A-Z0-9_]*", k):
                env[k] = v
        if env:
            return env
    return {}


def load_side(path: Path) -> Side:
    """Each side's config: the log's hyperparameter dump, else the README's run command over the
    script's defaults, else the script's defaults; the source says which."""
    path = Path(path)
    if path.is_dir():
        runs = find_logs(path)
        sp = script_in_folder(path)
        human = path / HUMAN_NAME
        script = (human.read_text(encoding="utf-8", errors="replace") if human.is_file() else
                  readable_script(sp.read_bytes()) if sp else next((r.source for r in runs if r.source), None))
        name = f"{path.name}/{HUMAN_NAME if human.is_file() else sp.name}" if (sp or human.is_file()) \
            else f"{path.name} (embedded source)"
        minified = bool(sp) and not human.is_file() and holds_minified(sp.read_bytes())
        if sp and not human.is_file() and unpack_source(sp.read_bytes()) is not None:
            name += " (unpacked, minified)" if minified else " (unpacked)"
        readme = path / "README.md"
    else:
        runs = [parse_log(path)]
        script, name = runs[0].source, f"{path.name} (embedded source)"
        readme = path.parent / "README.md"
    defaults = {k.upper(): v for k, v in env_defaults(script).items()} if script else {}
    logged = next((r for r in runs if r.config), None)
    if logged is not None:
        config = {k.upper(): v for k, v in logged.config.items()}
        return Side(str(path), runs, config, f"{logged.config_source} of {logged.path.name}", script, name)
    run_env = readme_run_env(readme)
    if run_env:
        config = {**defaults, **run_env}
        return Side(str(path), runs, config, f"the README's run command ({len(run_env)} variable(s)) over the script's "
                    "env-var defaults", script, name, set(defaults) - set(run_env))
    if defaults:
        return Side(str(path), runs, defaults, "script env-var defaults (ast; run-time overrides are not in the log)",
                    script, name, set(defaults))
    return Side(str(path), runs, {}, "none (no logged config, no README run command, no script)", script, name)


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
    for side, p in ((a, args.a), (b, args.b)):
        if not side.script and not any(r.source or r.config or r.train_points or r.metrics for r in side.runs):
            what = "folder holds no train_gpt.py and no training log" if Path(p).is_dir() else \
                "file is not a training log (no source, config, step or metric lines)"
            return refuse(f"{p}: the {what}; give a record folder or a run's log")
    print(f"A: {a.label}  ({len(a.runs)} log(s); config from {a.config_source})")
    print(f"B: {b.label}  ({len(b.runs)} log(s); config from {b.config_source})")
    print("\n== configuration differences ==")
    for line in config_rows(a, b, args.all_keys):
        print(line)
    print("\n== metric differences ==")
    print("\n".join(metric_rows(a, b)))
    print("\n== script diff ==")
    print(f"  A: {a.script_name}  B: {b.script_name}")
    if a.script is None or b.script is None:
        missing = [s.label for s in (a, b) if s.script is None]
        print(f"  no script for {', '.join(missing)} (the log does not embed its source)")
    elif a.script == b.script:
        print("  scripts are identical")
    else:
        # A packed wrapper of ours (and the log of a run that executed one) holds the minified
        # source: compare like with like, both minified as the packer writes them.
        mins = [minify_source(s.script) for s in (a, b)]
        small = [m is not None and m == s.script for m, s in zip(mins, (a, b))]
        if small[0] != small[1] and None not in mins:
            if mins[0] == mins[1]:
                print("  the same program: one side is the packed (minified) form of the other's source")
                return 0
            print("  (one side is the packer's minified source: the other is minified the same way to compare)")
            a.script, b.script = mins
        for line in script_summary(a.script, b.script):
            print(line)
        if args.full_diff:
            lines = difflib.unified_diff(a.script.splitlines(keepends=True), b.script.splitlines(keepends=True),
                                         fromfile=f"A/{a.script_name}", tofile=f"B/{b.script_name}", n=args.context)
            sys.stdout.writelines(line if line.endswith("\n") else line + "\n" for line in lines)
        else:
            print("  (--full-diff prints the unified diff)")
    return 0


# ----- configuration comparison -----

def is_local_key(key: str, *values) -> bool:
    """Run identity and machine-local paths: they differ between any two runs and say nothing."""
    return key in VOLATILE_KEYS or key in PATH_KEYS or key.endswith(("_PATH", "_DIR", "_FILES")) \
        or any(isinstance(v, str) and v.startswith(("/", "./", "~")) for v in values)


def renamed_pairs(only_a: list, only_b: list) -> list[tuple[str, str]]:
    """Keys that look like one knob renamed: one name is the other with a prefix or suffix word
    (QAT_THRESHOLD / LATE_QAT_THRESHOLD, MUON_WD / MUON_WEIGHT_DECAY is not guessed)."""
    pairs, used = [], set()
    for ka in only_a:
        for kb in only_b:
            if kb in used:
                continue
            short, long_ = sorted((ka, kb), key=len)
            if long_.endswith("_" + short) or long_.startswith(short + "_"):
                pairs.append((ka, kb))
                used.add(kb)
                break
    return pairs


def config_rows(a: Side, b: Side, all_keys: bool = False) -> list[str]:
    rows, hidden, not_compared = [], 0, []
    both = sorted(set(a.config) & set(b.config))
    for k in both:
        va, vb = a.config[k], b.config[k]
        if norm_value(va) == norm_value(vb):
            continue
        if not all_keys and is_local_key(k, va, vb):
            hidden += 1
            continue
        if str(va).startswith("<") or str(vb).startswith("<"):
            not_compared.append(k)  # an expression or a required variable: no literal default to compare
            continue
        tag = " (both script defaults)" if k in a.from_defaults and k in b.from_defaults else ""
        rows.append(f"  {k}: {va} -> {vb}{tag}")
    only_a = [k for k in sorted(set(a.config) - set(b.config)) if all_keys or not is_local_key(k, a.config[k])]
    only_b = [k for k in sorted(set(b.config) - set(a.config)) if all_keys or not is_local_key(k, b.config[k])]
    pairs = renamed_pairs(only_a, only_b)
    for ka, kb in pairs:
        va, vb = a.config[ka], b.config[kb]
        same = norm_value(va) == norm_value(vb)
        rows.append(f"  {ka} -> {kb} (renamed?): {va} -> {vb}" + (" (same value)" if same else ""))
    paired_a, paired_b = {p[0] for p in pairs}, {p[1] for p in pairs}
    only_a = [k for k in only_a if k not in paired_a]
    only_b = [k for k in only_b if k not in paired_b]
    n_diff = len(rows)
    if not rows:
        rows.append("  (no key that both sides have differs)")
    for side, keys in (("A", only_a), ("B", only_b)):
        if keys:
            rows.append(f"  only in {side} ({len(keys)}): " + ", ".join(f"{k}={(a if side == 'A' else b).config[k]}"
                                                                      for k in keys))
    notes = [f"{n_diff} key(s) differ"]
    if hidden:
        notes.append(f"{hidden} run-identity or local-path key(s) hidden, --all-keys shows them")
    if not_compared:
        notes.append(f"not compared (no literal default): {', '.join(not_compared)}")
    rows.append("  (" + "; ".join(notes) + ")")
    return rows


# ----- script comparison by function -----

def script_units(source: str) -> dict | None:
    """Top-level functions and classes, and the methods of classes, by qualified name -> source
    lines; "<module>" holds everything else. None when the source does not parse here."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    lines = source.splitlines()
    units, covered = {}, set()

    def take(name: str, node: ast.AST) -> None:
        start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])]) - 1
        units[name] = lines[start:node.end_lineno]
        covered.update(range(start, node.end_lineno))

    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            take(node.name, node)
        elif isinstance(node, ast.ClassDef):
            methods = [n for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
            for m in methods:
                take(f"{node.name}.{m.name}", m)
            start = min([node.lineno] + [d.lineno for d in node.decorator_list]) - 1
            units[node.name] = [ln for i, ln in enumerate(lines[start:node.end_lineno], start) if i not in covered]
            covered.update(range(start, node.end_lineno))
    units["<module>"] = [ln for i, ln in enumerate(lines) if i not in covered]
    return units


def _changed_lines(a: list, b: list) -> tuple[int, int]:
    plus = minus = 0
    for line in difflib.unified_diff(a, b, lineterm="", n=0):
        if line.startswith("+") and not line.startswith("+++"):
            plus += 1
        elif line.startswith("-") and not line.startswith("---"):
            minus += 1
    return plus, minus


def script_summary(a: str, b: str) -> list[str]:
    plus, minus = _changed_lines(a.splitlines(), b.splitlines())
    rows = [f"  {len(a.splitlines()):,} -> {len(b.splitlines()):,} lines, {len(a.encode()):,} -> {len(b.encode()):,} bytes; "
            f"+{plus} -{minus} lines"]
    ua, ub = script_units(a), script_units(b)
    if ua is None or ub is None:
        rows.append("  (no summary by function: a script does not parse with this Python)")
        return rows
    added = [n for n in ub if n not in ua]
    removed = [n for n in ua if n not in ub]
    changed = []
    for n in ua:
        if n in ub and ua[n] != ub[n]:
            p, m = _changed_lines(ua[n], ub[n])
            changed.append((p + m, n, p, m))
    changed.sort(key=lambda x: (-x[0], x[1]))
    if changed:
        rows.append(f"  changed ({len(changed)}): " + ", ".join(f"{n} +{p}/-{m}" for _, n, p, m in changed))
    if added:
        rows.append(f"  only in B ({len(added)}): " + ", ".join(f"{n} ({len(ub[n])} lines)" for n in added))
    if removed:
        rows.append(f"  only in A ({len(removed)}): " + ", ".join(f"{n} ({len(ua[n])} lines)" for n in removed))
    return rows
