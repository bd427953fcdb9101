"""Scripts: env-var defaults read with ast, and the check of a script against a log."""
from __future__ import annotations

import ast
import hashlib

from .common import *
from .logs import *

def _call_name(func: ast.AST) -> str:
    try:
        return ast.unparse(func)
    except Exception:  # pragma: no cover - ast.unparse handles every expression node
        return ""


def _default_text(node: ast.AST | None) -> str:
    if node is None:
        return "<unset>"
    if isinstance(node, ast.Constant):
        return str(node.value)
    try:
        return str(ast.literal_eval(node))
    except (ValueError, SyntaxError, TypeError):
        return "<expr> " + ast.unparse(node)


def _is_env_call(name: str) -> bool:
    last = name.rsplit(".", 1)[-1]
    return name in ("os.environ.get", "environ.get", "os.getenv", "getenv") or last.startswith(("_env", "env_"))


def env_defaults(source: str) -> dict:
    """Environment-variable defaults of a script, read with ast:
    - `os.environ.get("NAME", default)`, `os.getenv(...)`, helpers named `_env*`/`env_*`;
    - `os.environ["NAME"]` (required: "<required>");
    - fields of a config class (named Config/Hyperparameters or having `from_env`) written as
      `name: type = knob(default, ...)` / `field(default=...)` / a literal: env name NAME."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return {}
    out: dict = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _is_env_call(_call_name(node.func)) and node.args \
                and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            dflt = node.args[1] if len(node.args) > 1 else next((k.value for k in node.keywords if k.arg == "default"), None)
            out.setdefault(node.args[0].value, _default_text(dflt))
        elif isinstance(node, ast.Subscript) and _call_name(node.value) in ("os.environ", "environ") \
                and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
            out.setdefault(node.slice.value, "<required>")
        elif isinstance(node, ast.ClassDef) and _is_config_class(node):
            for stmt in node.body:
                if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None:
                    dflt = _field_default(stmt.value)
                    if dflt is not None:
                        out.setdefault(stmt.target.id.upper(), dflt)
    return out


def _is_config_class(node: ast.ClassDef) -> bool:
    methods = {s.name for s in node.body if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef))}
    return node.name in ("Config", "Hyperparameters") or "from_env" in methods


def _field_default(value: ast.AST) -> str | None:
    if isinstance(value, ast.Call):
        if any(k.arg == "default_factory" for k in value.keywords):
            return None
        kw = next((k.value for k in value.keywords if k.arg == "default"), None)
        if kw is not None:
            return _default_text(kw)
        return _default_text(value.args[0]) if value.args else None
    return _default_text(value)


def norm_value(value) -> object:
    """Compare config values across spellings: '1'/'True'/1.0 are equal, '524_288'==524288."""
    s = str(value).strip()
    if s in ("True", "true"):
        return 1.0
    if s in ("False", "false"):
        return 0.0
    try:
        return float(s.replace("_", ""))
    except ValueError:
        return s


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def verify_script(run: RunLog, script: bytes, script_name: str = "train_gpt.py") -> tuple[str, str]:
    """("PASS"|"FAIL"|"UNVERIFIED", message): the log's embedded source (and, for our logs,
    its code_sha256) against the given script bytes."""
    if run.source is None:
        return "UNVERIFIED", f"{run.path.name} does not embed its source; cannot check {script_name}"
    try:
        text = script.decode("utf-8")
    except UnicodeDecodeError:
        return "FAIL", f"{script_name} is not UTF-8 text"
    digest = sha256_bytes(script)
    if run.code_sha256 is not None and run.code_sha256 != digest:
        return "FAIL", (f"{run.path.name} code_sha256:{run.code_sha256[:12]}... but {script_name} "
                        f"has sha256 {digest[:12]}...")
    if run.source == text:
        how = "embeds " + script_name + " exactly"
    elif run.source.rstrip("\n") == text.rstrip("\n"):
        how = "embeds " + script_name + " (identical up to trailing newlines)"
    else:
        a, b = run.source.splitlines(), text.splitlines()
        first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        return "FAIL", (f"{run.path.name} embeds a different script than {script_name}: first difference at "
                        f"line {first + 1} ({len(a)} vs {len(b)} lines)")
    sha = f"; code_sha256 matches ({digest[:12]}...)" if run.code_sha256 else ""
    return "PASS", f"{run.path.name} {how} ({len(script):,} bytes){sha}"

