"""Training logs: the data model, one small parser per field family, and the scored metric."""
from __future__ import annotations

import ast
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from .common import *

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
    time_points: list = field(default_factory=list)    # (step, train_time_ms) of the step lines
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
    data_audit: str | None = None                      # our `data_audit:` line: a digest or UNVERIFIED, and why
    notes: dict = field(default_factory=dict)          # field -> where its value came from

    @property
    def label(self) -> str:
        return f"seed {self.seed}" if self.seed is not None else self.path.name

    def has_content(self) -> bool:
        return bool(self.train_points or self.val_points or self.metrics or self.final_score)


# ===== 2. LINE PARSERS (one small function per field family; unknown lines are ignored) =====

_KV = re.compile(r"([A-Za-z_][\w/.\-]*):\s*(\S+)")
_STEP = re.compile(r"^(?:step:\s*)?(\d+)/(\d+)(?:\s|$)")
# a diverged run prints nan/inf: those are values (a clear FAIL later), never "not in log"
_NUM = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf(?:inity)?)\b", re.I)


def kv_fields(text: str) -> dict:
    """`a:1 b: 2ms` -> {"a": "1", "b": "2ms"}; the first occurrence of a key wins."""
    out: dict = {}
    for key, value in _KV.findall(text):
        out.setdefault(key, value)
    return out


def duration_ms(value) -> float | None:
    """`9612ms` (ours, the baseline), `0.8m` (the 04-27 record), `12.5s` -> milliseconds."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*(ms|s|m|min)?\s*", str(value)) if value is not None else None
    if m is None:
        return None
    try:
        x = float(m.group(1))
    except ValueError:
        return None
    return x * {"ms": 1.0, None: 1.0, "s": 1e3, "m": 6e4, "min": 6e4}[m.group(2)]


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
    ms = duration_ms(f.get("train_time"))
    if ms is not None and "train_loss" in f:
        run.time_points.append((step, ms))
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
    if line.startswith("data_audit:"):  # the trainer's preflight: the data's full audit digest, or UNVERIFIED
        run.data_audit = line[len("data_audit:"):].strip()
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


def is_prequant(name: str) -> bool:
    return any(k in name.lower() for k in _PRE_QUANT)


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
    candidates = [m for m in run.metrics if not is_prequant(m.name)]
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
    """The distinct training logs of a folder (see load_logs)."""
    return load_logs(folder)[0]


def load_logs(folder: Path, sub: dict | None = None) -> tuple[list[RunLog], list[str]]:
    """(runs, notes). Log files anywhere under the folder (records keep them in `logs/` too), except
    inside a nested record folder: *.log / *.txt with step or metric lines. A byte copy of
    another log (`train.log` = `train_seed1337.log`) counts once, and so does a seed logged twice
    (original run and rerun): the log whose metric submission.json reports wins, else the first by
    name. The notes say what was set aside and why."""
    folder = Path(folder)
    nested = {p.parent for p in folder.rglob("submission.json") if p.parent != folder}
    files = [p for p in sorted(folder.rglob("*")) if p.is_file() and p.suffix in LOG_SUFFIXES
             and p.name.lower() not in NON_LOG_NAMES and not any(n in p.parents for n in nested)]
    # names that carry the seed first, so the copy that is set aside is the unnamed one
    files.sort(key=lambda p: (re.search(r"seed", p.name, re.I) is None, len(p.relative_to(folder).parts), str(p)))
    runs, notes, by_digest = [], [], {}
    for p in files:
        data = p.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if digest in by_digest:
            notes.append(f"{p.relative_to(folder)} is a byte copy of {by_digest[digest]}: counted once")
            continue
        run = parse_log_text(data.decode("utf-8", errors="replace"), p)
        if run.has_content():
            by_digest[digest] = p.relative_to(folder)
            runs.append(run)
    if sub:
        for r in runs:
            rescore_from_json(r, sub)
    kept: dict = {}
    for r in runs:
        key = seed_key(r)
        if key not in kept:
            kept[key] = r
            continue
        old = kept[key]
        if json_reports(r, sub) and not json_reports(old, sub):
            kept[key], (old, r) = r, (r, old)
        notes.append(f"{r.path.relative_to(folder)} repeats seed {key} of {old.path.relative_to(folder)}: "
                     f"{old.path.name} is counted" + (" (its score is the one submission.json reports)"
                                                      if json_reports(old, sub) else " (first by name)"))
    out = [r for r in runs if kept.get(seed_key(r)) is r]
    return sorted(out, key=lambda r: str(r.path)), notes


@dataclass
class Record:
    """A record folder as the commands see it: its distinct logs, submission.json (or why not)."""
    folder: Path
    runs: list
    notes: list
    sub: dict | None
    sub_error: str | None


JSON_TYPE_NAMES = {list: "list", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}


def read_submission(folder: Path) -> tuple[dict | None, str | None]:
    """(fields, None), (None, reason) for a broken file, or (None, None) when there is none."""
    path = Path(folder) / "submission.json"
    if not path.is_file():
        return None, None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        return None, f"submission.json: invalid JSON ({e})"
    if not isinstance(data, dict):
        return None, (f"submission.json holds a JSON {JSON_TYPE_NAMES.get(type(data), type(data).__name__)}, "
                      "not an object of fields such as {\"name\": ..., \"val_bpb\": ...}")
    return data, None


def load_record(folder: Path) -> Record:
    sub, err = read_submission(folder)
    runs, notes = load_logs(folder, sub)
    return Record(Path(folder), runs, notes, sub, err)


def json_seed_result(run: RunLog, sub: dict | None) -> dict:
    results = (sub or {}).get("seed_results") if isinstance(sub, dict) else None
    if not isinstance(results, dict) or run.seed is None:
        return {}
    res = results.get(str(run.seed))
    return res if isinstance(res, dict) else {}


def json_reports(run: RunLog, sub: dict | None) -> bool:
    """True when submission.json's per-seed score for this run's seed is this run's score."""
    res = json_seed_result(run, sub)
    if run.score is None or not res:
        return False
    checks = [(res.get(k), getattr(run.score, k)) for k in ("val_bpb", "val_loss") if is_number(res.get(k))]
    return bool(checks) and all(agrees(j, v) for j, v in checks)


