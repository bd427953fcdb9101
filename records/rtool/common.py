"""Constants, formatting and the PASS/FAIL report shared by the commands."""
from __future__ import annotations

import math
import sys

CAP_BYTES = 16_000_000          # code + compressed model, decimal bytes (challenge rule)
TRAIN_LIMIT_S = 600.0           # training wallclock on 8xH100
EVAL_LIMIT_S = 600.0            # evaluation wallclock, a separate budget
MIN_GAIN_NATS = 0.005           # a new record must beat the best val_loss by this much ...
P_THRESHOLD = 0.01              # ... at this one-sided significance level
MIN_RECORD_SEEDS = 3            # seeds a record-track submission shows (the README's and the records' practice)
SEPARATOR = "=" * 100           # ends the embedded source in baseline-style logs
NOT_IN_LOG = "not in log"
SCORE_TOLERANCE = 0.5e-4 + 1e-12  # a submission.json score must equal the logs to 4 decimals
VOLATILE_KEYS = {"SEED", "RUN_ID", "LOGFILE", "RANK", "LOCAL_RANK", "IS_MAIN_PROCESS"}
LOG_SUFFIXES = (".log", ".txt")
NON_LOG_NAMES = {"requirements.txt", "readme.txt"}
TRACKS = ("10min_16mb", "non_record_16mb")


def fmt_bytes(n) -> str:
    return NOT_IN_LOG if n is None else f"{int(n):,}"


def fmt_num(x, digits: int = 8) -> str:
    return NOT_IN_LOG if x is None else f"{x:.{digits}f}"


def fmt_s(ms) -> str:
    return NOT_IN_LOG if ms is None else f"{ms / 1000.0:.3f} s"


def score_values(runs, metric: str = "val_loss") -> list[float]:
    return [getattr(r.score, metric) for r in runs if r.score is not None and getattr(r.score, metric) is not None]


def is_number(value) -> bool:
    """A finite JSON number (bool is not a number here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_finite(x) -> bool:
    return x is not None and math.isfinite(x)


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
    if isinstance(log_value, float) and not math.isfinite(log_value):
        return False  # nan never agrees, not even with nan
    d = json_decimals(json_value)
    if d is None:
        return str(json_value) == str(log_value)
    return abs(float(json_value) - float(log_value)) <= 0.5 * 10.0 ** (-d) + 1e-12


def show_value(value) -> str:
    return f"{value:.8f}" if isinstance(value, float) else repr(value)



class Report:
    """Collects PASS / FAIL / UNVERIFIED / WARN / SKIP / INFO lines; UNVERIFIED fails unless allowed,
    WARN never fails (a point for the reviewers, such as a counting policy)."""

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
        n_warn = sum(s == "WARN" for s, _ in self.lines)
        warn = f", {n_warn} warning(s)" if n_warn else ""
        if n_fail:
            print(f"RESULT: FAIL ({n_fail} failed, {n_unv} unverified{warn})")
        elif n_unv and not self.allow_unverified:
            # nothing failed: the logs lack what some checks need, which is not the same verdict
            print(f"RESULT: UNVERIFIED ({n_unv} check(s) the logs cannot support, 0 failed{warn}; "
                  "--allow-unverified accepts them)")
        else:
            print(f"RESULT: PASS (0 failed, {n_unv} unverified" + (", unverified allowed" if n_unv else "") + f"{warn})")
        return 1 if self.failed() else 0


def refuse(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 2

