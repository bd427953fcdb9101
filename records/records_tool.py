#!/usr/bin/env python3
"""Records tool for Parameter Golf submissions: build, check, compare and rank record folders.

A record folder lives under records/track_10min_16mb/ (or records/track_non_record_16mb/), is
named YYYY-MM-DD_Description and holds README.md, submission.json, the training logs and the
train_gpt.py that produced them (plus any requirements.txt).

Commands (each has --help):
  new          build a record folder from run logs (verifies the script against each log)
  validate     check a folder: files, size cap, time limits, script identity, json vs logs,
               and (given the best score) the significance of the improvement
  diff         compare two record folders or two logs: config, metrics, unified script diff
  leaderboard  every record under a root, sorted by score

The log parser reads the logs our train_gpt.py writes (a verbatim-source header, then
`code_sha256:`, `config:KEY=VALUE` and `final_score_exact metric:...` lines) and the logs of
the records published in openai/parameter-golf, whose formats vary. A field a log does not
contain is reported as "not in log", never guessed. See records/README.md.

Import has no side effects; the entry point is main(argv) -> exit code.
"""
from __future__ import annotations

import argparse
import ast
import datetime as _dt
import difflib
import hashlib
import json
import math
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

CAP_BYTES = 16_000_000          # code + compressed model, decimal bytes (challenge rule)
TRAIN_LIMIT_S = 600.0           # training wallclock on 8xH100
EVAL_LIMIT_S = 600.0            # evaluation wallclock, a separate budget
MIN_GAIN_NATS = 0.005           # a new record must beat the best val_loss by this much ...
P_THRESHOLD = 0.01              # ... at this one-sided significance level
SEPARATOR = "=" * 100           # ends the embedded source in baseline-style logs
NOT_IN_LOG = "not in log"
SCORE_TOLERANCE = 0.5e-4 + 1e-12  # a submission.json score must equal the logs to 4 decimals
VOLATILE_KEYS = {"SEED", "RUN_ID", "LOGFILE", "RANK", "LOCAL_RANK", "IS_MAIN_PROCESS"}
LOG_SUFFIXES = (".log", ".txt")
NON_LOG_NAMES = {"requirements.txt", "readme.txt"}
TRACKS = ("10min_16mb", "non_record_16mb")


# ===== 1. LOG MODEL =====

@dataclass
class Metric:
    """One evaluation line such as `final_int6_roundtrip_exact val_loss:... val_bpb:...`."""
    name: str
    val_loss: float | None
    val_bpb: float | None
    eval_time_ms: float | None
    line: str
    lineno: int
    fields: dict = field(default_factory=dict)


@dataclass
class RunLog:
    """Everything the tool knows about one training log; None means "not in log"."""
    path: Path
    fmt: str = "published"            # "ours" once an our-format header line is seen
    source: str | None = None         # the embedded train_gpt.py source, if any
    code_sha256: str | None = None
    run_id: str | None = None
    python_version: str | None = None
    torch_version: str | None = None
    cuda_version: str | None = None
    device_name: str | None = None
    device_count: int | None = None
    world_size: int | None = None
    model_params: int | None = None
    config: dict = field(default_factory=dict)
    config_source: str | None = None
    seed: int | None = None
    seed_source: str | None = None
    train_points: list = field(default_factory=list)   # (step, train_loss)
    val_points: list = field(default_factory=list)     # (step, val_loss, val_bpb)
    last_step: dict | None = None                      # fields of the last step line
    steps: int | None = None
    iterations: int | None = None
    stop_fields: dict | None = None                    # fields of `stopping_early:`
    step_avg_ms: float | None = None
    train_time_ms: float | None = None
    eval_time_ms: float | None = None
    total_eval_time_s: float | None = None             # published `total_eval_time:` line
    code_bytes: int | None = None
    model_bytes: int | None = None
    total_bytes: int | None = None
    metrics: list = field(default_factory=list)
    final_score: Metric | None = None                  # our `final_score_exact` line
    score: Metric | None = None
    eval_mode: str | None = None                       # published `final_eval_mode:` line
    notes: dict = field(default_factory=dict)          # field -> where its value came from

    @property
    def label(self) -> str:
        return f"seed {self.seed}" if self.seed is not None else self.path.name

    def has_content(self) -> bool:
        return bool(self.train_points or self.val_points or self.metrics or self.final_score)


# ===== 2. LINE PARSERS (one small function per field family; unknown lines are ignored) =====

_KV = re.compile(r"([A-Za-z_][\w/.\-]*):\s*(\S+)")
_STEP = re.compile(r"^(?:step:\s*)?(\d+)/(\d+)(?:\s|$)")
_NUM = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def kv_fields(text: str) -> dict:
    """`a:1 b: 2ms` -> {"a": "1", "b": "2ms"}; the first occurrence of a key wins."""
    out: dict = {}
    for key, value in _KV.findall(text):
        out.setdefault(key, value)
    return out


def to_float(value) -> float | None:
    if value is None:
        return None
    m = _NUM.match(str(value))
    return float(m.group(0)) if m else None


def to_ms(value) -> float | None:
    """'8912ms' -> 8912, '1.5s' -> 1500, '0.8m' -> 48000; a bare number has no unit: None."""
    if value is None:
        return None
    m = re.fullmatch(r"([-+]?\d+(?:\.\d+)?)(ms|s|m|min)", str(value))
    if not m:
        return None
    scale = {"ms": 1.0, "s": 1000.0, "m": 60000.0, "min": 60000.0}[m.group(2)]
    return float(m.group(1)) * scale


def _p_hparams(run: RunLog, line: str, st: dict) -> bool:
    """Top-record style dump: `Hyperparameters:` then indented `  key: value` lines."""
    if line.strip() == "Hyperparameters:":
        st["hparams"] = True
        return True
    if st.get("hparams"):
        m = re.match(r"^\s{2,}([A-Za-z_]\w*):\s?(.*)$", line)
        if m:
            run.config[m.group(1).upper()] = m.group(2).strip()
            run.config_source = "log `Hyperparameters:` block"
            return True
        st["hparams"] = False
    return False


def _p_our_header(run: RunLog, line: str, st: dict) -> bool:
    """Our header: code_sha256, run_id, python/torch/cuda, device, config:KEY=VALUE."""
    if line.startswith("config:") and "=" in line:
        key, _, value = line[len("config:"):].partition("=")
        run.config[key.strip()] = value
        run.config_source = "log `config:` lines"
        run.fmt = "ours"
        return True
    m = re.match(r"^code_sha256:([0-9a-f]{64})(?:\s+code_bytes:(\d+))?", line)
    if m:
        run.code_sha256, run.fmt = m.group(1), "ours"
        return True
    m = re.match(r"^run_id:(\S+)$", line)
    if m:
        run.run_id = m.group(1)
        return True
    m = re.match(r"^python:(\S+)\s+torch:(\S+)(?:\s+cuda:(\S+))?", line)
    if m:
        run.python_version, run.torch_version = m.group(1), m.group(2)
        run.cuda_version = m.group(3)
        run.notes["versions"] = "log `python:` line"
        return True
    m = re.match(r"^device:(.+?)\s+count:(\d+)", line)
    if m:
        run.device_name, run.device_count = m.group(1), int(m.group(2))
        run.notes["hardware"] = "log `device:` line"
        return True
    return False


