"""Scripts: env-var defaults read with ast, and the check of a script against a log."""
from __future__ import annotations

import ast
import base64
import hashlib
import lzma
import re
from pathlib import Path

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


# ----- packed (self-extracting) scripts -----
# train_gpt.py of a submission is a short wrapper holding the source minified and LZMA-compressed,
# raw in a latin-1 string literal; it decompresses and executes it. The readable source sits beside
# it as train_gpt_human.py. The wrapper's bytes are the counted code. It leaves the source it runs
# in PACKED_SOURCE, so the trainer logs that text while it counts (and hashes) the file that ran
# (__file__, the wrapper). The packer is the trainer's own (section 10 of the repository's
# train_gpt.py: a readable run counts its packed size), loaded from that file, so the tool and the
# trainer count the same bytes. Older wrappers (lzma + base85 of the readable source, ours and the
# 2026-04-05 record's) are still read.
PACKED_NAME, HUMAN_NAME = "train_gpt.py", "train_gpt_human.py"
TRAINER = Path(__file__).resolve().parents[2] / "train_gpt.py"
_LEGACY_PACKED = re.compile(r'\Aimport lzma as L,base64 as B\nPACKED_SOURCE=L\.decompress\(B\.b85decode\("([^"]*)"\)\)'
                            r'\.decode\(\)\nexec\(compile\(PACKED_SOURCE,"[\w.]+","exec"\)\)\n\Z')
_RECORD_PACKED = re.compile(r"\Aimport lzma as L,base64 as B\nexec\(L\.decompress\(B\.b85decode\('([^']*)'\)\)\)\s*\Z")
_packer: dict = {}


def packer() -> dict:
    """The trainer's packer (PACKED_HEAD, PACKED_TAIL, minify_source, pack_source, ...: the names
    its PACKER_DEFS lists), executed from the top-level definitions of the repository's
    train_gpt.py (stdlib only)."""
    if not _packer:
        tree = ast.parse(TRAINER.read_text(encoding="utf-8"))
        defs = {getattr(n, "name", None) or n.targets[0].id: n for n in tree.body
                if isinstance(n, (ast.FunctionDef, ast.ClassDef)) or isinstance(n, ast.Assign)
                and isinstance(n.targets[0], ast.Name)}
        names = ast.literal_eval(defs["PACKER_DEFS"].value) if "PACKER_DEFS" in defs else ("PACKER_DEFS",)
        missing = [k for k in names if k not in defs]
        if missing:
            raise RuntimeError(f"{TRAINER} lacks the packer's {', '.join(missing)}")
        ns: dict = {}
        exec("import ast, builtins, io, itertools, keyword, lzma, re, string, tokenize", ns)
        exec(compile(ast.Module([defs[k] for k in names], []), str(TRAINER), "exec"), ns)
        _packer.update(ns)
    return _packer


def pack_source(source: str) -> bytes:
    """The packed wrapper of a readable source (deterministic for one Python and lzma build)."""
    return packer()["pack_source"](source)


def minify_source(source: str) -> str | None:
    """The text the packed wrapper of `source` holds and runs; None when it does not parse."""
    try:
        return packer()["minify_source"](source)
    except (SyntaxError, ValueError):
        return None


def unpack_source(script: bytes) -> str | None:
    """The source inside a packed wrapper (ours: the minified source; the older base85 forms: the
    readable one); None when the script is not one."""
    head, tail = packer()["PACKED_HEAD"].encode(), packer()["PACKED_TAIL"].encode()
    try:
        if script.startswith(head) and script.endswith(tail):
            lit = script[len(head):len(script) - len(tail)].decode("latin-1")
            return lzma.decompress(ast.literal_eval(lit).encode("latin-1")).decode("utf-8")
        m = _LEGACY_PACKED.match(script.decode("ascii")) or _RECORD_PACKED.match(script.decode("ascii"))
        return None if m is None else lzma.decompress(base64.b85decode(m.group(1))).decode("utf-8")
    except (ValueError, SyntaxError, lzma.LZMAError, UnicodeDecodeError):
        return None


def packs_to(readable: str, unpacked: str) -> bool:
    """Whether a readable source is the one a wrapper holding `unpacked` was packed from."""
    return readable == unpacked or minify_source(readable) == unpacked


def holds_minified(script: bytes) -> bool:
    """Whether a packed wrapper holds a minified source (ours), not the readable one (the base85 forms)."""
    head, tail = packer()["PACKED_HEAD"].encode(), packer()["PACKED_TAIL"].encode()
    return script.startswith(head) and script.endswith(tail) and unpack_source(script) is not None


def readable_script(script: bytes) -> str:
    """The text to read or compare for a script file: the source inside a packed wrapper (any
    form unpack_source knows), else the file itself."""
    unpacked = unpack_source(script)
    return unpacked if unpacked is not None else script.decode("utf-8", errors="replace")


def verify_script(run: RunLog, script: bytes, script_name: str = "train_gpt.py") -> tuple[str, str]:
    """("PASS"|"FAIL"|"UNVERIFIED", message): the log's embedded source (and, for our logs,
    its code_sha256) against the given script bytes. For a packed script the embedded source is
    the packed source (the run executed the wrapper: code_sha256 is the wrapper's) or a readable
    source that packs to it (the run executed train_gpt_human.py, the same program: code_sha256 is
    that source's)."""
    if run.source is None:
        return "UNVERIFIED", f"{run.path.name} does not embed its source; cannot check {script_name}"
    unpacked = unpack_source(script)
    try:
        text = unpacked if unpacked is not None else script.decode("utf-8")
    except UnicodeDecodeError:
        return "FAIL", f"{script_name} is not UTF-8 text"
    digest = sha256_bytes(script)
    ran_readable = unpacked is not None and run.source != unpacked and packs_to(run.source, unpacked)
    if run.code_sha256 is not None and run.code_sha256 != digest and not (
            ran_readable and run.code_sha256 == sha256_bytes(run.source.encode("utf-8"))):
        return "FAIL", (f"{run.path.name} code_sha256:{run.code_sha256[:12]}... but {script_name} "
                        f"has sha256 {digest[:12]}..." + (" (and its packed source another)" if unpacked else ""))
    what = f"the source packed in {script_name}" if unpacked is not None else script_name
    if run.source == text:
        how = "embeds " + what + " exactly"
    elif ran_readable:
        how = "embeds the readable source of " + what + " (it packs to it)"
    elif run.source.rstrip("\n") == text.rstrip("\n"):
        how = "embeds " + what + " (identical up to trailing newlines)"
    else:
        a, b = run.source.splitlines(), text.splitlines()
        first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        return "FAIL", (f"{run.path.name} embeds a different script than {what}: first difference at "
                        f"line {first + 1} ({len(a)} vs {len(b)} lines)")
    if unpacked is None:
        sha = f"; code_sha256 matches ({digest[:12]}...)" if run.code_sha256 else ""
        return "PASS", f"{run.path.name} {how} ({len(script):,} bytes){sha}"
    ran = ("; code_sha256 is the packed file's: the run executed it" if run.code_sha256 == digest else
           "; code_sha256 is the readable source's: the run executed the same code unpacked" if ran_readable else "")
    return "PASS", f"{run.path.name} {how} ({len(text.encode()):,} packed source bytes, {len(script):,} packed){ran}"