def rescore_from_json(run: RunLog, sub: dict) -> None:
    """A published log prints several final metrics (roundtrip, sliding, a diagnostic TTT pass...).
    The score is the one the submitter reported: the metric line whose value submission.json gives
    for this seed (or, for a one-log folder, its headline val_bpb). Our logs name their score in
    `final_score_exact` and are never re-scored."""
    if run.final_score is not None or not isinstance(sub, dict):
        return
    res = json_seed_result(run, sub)
    want = {k: res[k] for k in ("val_bpb", "val_loss") if is_number(res.get(k))}
    where = f"submission.json seed_results[{run.seed}]"
    if not want and is_number(sub.get("val_bpb")) and len(sub.get("seeds") or [run.seed]) <= 1:
        want, where = {"val_bpb": sub["val_bpb"]}, "submission.json val_bpb"
    if not want or (run.score is not None and all(agrees(v, getattr(run.score, k)) for k, v in want.items())):
        return
    scored = [m for m in run.metrics if not is_prequant(m.name)]
    hits = [m for m in scored if all(agrees(v, getattr(m, k)) for k, v in want.items())]
    if hits:
        chosen, before = hits[-1], run.score
        run.score = chosen
        run.notes["score"] = (f"the line {where} reports, line {chosen.lineno}"
                              + (f" (the priority pick was `{before.name}` {before.val_bpb})" if before else ""))


def score_values(runs, metric: str = "val_loss") -> list[float]:
    return [getattr(r.score, metric) for r in runs if r.score is not None and getattr(r.score, metric) is not None]


def seed_key(run: RunLog) -> str:
    return str(run.seed) if run.seed is not None else run.path.stem


def script_in_folder(folder: Path) -> Path | None:
    p = Path(folder) / "train_gpt.py"
    if p.is_file():
        return p
    others = sorted(Path(folder).glob("*.py"))
    return others[0] if len(others) == 1 else None