def _p_versions(run: RunLog, line: str, st: dict) -> bool:
    """Baseline style: `Running Python 3.12.3 (...)`, `Running PyTorch 2.9.1+cu128`."""
    m = re.match(r"^Running Python (\S+)", line)
    if m:
        run.python_version = m.group(1)
        run.notes["versions"] = "log `Running Python/PyTorch` lines"
        return True
    m = re.match(r"^Running PyTorch (\S+)", line)
    if m:
        run.torch_version = m.group(1)
        cu = re.search(r"\+cu(\d+)(\d)$", m.group(1))
        if cu and run.cuda_version is None:
            run.cuda_version = f"{cu.group(1)}.{cu.group(2)}"
            run.notes["cuda_version"] = "from the torch build tag"
        return True
    return False


def _p_gpu_row(run: RunLog, line: str, st: dict) -> bool:
    """nvidia-smi GPU rows: `|   0  NVIDIA H100 80GB HBM3          On  | ...`."""
    m = re.match(r"^\|\s+(\d+)\s+(NVIDIA .+?)\s{2,}(?:On|Off)\s+\|", line)
    if m is None:
        return False
    if run.fmt == "ours" and run.device_name:  # our `device:` line already says it
        return True
    gpus = st.setdefault("gpus", {})
    gpus[int(m.group(1))] = m.group(2).strip()
    run.device_name, run.device_count = m.group(2).strip(), len(gpus)
    run.notes["hardware"] = "nvidia-smi GPU rows in the log"
    return True


def _p_step(run: RunLog, line: str, st: dict) -> bool:
    """`step:N/T key:val ...` (baseline, ours) and `N/T key: val ...` (top record)."""
    m = _STEP.match(line)
    if not m:
        return False
    step, total = int(m.group(1)), int(m.group(2))
    f = kv_fields(line[m.end(0):])
    run.iterations = total
    if "train_loss" in f and to_float(f["train_loss"]) is not None:
        run.train_points.append((step, to_float(f["train_loss"])))
    if "val_loss" in f:
        run.val_points.append((step, to_float(f["val_loss"]), to_float(f.get("val_bpb"))))
    if run.last_step is None or step >= run.last_step["step"]:
        run.last_step = dict(f, step=step)
    return True


def _p_stop(run: RunLog, line: str, st: dict) -> bool:
    if not line.startswith("stopping_early:"):
        return False
    f = kv_fields(line)
    sm = re.match(r"(\d+)/(\d+)", f.get("step", ""))
    run.stop_fields = {"train_time_ms": to_ms(f.get("train_time")),
                       "step": int(sm.group(1)) if sm else None, "reason": f.get("stopping_early")}
    return True


def _p_sizes(run: RunLog, line: str, st: dict) -> bool:
    """Ours: `code_bytes:N model_bytes:N total_bytes:N`; published: `Total submission size
    <fmt>: N bytes`, `Serialized model <fmt>: N bytes`, `Code size[ (compressed)]: N bytes`."""
    m = re.match(r"^code_bytes:(\d+)\s+model_bytes:(\d+)\s+total_bytes:(\d+)", line)
    if m:
        run.code_bytes, run.model_bytes, run.total_bytes = map(int, m.groups())
        for k in ("code_bytes", "model_bytes", "total_bytes"):
            run.notes[k] = "log `code_bytes: model_bytes: total_bytes:` line"
        return True
    m = re.match(r"^Total submission size (\S.*?):\s*(\d+) bytes", line)
    if m:
        run.total_bytes = int(m.group(2))
        run.notes["total_bytes"] = f"log `Total submission size {m.group(1)}:` line"
        return True
    m = re.match(r"^Serialized model (\S.*?):\s*(\d+) bytes", line)
    if m:
        run.model_bytes = int(m.group(2))
        run.notes["model_bytes"] = f"log `Serialized model {m.group(1)}:` line"
        return True
    m = re.match(r"^Code size(?: \((compressed|uncompressed)\))?:\s*(\d+) bytes", line)
    if m:
        kind = m.group(1)  # the counted code is the compressed size when a log gives both
        have_compressed = "(compressed)" in run.notes.get("code_bytes", "")
        if kind == "compressed" or (kind is None and not have_compressed) or run.code_bytes is None:
            run.code_bytes = int(m.group(2))
            run.notes["code_bytes"] = f"log `Code size{' (' + kind + ')' if kind else ''}:` line"
        return True
    return line.startswith(("Total submission size:", "Serialized model:"))  # raw sizes: not the artifact


def _p_totals(run: RunLog, line: str, st: dict) -> bool:
    """Ours: `train_time_total_ms:N eval_time_total_ms:N`; published: `total_eval_time:508.8s`."""
    if line.startswith("train_time_total_ms:"):
        f = kv_fields(line)
        run.train_time_ms = to_float(f.get("train_time_total_ms"))
        run.eval_time_ms = to_float(f.get("eval_time_total_ms"))
        run.notes["train_time"] = run.notes["eval_time"] = "log `train_time_total_ms: eval_time_total_ms:` line"
        if "steps" in f:
            run.steps = int(to_float(f["steps"]))
            run.notes["steps"] = "log `train_time_total_ms: ... steps:` line"
        return True
    m = re.match(r"^total_eval_time:\s*([\d.]+)s\s*$", line)
    if m:
        run.total_eval_time_s = float(m.group(1))
        return True
    return False


def _p_final_score(run: RunLog, line: str, st: dict) -> bool:
    if not line.startswith("final_score_exact "):
        return False
    f = kv_fields(line)
    run.final_score = Metric(f.get("metric", "?"), to_float(f.get("val_loss")), to_float(f.get("val_bpb")),
                             None, line, st["lineno"], f)
    run.fmt = "ours"
    return True


def _p_misc(run: RunLog, line: str, st: dict) -> bool:
    m = re.match(r"^model_params:\s*(\d+)", line)
    if m:
        run.model_params = int(m.group(1))
        return True
    m = re.match(r"^world_size:\s*(\d+)", line)
    if m:
        run.world_size = int(m.group(1))
        return True
    m = re.match(r"^seed:\s*(\d+)\s*$", line)
    if m:
        run.seed, run.seed_source = int(m.group(1)), "log `seed:` line"
        return True
    if line.startswith("final_eval_mode:"):
        run.eval_mode = line.strip()
        return True
    return False


def _p_metric(run: RunLog, line: str, st: dict) -> bool:
    """Any `<name words> [k:v ...] val_loss:X val_bpb:Y [eval_time:Nms]` line."""
    tokens = line.split()
    head = []
    for tok in tokens:
        if ":" in tok:
            break
        head.append(tok)
    if not head or len(head) == len(tokens) or re.fullmatch(r"\d+/\d+", head[0]):
        return False
    f = kv_fields(" ".join(tokens[len(head):]))
    if "val_loss" not in f or "val_bpb" not in f:
        return False
    run.metrics.append(Metric(" ".join(head), to_float(f["val_loss"]), to_float(f["val_bpb"]),
                              to_ms(f.get("eval_time")), line, st["lineno"], f))
    return True


LINE_PARSERS = (_p_hparams, _p_our_header, _p_versions, _p_gpu_row, _p_final_score, _p_step, _p_stop,
                _p_sizes, _p_totals, _p_misc, _p_metric)


# ===== 3. LOG ASSEMBLY =====

