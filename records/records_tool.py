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
  compare      curves, step time and final scores of any logs in one PNG and a table (alias plot)

The log parser reads the logs our train_gpt.py writes (a verbatim-source header, then
`code_sha256:`, `config:KEY=VALUE` and `final_score_exact metric:...` lines) and the logs of
the records published in openai/parameter-golf, whose formats vary. A field a log does not
contain is reported as "not in log", never guessed. See records/README.md.

Import has no side effects; the entry point is main(argv) -> exit code.
"""
from __future__ import annotations

import sys
from pathlib import Path

# the implementation lives in the rtool package next to this file; the command line and the
# names below (rt.parse_log, rt.welch_test, ...) stay where users and tests expect them
sys.path.insert(0, str(Path(__file__).resolve().parent))

from rtool.cli import build_parser, main  # noqa: E402
from rtool.common import *  # noqa: E402,F401,F403
from rtool.compare import *  # noqa: E402,F401,F403
from rtool.diff import *  # noqa: E402,F401,F403
from rtool.leaderboard import *  # noqa: E402,F401,F403
from rtool.logs import *  # noqa: E402,F401,F403
from rtool.new import *  # noqa: E402,F401,F403
from rtool.scripts import *  # noqa: E402,F401,F403
from rtool.stats import *  # noqa: E402,F401,F403
from rtool.validate import *  # noqa: E402,F401,F403

if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # output piped into `head`
        sys.exit(0)