def looks_like_python(text: str) -> bool:
    try:
        ast.parse(text)
        return bool(re.search(r"^(?:import|from|def|class)\s", text, re.M))
    except (SyntaxError, ValueError):
        # newer syntax than this interpreter: still source if it reads like a module
        return len(re.findall(r"^(?:import \w|from \w+ import|def \w+\(|class \w+)", text, re.M)) >= 3


def split_embedded_source(text: str) -> tuple[str | None, str, int]:
    """(source, body, body_first_lineno). Baseline-style logs print the source, then a line of
    100 '='; print() adds one newline after the source, which is removed here."""
    seps = list(re.finditer(r"(?m)^" + SEPARATOR + r"[ \t]*$", text))
    if not seps:
        return None, text, 1
    # ours: the separator right before `code_sha256:` (robust to a 100-'=' line inside the source)
    m = next((s for s in seps if text.startswith("code_sha256:", s.end() + 1)), seps[0])
    head = text[:m.start()]
    candidate = head[:-1] if head.endswith("\n") else head
    body_start = m.end() + 1
    lineno = text.count("\n", 0, body_start) + 1
    if candidate.strip() and looks_like_python(candidate):
        return candidate, text[body_start:], lineno
    return None, text, 1


_PRE_QUANT = ("prequant", "pre_quant", "pre-quant", "post_ema", "post-ema")


def metric_family(name: str) -> str:
    low = name.lower()
    if re.search(r"(?<!no_)ttt", low):
        return "ttt"
    if "sliding" in low:
        return "sliding"
    return "roundtrip"


def pick_score(run: RunLog) -> tuple[Metric | None, str]:
    """Ours: the `final_score_exact metric:<name>` line. Published: priority TTT > sliding
    window > roundtrip; within the best family present, the last `_exact` line (or the last
    line of the family when it has no `_exact` line). Pre-quant diagnostics never score."""
    if run.final_score is not None:
        return run.final_score, f"`final_score_exact metric:{run.final_score.name}` line {run.final_score.lineno}"
    candidates = [m for m in run.metrics if not any(k in m.name.lower() for k in _PRE_QUANT)]
    for fam in ("ttt", "sliding", "roundtrip"):
        fam_lines = [m for m in candidates if metric_family(m.name) == fam]
        if fam_lines:
            exact = [m for m in fam_lines if m.name.endswith("_exact")]
            chosen = (exact or fam_lines)[-1]
            how = f"priority TTT > sliding > roundtrip: last {fam}{' _exact' if exact else ''} line {chosen.lineno}"
            if run.eval_mode and fam != "sliding" and "sliding" in run.eval_mode:
                how += f" (label may not describe the eval: log says `{run.eval_mode}`)"
            return chosen, how
    return None, "no final metric line in log"


def finalize(run: RunLog) -> RunLog:
    run.score, run.notes["score"] = pick_score(run)
    if run.steps is None:
        if run.stop_fields and run.stop_fields.get("step") is not None:
            run.steps, run.notes["steps"] = run.stop_fields["step"], "log `stopping_early:` line"
        elif run.last_step is not None:
            run.steps, run.notes["steps"] = run.last_step["step"], "last step line"
    if run.train_time_ms is None:
        if run.stop_fields and run.stop_fields.get("train_time_ms") is not None:
            run.train_time_ms, run.notes["train_time"] = run.stop_fields["train_time_ms"], "log `stopping_early:` line"
        elif run.last_step and to_ms(run.last_step.get("train_time")) is not None:
            run.train_time_ms = to_ms(run.last_step["train_time"])
            run.notes["train_time"] = f"last step line (train_time:{run.last_step['train_time']})"
    if run.last_step and to_ms(run.last_step.get("step_avg")) is not None:
        run.step_avg_ms, run.notes["step_avg"] = to_ms(run.last_step["step_avg"]), "last step line"
    elif run.train_time_ms is not None and run.steps:
        run.step_avg_ms = run.train_time_ms / run.steps
        run.notes["step_avg"] = "derived: train time / steps (no step_avg in log)"
    if run.eval_time_ms is None:
        if run.total_eval_time_s is not None:
            run.eval_time_ms = 1000.0 * run.total_eval_time_s
            run.notes["eval_time"] = "log `total_eval_time:` line"
        else:
            timed = [m for m in run.metrics if m.eval_time_ms is not None]
            if timed:
                run.eval_time_ms = sum(m.eval_time_ms for m in timed)
                run.notes["eval_time"] = "sum of eval_time: of " + ", ".join(m.name for m in timed)
    if run.total_bytes is None and run.code_bytes is not None and run.model_bytes is not None:
        run.total_bytes = run.code_bytes + run.model_bytes
        run.notes["total_bytes"] = "derived: code bytes + model bytes"
    if run.seed is None and "SEED" in run.config:
        try:
            run.seed, run.seed_source = int(run.config["SEED"]), run.config_source
        except ValueError:
            pass
    if run.seed is None:
        m = re.search(r"seed[_\-]?(\d+)", run.path.name, re.I)
        if m:
            run.seed, run.seed_source = int(m.group(1)), "file name"
    return run


def parse_log_text(text: str, path: Path) -> RunLog:
    run = RunLog(path=Path(path))
    run.source, body, first = split_embedded_source(text)
    st: dict = {}
    for i, raw in enumerate(body.splitlines()):
        st["lineno"] = first + i
        line = raw.rstrip("\r")
        for parser in LINE_PARSERS:
            if parser(run, line, st):
                break
    return finalize(run)


def parse_log(path) -> RunLog:
    return parse_log_text(Path(path).read_text(encoding="utf-8", errors="replace"), Path(path))


def find_logs(folder: Path) -> list[RunLog]:
    """Log files directly in a folder: *.log / *.txt with step or metric lines."""
    runs = []
    for p in sorted(Path(folder).iterdir()):
        if p.is_file() and p.suffix in LOG_SUFFIXES and p.name.lower() not in NON_LOG_NAMES:
            run = parse_log(p)
            if run.has_content():
                runs.append(run)
    return runs


# ===== 4. SCRIPT DEFAULTS (ast) AND SCRIPT VERIFICATION =====

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


# ===== 5. STATISTICS (Student t without scipy) =====

def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    lbt = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(lbt) * _betacf(a, b, x) / a
    return 1.0 - math.exp(lbt) * _betacf(b, a, 1.0 - x) / b


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with df (possibly fractional) degrees of freedom."""
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return tail if t > 0 else 1.0 - tail


def mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs)


def std(xs, ddof: int = 1) -> float:
    xs = list(xs)
    if len(xs) <= ddof:
        return float("nan")
    m = mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - ddof))


@dataclass
class SigTest:
    test: str
    ours_mean: float
    best_mean: float
    margin: float
    t: float
    df: float
    p: float

    @property
    def gain(self) -> float:
        return self.best_mean - self.ours_mean

    def passed(self, alpha: float = P_THRESHOLD) -> bool:
        return self.gain >= self.margin and self.p < alpha


def welch_test(ours, best, margin: float = MIN_GAIN_NATS) -> SigTest:
    """One-sided Welch t-test. H0: mean(ours) >= mean(best) - margin; H1: mean(ours) <
    mean(best) - margin. t = (mean(best) - margin - mean(ours)) / sqrt(s1^2/n1 + s2^2/n2),
    Welch-Satterthwaite df, p = P(T_df > t); sample variances (ddof=1)."""
    ours, best = list(ours), list(best)
    if len(ours) < 2 or len(best) < 2:
        raise ValueError("Welch's test needs at least 2 values on each side")
    v1, v2 = std(ours) ** 2 / len(ours), std(best) ** 2 / len(best)
    diff = mean(best) - margin - mean(ours)
    se = math.sqrt(v1 + v2)
    if se == 0.0:
        t, df = (math.inf if diff > 0 else -math.inf), float(len(ours) + len(best) - 2)
    else:
        t = diff / se
        den = (v1 * v1 / (len(ours) - 1) if v1 else 0.0) + (v2 * v2 / (len(best) - 1) if v2 else 0.0)
        df = (v1 + v2) ** 2 / den
    return SigTest("one-sided Welch t-test (ours vs best record's per-seed values)",
                   mean(ours), mean(best), margin, t, df, t_sf(t, df))


def one_sample_test(ours, best_value: float, margin: float = MIN_GAIN_NATS) -> SigTest:
    """One-sided one-sample t-test of mean(ours) < best_value - margin; df = n - 1."""
    ours = list(ours)
    if len(ours) < 2:
        raise ValueError("the one-sample test needs at least 2 seeds")
    diff = best_value - margin - mean(ours)
    se = std(ours) / math.sqrt(len(ours))
    t = diff / se if se > 0 else (math.inf if diff > 0 else -math.inf)
    df = float(len(ours) - 1)
    return SigTest("one-sided one-sample t-test (ours vs a single best value)",
                   mean(ours), best_value, margin, t, df, t_sf(t, df))


# ===== 6. SHARED HELPERS =====

def fmt_bytes(n) -> str:
    return NOT_IN_LOG if n is None else f"{int(n):,}"


def fmt_num(x, digits: int = 8) -> str:
    return NOT_IN_LOG if x is None else f"{x:.{digits}f}"


def fmt_s(ms) -> str:
    return NOT_IN_LOG if ms is None else f"{ms / 1000.0:.3f} s"


def score_values(runs, metric: str = "val_loss") -> list[float]:
    return [getattr(r.score, metric) for r in runs if r.score is not None and getattr(r.score, metric) is not None]


def json_decimals(value) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, int):
        return 0
    text = repr(value)
    if "e" in text or "E" in text:
        return 12
    return len(text.split(".")[1]) if "." in text else 0


def agrees(json_value, log_value) -> bool:
    """A json number agrees with a log value if it is the log value rounded to the json
    number's own decimal places (published files round; ours write full precision)."""
    if log_value is None or json_value is None:
        return False
    d = json_decimals(json_value)
    if d is None:
        return str(json_value) == str(log_value)
    return abs(float(json_value) - float(log_value)) <= 0.5 * 10.0 ** (-d) + 1e-12


def _show(value) -> str:
    return f"{value:.8f}" if isinstance(value, float) else repr(value)


def seed_key(run: RunLog) -> str:
    return str(run.seed) if run.seed is not None else run.path.stem


def script_in_folder(folder: Path) -> Path | None:
    p = Path(folder) / "train_gpt.py"
    if p.is_file():
        return p
    others = sorted(Path(folder).glob("*.py"))
    return others[0] if len(others) == 1 else None


# ===== 7. COMMAND: new =====

def summarize_runs(runs: list[RunLog]) -> dict:
    """Numbers that go into submission.json (and that validate recomputes)."""
    losses, bpbs = score_values(runs, "val_loss"), score_values(runs, "val_bpb")
    per_seed = {}
    for r in runs:
        per_seed[seed_key(r)] = {
            "val_loss": r.score.val_loss if r.score else None,
            "val_bpb": r.score.val_bpb if r.score else None,
            "artifact_bytes": r.total_bytes,
            "steps": r.steps,
            "step_avg_ms": None if r.step_avg_ms is None else round(r.step_avg_ms, 2),
            "train_time_s": None if r.train_time_ms is None else round(r.train_time_ms / 1000.0, 3),
            "eval_time_s": None if r.eval_time_ms is None else round(r.eval_time_ms / 1000.0, 3),
        }
    totals = [r.total_bytes for r in runs if r.total_bytes is not None]
    codes = [r.code_bytes for r in runs if r.code_bytes is not None]
    steps = [r.steps for r in runs if r.steps is not None]
    avgs = [r.step_avg_ms for r in runs if r.step_avg_ms is not None]
    return {
        "val_loss": mean(losses) if losses else None,
        "val_bpb": mean(bpbs) if bpbs else None,
        "val_loss_std": std(losses) if len(losses) > 1 else None,
        "val_bpb_std": std(bpbs) if len(bpbs) > 1 else None,
        "seed_results": per_seed,
        "bytes_total": max(totals) if totals else None,
        "artifact_bytes_mean": round(mean(totals)) if totals else None,
        "bytes_code": max(codes) if codes else None,
        "train_steps_mean": round(mean(steps), 2) if steps else None,
        "step_avg_ms_mean": round(mean(avgs), 2) if avgs else None,
    }


def check_same_config(runs: list[RunLog]) -> list[str]:
    """Keys whose value differs between the runs (ignoring seed/run-id style keys)."""
    keys = sorted({k for r in runs for k in r.config} - VOLATILE_KEYS)
    return [k for k in keys if len({r.config.get(k, "<absent>") for r in runs}) > 1]


def build_submission(runs: list[RunLog], args, script_bytes: bytes, log_names: list[str]) -> dict:
    s = summarize_runs(runs)
    first = runs[0]
    hardware = (f"{first.device_count}x {first.device_name}" if first.device_name else NOT_IN_LOG)
    sub = {
        "author": args.author, "github_id": args.github_id, "name": args.name, "blurb": args.blurb or "",
        "date": args.date, "track": args.track,
        "val_loss": s["val_loss"], "val_bpb": s["val_bpb"],
        "val_loss_std": s["val_loss_std"], "val_bpb_std": s["val_bpb_std"], "std_ddof": 1,
        "seeds": [r.seed if r.seed is not None else seed_key(r) for r in runs],
        "seed_results": s["seed_results"],
        "scored_metric": first.score.name if first.score else None,
        "bytes_total": s["bytes_total"], "artifact_bytes_max": s["bytes_total"],
        "artifact_bytes_mean": s["artifact_bytes_mean"], "bytes_code": s["bytes_code"],
        "train_steps_mean": s["train_steps_mean"], "step_avg_ms_mean": s["step_avg_ms_mean"],
        "model_params": first.model_params,
        "hardware": hardware, "python_version": first.python_version or NOT_IN_LOG,
        "pytorch_version": first.torch_version or NOT_IN_LOG, "cuda_version": first.cuda_version or NOT_IN_LOG,
        "code_sha256": sha256_bytes(script_bytes), "logs": log_names,
    }
    sig = significance_from_args(args, runs)
    if isinstance(sig, SigTest):
        sub["comparison_best_value"] = sig.best_mean
        sub["delta_vs_best"] = sig.ours_mean - sig.best_mean
        sub["significance_test"] = sig.test
        sub["p_value"] = sig.p
    sub["generated_by"] = "records/records_tool.py new"
    return sub


def write_readme(folder: Path, runs: list[RunLog], sub: dict, script_text: str) -> None:
    """README.md skeleton: headline, results table, reproduce command, resolved config."""
    rows = []
    for r in runs:
        sr = sub["seed_results"][seed_key(r)]
        rows.append(f"| {seed_key(r)} | {fmt_num(sr['val_loss'])} | {fmt_num(sr['val_bpb'])} | "
                    f"{fmt_bytes(sr['artifact_bytes'])} | {sr['steps'] if sr['steps'] is not None else NOT_IN_LOG} | "
                    f"{sr['step_avg_ms'] if sr['step_avg_ms'] is not None else NOT_IN_LOG} | "
                    f"{sr['train_time_s'] if sr['train_time_s'] is not None else NOT_IN_LOG} | "
                    f"{sr['eval_time_s'] if sr['eval_time_s'] is not None else NOT_IN_LOG} |")
    std_txt = "n/a (one seed)" if sub["val_bpb_std"] is None else f"{sub['val_bpb_std']:.8f}"
    loss_std_txt = "n/a" if sub["val_loss_std"] is None else f"{sub['val_loss_std']:.8f}"
    rows.append(f"| **mean** | **{fmt_num(sub['val_loss'])}** | **{fmt_num(sub['val_bpb'])}** | "
                f"max {fmt_bytes(sub['bytes_total'])} | {sub['train_steps_mean']} | {sub['step_avg_ms_mean']} | | |")
    first = runs[0]
    defaults = env_defaults(script_text)
    overrides = []
    for k, v in sorted(first.config.items()):
        if k in VOLATILE_KEYS or k not in defaults or defaults[k].startswith("<"):
            continue
        if norm_value(v) != norm_value(defaults[k]):
            overrides.append(f"{k}={v}")
    config_rows = "\n".join(f"| {k} | `{v}` |" for k, v in sorted(first.config.items())) or "| (no config in log) | |"
    seeds = " ".join(seed_key(r) for r in runs)
    sig_line = ""
    if "p_value" in sub:
        sig_line = (f"\nAgainst the best score {sub['comparison_best_value']:.8f}: delta {sub['delta_vs_best']:+.8f}, "
                    f"{sub['significance_test']}, p = {sub['p_value']:.3g}.\n")
    text = f"""# {sub['name']}

**val_bpb: {fmt_num(sub['val_bpb'])}** (mean of {len(runs)} seed(s), std {std_txt}) | **val_loss: {fmt_num(sub['val_loss'])}** (std {loss_std_txt}) | **bytes_total: {fmt_bytes(sub['bytes_total'])}** (max over seeds) | {sub['hardware']}

Scored metric: `{sub['scored_metric']}` (the `final_score_exact` line of each log). Std is the sample std (ddof=1).
{sig_line}
{sub['blurb'] or 'TODO: one-paragraph summary of the submission.'}

## Results

| seed | val_loss | val_bpb | artifact bytes | steps | step_avg ms | train s | eval s |
|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

Versions: Python {sub['python_version']}, PyTorch {sub['pytorch_version']}, CUDA {sub['cuda_version']}. Code bytes: {fmt_bytes(sub['bytes_code'])}. train_gpt.py sha256 `{sub['code_sha256']}`.

![training and validation curves](curves.png)

## What changed and why

TODO: the method, each change with its measured effect (ablations), and what did not work.

## Reproducing

From inside this folder (environment variables that differ from the script's defaults):

```bash
for SEED in {seeds}; do
  {' '.join(overrides)}{' ' if overrides else ''}SEED=$SEED torchrun --standalone --nproc_per_node=8 train_gpt.py
done
```

## Resolved configuration

From the `config:` lines of `{sub['logs'][0]}` (identical across seeds except {', '.join(sorted(VOLATILE_KEYS & set(first.config))) or 'nothing'}).

| key | value |
|---|---|
{config_rows}

## Files

- `train_gpt.py`: the exact script that produced the logs (verified against each log's embedded source and code_sha256).
{chr(10).join(f'- `{n}`: training log' for n in sub['logs'])}
- `submission.json`: metadata generated from the logs by `records/records_tool.py new`.
- `curves.png`: training loss and validation bpb of every seed.
"""
    (folder / "README.md").write_text(text, encoding="utf-8")


def plot_curves(runs: list[RunLog], out: Path) -> bool:
    """Training loss and validation bpb against step for every seed (matplotlib, Agg)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for r in runs:
        if r.train_points:
            xs, ys = zip(*r.train_points)
            ax1.plot(xs, ys, label=r.label, lw=1)
        vals = [(s, b) for s, _, b in r.val_points if b is not None]
        if vals:
            xs, ys = zip(*vals)
            ax2.plot(xs, ys, marker="o", ms=3, label=r.label)
        if r.score is not None and r.score.val_bpb is not None and r.steps is not None:
            ax2.scatter([r.steps], [r.score.val_bpb], marker="*", s=80, zorder=3)
    ax1.set(xlabel="step", ylabel="train loss (nats)", title="training loss")
    ax2.set(xlabel="step", ylabel="val bpb", title="validation bpb (star: scored metric)")
    last = max([s for r in runs for s, *_ in r.train_points + r.val_points] or [0])
    tails = ([y for r in runs for s, y in r.train_points if s >= 0.1 * last],
             [b for r in runs for s, _, b in r.val_points if b is not None and s >= 0.1 * last]
             + [r.score.val_bpb for r in runs if r.score is not None and r.score.val_bpb is not None])
    for ax, ys in zip((ax1, ax2), tails):
        if len(ys) > 1:  # zoom on the last 90% of steps: the first points would flatten the rest
            pad = 0.05 * (max(ys) - min(ys)) + 1e-3
            ax.set_ylim(min(ys) - pad, max(ys) + pad)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return True


def cmd_new(args) -> int:
    script_path = Path(args.script)
    if not script_path.is_file():
        return _refuse(f"script {script_path} not found (give --script)")
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", args.date) or not re.fullmatch(r"[\w.+-]+", args.description):
        return _refuse(f"--date {args.date!r} must be YYYY-MM-DD and --description {args.description!r} one word "
                       "of letters, digits, _ . + - (the folder is named DATE_DESCRIPTION)")
    missing = [p for p in [*args.logs, args.requirements] if p and not Path(p).is_file()]
    if missing:
        return _refuse(f"not found: {', '.join(map(str, missing))}")
    script = script_path.read_bytes()
    runs = [parse_log(p) for p in args.logs]
    problems = []
    for r in runs:
        status, msg = verify_script(r, script, script_path.name)
        if status != "PASS":
            problems.append(msg)
        if r.score is None:
            problems.append(f"{r.path.name}: no final metric line (did the run finish?)")
    seeds = [seed_key(r) for r in runs]
    if len(set(seeds)) != len(seeds):
        problems.append(f"duplicate seeds among the logs: {seeds}")
    diff_keys = check_same_config(runs)
    if diff_keys and not args.allow_config_diff:
        problems.append("the logs were run with different configs (" + ", ".join(diff_keys)
                        + "); a multi-seed mean must come from one config (--allow-config-diff to override)")
    if problems:
        return _refuse("\n  ".join(["refusing to build the record:"] + problems))
    folder = Path(args.out) if args.out else (Path(args.records_root) / f"track_{args.track}"
                                               / f"{args.date}_{args.description}")
    if folder.exists() and any(folder.iterdir()) and not args.force:
        return _refuse(f"{folder} exists and is not empty (use --force to overwrite)")
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(script_path, folder / "train_gpt.py")
    names = []
    for r in runs:
        name = f"train_seed{r.seed}.log" if r.seed is not None else r.path.name
        shutil.copyfile(r.path, folder / name)
        names.append(name)
    if args.requirements:
        shutil.copyfile(args.requirements, folder / "requirements.txt")
    sub = build_submission(runs, args, script, names)
    (folder / "submission.json").write_text(json.dumps(sub, indent=2) + "\n", encoding="utf-8")
    write_readme(folder, runs, sub, script.decode("utf-8"))
    plotted = plot_curves(runs, folder / "curves.png")
    print(f"created {folder}")
    for n in ["train_gpt.py", *names, "submission.json", "README.md"] + (["requirements.txt"] if args.requirements else []):
        print(f"  {n}")
    print("  curves.png" if plotted else "  (no curves.png: matplotlib is not installed)")
    print(f"val_bpb mean {fmt_num(sub['val_bpb'])}  val_loss mean {fmt_num(sub['val_loss'])}  "
          f"bytes_total {fmt_bytes(sub['bytes_total'])}  seeds {', '.join(map(str, sub['seeds']))}")
    sig = significance_from_args(args, runs)
    if isinstance(sig, SigTest):
        print(f"significance: gain {sig.gain:+.6f} (need >= {sig.margin:.6f}), {sig.test}, p = {sig.p:.3g}")
    elif isinstance(sig, str):
        print(f"WARNING significance not computed: {sig}")
    for r in runs:
        if r.total_bytes is not None and r.total_bytes > CAP_BYTES:
            print(f"WARNING {r.label}: total {r.total_bytes:,} bytes is over the {CAP_BYTES:,}-byte cap")
        if r.train_time_ms is not None and r.train_time_ms > 1000 * TRAIN_LIMIT_S:
            print(f"WARNING {r.label}: training took {fmt_s(r.train_time_ms)} (limit {TRAIN_LIMIT_S:.0f} s)")
    print(f"next: python records/records_tool.py validate {folder}")
    return 0


def _refuse(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 2


# ===== 8. COMMAND: validate =====

class Report:
    """Collects PASS / FAIL / UNVERIFIED / SKIP / INFO lines; UNVERIFIED fails unless allowed."""

    def __init__(self, allow_unverified: bool = False):
        self.lines: list[tuple[str, str]] = []
        self.allow_unverified = allow_unverified

    def add(self, status: str, msg: str) -> None:
        self.lines.append((status, msg))
        print(f"{status:<10} {msg}")

    def failed(self) -> bool:
        bad = {"FAIL"} | (set() if self.allow_unverified else {"UNVERIFIED"})
        return any(s in bad for s, _ in self.lines)

    def summary(self) -> int:
        n_fail = sum(s == "FAIL" for s, _ in self.lines)
        n_unv = sum(s == "UNVERIFIED" for s, _ in self.lines)
        verdict = "FAIL" if self.failed() else "PASS"
        extra = f" ({n_fail} failed, {n_unv} unverified" + (", unverified allowed" if self.allow_unverified else "") + ")"
        print(f"RESULT: {verdict}{extra}")
        return 1 if self.failed() else 0


def check_files(folder: Path, rep: Report) -> tuple[list[RunLog], Path | None]:
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}_.+", folder.name):
        rep.add("FAIL", f"folder name {folder.name!r} is not YYYY-MM-DD_Description")
    missing = [n for n in ("README.md", "submission.json", "train_gpt.py") if not (folder / n).is_file()]
    runs = find_logs(folder)
    script = folder / "train_gpt.py"
    if missing:
        others = [p.name for p in sorted(folder.glob("*.py")) if p.name != "train_gpt.py"]
        hint = f" (other scripts: {', '.join(others)})" if "train_gpt.py" in missing and others else ""
        rep.add("FAIL", f"files: missing {', '.join(missing)}{hint}")
    if not runs:
        rep.add("FAIL", "files: no training log (*.log / *.txt with step or metric lines)")
    if not missing and runs:
        rep.add("PASS", f"files: README.md, submission.json, train_gpt.py, {len(runs)} log(s) "
                        f"({', '.join(r.path.name for r in runs)})")
    if (folder / "README.md").is_file() and not (folder / "README.md").read_text(errors="replace").strip():
        rep.add("FAIL", "README.md is empty")
    return runs, (script if script.is_file() else None)


def check_sizes(runs: list[RunLog], script: Path | None, rep: Report) -> None:
    for r in runs:
        if r.total_bytes is None:
            rep.add("UNVERIFIED", f"size {r.label}: total bytes {NOT_IN_LOG} ({r.path.name})")
        elif r.total_bytes <= CAP_BYTES:
            rep.add("PASS", f"size {r.label}: total {r.total_bytes:,} <= {CAP_BYTES:,} bytes ({r.notes.get('total_bytes')})")
        else:
            rep.add("FAIL", f"size {r.label}: total {r.total_bytes:,} > {CAP_BYTES:,} bytes ({r.notes.get('total_bytes')})")
    if script is None:
        return
    file_bytes = script.stat().st_size
    same = [r for r in runs if r.code_bytes == file_bytes]
    if same:
        rep.add("PASS", f"counted code: {', '.join(r.label for r in same)} count{'s' if len(same) == 1 else ''} "
                        f"{file_bytes:,} code bytes = the size of train_gpt.py")
    for r in runs:
        if r.code_bytes is None or r.code_bytes == file_bytes:
            continue
        if r.model_bytes is None:
            rep.add("UNVERIFIED", f"counted code {r.label}: log counts {r.code_bytes:,} code bytes but train_gpt.py is "
                                  f"{file_bytes:,} bytes, and the model bytes are {NOT_IN_LOG}")
            continue
        total = r.model_bytes + file_bytes
        status = "PASS" if total <= CAP_BYTES else "FAIL"
        rep.add(status, f"counted code {r.label}: log counts {r.code_bytes:,} code bytes, train_gpt.py is {file_bytes:,}; "
                        f"model {r.model_bytes:,} + file {file_bytes:,} = {total:,} "
                        f"{'<=' if status == 'PASS' else '>'} {CAP_BYTES:,}")


def check_times(runs: list[RunLog], rep: Report, grace_steps: float, record_track: bool = True) -> None:
    """Training and evaluation wallclock; on the non-record track they are reported as INFO."""
    if not record_track:
        for r in runs:
            rep.add("INFO", f"time {r.label}: train {fmt_s(r.train_time_ms)}, eval {fmt_s(r.eval_time_ms)} "
                            "(non-record track: no time limit checked)")
        return
    for r in runs:
        if r.train_time_ms is None:
            rep.add("UNVERIFIED", f"train time {r.label}: {NOT_IN_LOG}")
        else:
            grace = grace_steps * (r.step_avg_ms or 0.0)
            limit = 1000 * TRAIN_LIMIT_S + grace
            ok = r.train_time_ms <= limit
            note = ""
            if ok and r.train_time_ms > 1000 * TRAIN_LIMIT_S:
                note = (f"; over by {r.train_time_ms - 1000 * TRAIN_LIMIT_S:.0f} ms, within the grace of "
                        f"{grace_steps:g} step(s) = {grace:.0f} ms (the cap is checked at step boundaries)")
            rep.add("PASS" if ok else "FAIL", f"train time {r.label}: {fmt_s(r.train_time_ms)} "
                    f"{'<=' if ok else '>'} {TRAIN_LIMIT_S:.0f} s ({r.notes.get('train_time')}{note})")
        if r.eval_time_ms is None:
            rep.add("UNVERIFIED", f"eval time {r.label}: {NOT_IN_LOG}")
        else:
            ok = r.eval_time_ms <= 1000 * EVAL_LIMIT_S
            rep.add("PASS" if ok else "FAIL", f"eval time {r.label}: {fmt_s(r.eval_time_ms)} "
                    f"{'<=' if ok else '>'} {EVAL_LIMIT_S:.0f} s ({r.notes.get('eval_time')})")


def check_scripts(runs: list[RunLog], script: Path | None, rep: Report) -> None:
    if script is None:
        rep.add("FAIL", "script: no train_gpt.py to verify against the logs")
        return
    data = script.read_bytes()
    for r in runs:
        status, msg = verify_script(r, data)
        rep.add(status, f"script {r.label}: {msg}")


def check_run_setup(runs: list[RunLog], rep: Report, record_track: bool) -> None:
    """Full validation split and the 8xH100 hardware of the 10-minute track."""
    for r in runs:
        partial = r.config.get("VAL_MAX_TOKENS")
        if partial is not None and norm_value(partial) not in (0.0, "0"):
            rep.add("FAIL", f"val split {r.label}: VAL_MAX_TOKENS={partial}: scored on part of the validation split, "
                            "not comparable to full-split scores")
        if not record_track:
            continue
        if r.device_name is None:
            rep.add("UNVERIFIED", f"hardware {r.label}: {NOT_IN_LOG}")
        else:
            ok = "H100" in r.device_name and r.device_count == 8
            rep.add("PASS" if ok else "FAIL", f"hardware {r.label}: {r.device_count}x {r.device_name} "
                    f"({'8xH100 as the track requires' if ok else 'the 10-minute track is timed on 8xH100'})")


def check_scores_and_configs(runs: list[RunLog], rep: Report) -> None:
    for r in runs:
        if r.score is None:
            rep.add("FAIL", f"score {r.label}: no final metric line in {r.path.name}")
        else:
            rep.add("PASS", f"score {r.label}: val_loss {fmt_num(r.score.val_loss)} val_bpb {fmt_num(r.score.val_bpb)} "
                            f"from `{r.score.name}` ({r.notes['score']})")
    seeds = [r.seed for r in runs]
    if len(runs) > 1 and None not in seeds and len(set(seeds)) != len(seeds):
        rep.add("FAIL", f"seeds: duplicates among the logs {seeds}")
    if len(runs) > 1:
        if all(r.config for r in runs):
            diff = check_same_config(runs)
            rep.add("FAIL" if diff else "PASS", "config: " + (f"differs between logs in {', '.join(diff)}" if diff else
                    "identical across logs (ignoring SEED, RUN_ID and rank/log-file keys)"))
        else:
            rep.add("SKIP", "config: not every log records its config; cannot compare across seeds")


def check_submission(folder: Path, runs: list[RunLog], rep: Report) -> None:
    path = folder / "submission.json"
    if not path.is_file():
        return
    try:
        sub = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        rep.add("FAIL", f"submission.json: invalid JSON ({e})")
        return
    s = summarize_runs(runs)
    by_seed = {seed_key(r): r for r in runs}
    bad, unverified, checked = [], [], 0
    for key in ("name", "github_id", "val_bpb"):
        if key not in sub:
            bad.append(f"missing required field {key!r}")

    def cmp(label: str, json_value, log_value, alternatives=()):
        nonlocal checked
        if log_value is None:
            unverified.append(f"{label} ({NOT_IN_LOG})")
            return
        checked += 1
        is_score = label.rsplit(".", 1)[-1] in ("val_loss", "val_bpb")
        if is_score and isinstance(json_value, (int, float)) and abs(json_value - log_value) > SCORE_TOLERANCE:
            bad.append(f"{label}: json {json_value!r} vs logs {_show(log_value)} (a score must match to 4 decimals)")
        elif not any(agrees(json_value, v) for v in (log_value, *alternatives) if v is not None):
            bad.append(f"{label}: json {json_value!r} vs logs {_show(log_value)}")

    loss_pop = std(score_values(runs, "val_loss"), ddof=0) if len(runs) > 1 else None
    bpb_pop = std(score_values(runs, "val_bpb"), ddof=0) if len(runs) > 1 else None
    simple = {"val_loss": (s["val_loss"], ()), "val_bpb": (s["val_bpb"], ()),
              "val_loss_std": (s["val_loss_std"], (loss_pop,)), "val_bpb_std": (s["val_bpb_std"], (bpb_pop,)),
              "bytes_total": (s["bytes_total"], ()), "artifact_bytes_max": (s["bytes_total"], ()),
              "bytes_code": (s["bytes_code"], ()), "train_steps_mean": (s["train_steps_mean"], ()),
              "step_avg_ms_mean": (s["step_avg_ms_mean"], ())}
    for key, (value, alts) in simple.items():
        if key in sub and sub[key] is not None:
            cmp(key, sub[key], value, alts)
    if "seeds" in sub:
        checked += 1
        if sorted(map(str, sub["seeds"])) != sorted(by_seed):
            bad.append(f"seeds: json {sub['seeds']} vs logs {sorted(by_seed)}")
    for seed, res in (sub.get("seed_results") or {}).items():
        r = by_seed.get(str(seed))
        if r is None:
            bad.append(f"seed_results[{seed}]: no log for this seed")
            continue
        logged = s["seed_results"][seed_key(r)]
        for k, v in res.items():
            if k in logged and v is not None:
                cmp(f"seed_results[{seed}].{k}", v, logged[k])
    extra = f"; not checkable: {', '.join(unverified)}" if unverified else ""
    if bad:
        rep.add("FAIL", "submission.json disagrees with the logs: " + "; ".join(bad) + extra)
    elif unverified:
        rep.add("UNVERIFIED", f"submission.json: {checked} values agree with the logs" + extra)
    else:
        rep.add("PASS", f"submission.json: {checked} values agree with the logs")


def parse_float_list(text: str) -> list[float]:
    return [float(x) for x in re.split(r"[,\s]+", text.strip()) if x]


def significance_from_args(args, runs: list[RunLog]) -> SigTest | str | None:
    """SigTest, or a reason string when a test was asked for but cannot run, or None."""
    best_loss = getattr(args, "best_loss", None)
    best_bpb = getattr(args, "best_bpb", None)
    best_losses = getattr(args, "best_losses", None)
    best_record = getattr(args, "best_record", None)
    if best_loss is None and best_bpb is None and best_losses is None and best_record is None:
        return None
    losses, bpbs = score_values(runs, "val_loss"), score_values(runs, "val_bpb")
    try:
        if best_record is not None or best_losses is not None:
            best = parse_float_list(best_losses) if best_losses is not None else best_losses_of(Path(best_record))
            return welch_test(losses, best, MIN_GAIN_NATS)
        if best_loss is not None:
            return one_sample_test(losses, float(best_loss), MIN_GAIN_NATS)
        # bpb: the 0.005-nat margin is converted with our logs' bpb-per-nat ratio
        ratio = mean(b / l for b, l in zip(bpbs, losses))
        sig = one_sample_test(bpbs, float(best_bpb), MIN_GAIN_NATS * ratio)
        sig.test += f" on val_bpb; margin 0.005 nats = {MIN_GAIN_NATS * ratio:.6f} bpb (ratio {ratio:.6f} from our logs)"
        return sig
    except (ValueError, ZeroDivisionError) as e:
        return str(e)


def best_losses_of(folder: Path) -> list[float]:
    runs = find_logs(folder)
    values = score_values(runs, "val_loss")
    if values:
        return values
    sub_path = folder / "submission.json"
    if sub_path.is_file():
        sub = json.loads(sub_path.read_text(encoding="utf-8"))
        values = [r["val_loss"] for r in (sub.get("seed_results") or {}).values() if "val_loss" in r]
    if not values:
        raise ValueError(f"no per-seed val_loss in {folder} (logs or submission.json seed_results)")
    return values


def check_significance(args, runs: list[RunLog], rep: Report) -> None:
    sig = significance_from_args(args, runs)
    if sig is None:
        rep.add("SKIP", "significance: no --best-loss / --best-bpb / --best-losses / --best-record given")
        return
    if isinstance(sig, str):
        rep.add("FAIL", f"significance: cannot test ({sig})")
        return
    unit = "bpb" if "val_bpb" in sig.test else "nats"
    msg = (f"significance: mean {sig.ours_mean:.8f} vs best {sig.best_mean:.8f}, gain {sig.gain:+.6f} {unit} "
           f"(need >= {sig.margin:.6f}); {sig.test}: t = {sig.t:.3f}, df = {sig.df:.2f}, p = {sig.p:.3g} "
           f"({'<' if sig.p < P_THRESHOLD else '>='} {P_THRESHOLD})")
    rep.add("PASS" if sig.passed() else "FAIL", msg)


def cmd_validate(args) -> int:
    folder = Path(args.folder)
    if not folder.is_dir():
        return _refuse(f"{folder} is not a directory")
    record_track = "non_record" not in folder.resolve().parent.name
    print(f"validating {folder} ({'10-minute record track' if record_track else 'non-record track'})")
    rep = Report(args.allow_unverified)
    runs, script = check_files(folder, rep)
    if runs:
        check_scores_and_configs(runs, rep)
        check_run_setup(runs, rep, record_track)
        check_sizes(runs, script, rep)
        check_times(runs, rep, args.train_grace_steps, record_track)
        check_scripts(runs, script, rep)
        check_submission(folder, runs, rep)
        check_significance(args, runs, rep)
    return rep.summary()


# ===== 9. COMMAND: diff =====

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
            return _refuse(f"{p} does not exist")
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


# ===== 10. COMMAND: leaderboard =====

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
        return _refuse(f"{root} is not a directory")
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


# ===== 11. CLI =====

def _add_best_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("significance (0.005 nats at p < 0.01; see records/README.md)")
    g.add_argument("--best-loss", type=float, help="current best val_loss in nats (one-sample test)")
    g.add_argument("--best-bpb", type=float, help="current best val_bpb (one-sample test on bpb; margin converted)")
    g.add_argument("--best-losses", help="the best record's per-seed val_loss values, comma separated (Welch test)")
    g.add_argument("--best-record", help="the best record's folder: per-seed val_loss from its logs (Welch test)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="records_tool.py", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  python records/records_tool.py new logs/a.txt logs/b.txt logs/c.txt --name NAME --author A \\\n"
               "      --github-id ID --description Short_Name\n"
               "  python records/records_tool.py validate records/track_10min_16mb/2026-05-01_Short_Name --best-loss 1.9295\n"
               "  python records/records_tool.py diff records/track_10min_16mb/A records/track_10min_16mb/B\n"
               "  python records/records_tool.py leaderboard\n"
               "See records/README.md for the checks, the log formats and the significance test.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("new", help="build a record folder from run logs",
                       description="Build records/track_<TRACK>/<DATE>_<DESCRIPTION>/ from run logs: copy the exact "
                                   "script (verified against the source embedded in every log; refuses on mismatch), "
                                   "the logs (as train_seed<SEED>.log), submission.json, a README.md skeleton and "
                                   "curves.png.")
    p.add_argument("logs", nargs="+", help="run logs (logs/<RUN_ID>.txt), one per seed")
    p.add_argument("--script", default="./train_gpt.py", help="the script that produced the logs (default ./train_gpt.py)")
    p.add_argument("--name", required=True, help="submission name")
    p.add_argument("--author", required=True, help="author's name")
    p.add_argument("--github-id", required=True, help="author's GitHub id")
    p.add_argument("--description", required=True, help="folder suffix, e.g. 10L_Int5MLP_SWA (no spaces)")
    p.add_argument("--blurb", default="", help="one-paragraph summary for submission.json and README")
    p.add_argument("--date", default=_dt.date.today().isoformat(), help="YYYY-MM-DD (default today)")
    p.add_argument("--track", default="10min_16mb", choices=TRACKS, help="record track (default 10min_16mb)")
    p.add_argument("--records-root", default="records", help="root of the track folders (default records)")
    p.add_argument("--out", help="exact output folder (overrides --records-root/--track/--date/--description)")
    p.add_argument("--requirements", help="a requirements.txt to copy into the folder")
    p.add_argument("--force", action="store_true", help="write into an existing non-empty folder")
    p.add_argument("--allow-config-diff", action="store_true", help="accept logs whose configs differ beyond the seed")
    _add_best_args(p)
    p.set_defaults(func=cmd_new)

    p = sub.add_parser("validate", help="check a record folder",
                       description="Check a record folder; prints PASS/FAIL/UNVERIFIED/SKIP lines and exits 1 on any "
                                   "FAIL (or UNVERIFIED, unless --allow-unverified). UNVERIFIED means the logs do not "
                                   "contain what the check needs (e.g. no embedded source).")
    p.add_argument("folder", help="the record folder")
    p.add_argument("--allow-unverified", action="store_true", help="do not fail on checks the logs cannot support")
    p.add_argument("--train-grace-steps", type=float, default=1.0,
                   help="training may exceed 600 s by this many average steps, because the wallclock cap is checked "
                        "at step boundaries (default 1; 0 = strict)")
    _add_best_args(p)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("diff", help="compare two record folders or two logs",
                       description="Compare two record folders or two logs: resolved configuration (the logged config, "
                                   "or the script's env-var defaults read with ast when the log has none), metrics, and "
                                   "a unified diff of the scripts.")
    p.add_argument("a", help="record folder or log")
    p.add_argument("b", help="record folder or log")
    p.add_argument("--context", type=int, default=3, help="lines of context in the script diff (default 3)")
    p.add_argument("--all-keys", action="store_true", help="also show SEED/RUN_ID-style keys")
    p.set_defaults(func=cmd_diff)

    p = sub.add_parser("leaderboard", help="table of every record, sorted by score",
                       description="Table of every record folder under a root (recursive over track folders), sorted "
                                   "by mean val_bpb of the logs' scored metric (submission.json when no log parses).")
    p.add_argument("--root", default="records", help="root folder (default records)")
    p.add_argument("--by", choices=("bpb", "loss"), default="bpb", help="sort key (default bpb)")
    p.add_argument("--track", help="only this track, e.g. 10min_16mb")
    p.set_defaults(func=cmd_leaderboard)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # output piped into `head`
        sys.exit(0)
