"""Command line of the records tool: one sub-command per module."""
from __future__ import annotations

import argparse
import datetime as _dt
import sys

from .common import TRACKS, refuse
from .compare import cmd_compare
from .diff import cmd_diff
from .leaderboard import cmd_leaderboard
from .new import cmd_new
from .pack import cmd_pack
from .rescore import RESCORE_TOLERANCE_BPB
from .validate import cmd_validate

DESCRIPTION = ("Records tool for Parameter Golf submissions: build, check, compare, rank and pack record "
               "folders.")

class Parser(argparse.ArgumentParser):
    """A usage error is one line that names the flag and points at --help (exit 2), not the
    whole usage block; sub-command parsers are of this class too."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _add_best_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("significance (0.005 nats at p < 0.01; see records/README.md)")
    g.add_argument("--best-loss", type=float, help="current best val_loss in nats (one-sample test)")
    g.add_argument("--best-bpb", type=float, help="current best val_bpb (one-sample test on bpb; margin converted)")
    g.add_argument("--best-losses", help="the best record's per-seed val_loss values, comma separated (Welch test)")
    g.add_argument("--best-record", help="the best record's folder: per-seed val_loss from its logs (Welch test)")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="records_tool.py", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  python records/records_tool.py new logs/a.txt logs/b.txt logs/c.txt --name NAME --author A \\\n"
               "      --github-id ID --description Short_Name --blurb \"One paragraph.\" [--pack]\n"
               "  python records/records_tool.py validate records/track_10min_16mb/2026-05-01_Short_Name --best-loss 1.9295\n"
               "  python records/records_tool.py diff records/track_10min_16mb/A records/track_10min_16mb/B\n"
               "  python records/records_tool.py leaderboard --track 10min_16mb\n"
               "  python records/records_tool.py compare logs/a.txt logs/b.txt records/track_10min_16mb/A --out cmp.png\n"
               "  python records/records_tool.py pack train_gpt.py --out /tmp/packed\n"
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
    p.add_argument("--blurb", required=True, help="one-paragraph summary for submission.json and README")
    p.add_argument("--date", default=_dt.date.today().isoformat(), help="YYYY-MM-DD (default today)")
    p.add_argument("--track", default="10min_16mb", choices=TRACKS, help="record track (default 10min_16mb)")
    p.add_argument("--records-root", default="records", help="root of the track folders (default records)")
    p.add_argument("--out", help="exact output folder (overrides --records-root/--track/--date/--description)")
    p.add_argument("--requirements", help="a requirements.txt to copy into the folder")
    p.add_argument("--force", action="store_true", help="write into an existing non-empty folder")
    p.add_argument("--allow-config-diff", action="store_true", help="accept logs whose configs differ beyond the seed")
    p.add_argument("--allow-partial-val", action="store_true",
                   help="accept logs scored with VAL_MAX_TOKENS != 0 (part of the validation split): test folders only")
    p.add_argument("--pack", action="store_true",
                   help="write train_gpt.py as a packed self-extracting script (the counted code) and the readable "
                        "source as train_gpt_human.py (see the pack command)")
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
    g = p.add_argument_group("re-scoring (the trainer's EVAL_ONLY mode)")
    g.add_argument("--rescore", metavar="ARTIFACT",
                   help="score this artifact (logs/<RUN_ID>.<format> of a run) with the folder's train_gpt.py under "
                        "EVAL_ONLY and the logged config of its seed, and compare with the score that log reports; "
                        "DATA_PATH/TOKENIZER_PATH/TRAIN_GLOB/VAL_GLOB from the environment win over the logged ones; a relative "
                        "logged path is found from the current directory or the repository root, and the paths used "
                        "are printed")
    g.add_argument("--rescore-seed", help="the seed whose log the artifact belongs to (default: the log whose RUN_ID "
                                          "names the artifact file, or the only log)")
    g.add_argument("--rescore-tolerance", type=float, default=RESCORE_TOLERANCE_BPB,
                   help="largest val_bpb difference (and the same in val_loss, scaled by the run's loss/bpb ratio) "
                        "that still passes: a compiled run re-scored eagerly sums in another order (default 1e-4; "
                        "0 = the printed digits must be identical)")
    g.add_argument("--rescore-launcher", default=f"{sys.executable}",
                   help="command that runs the script, e.g. 'torchrun --standalone --nproc_per_node=8' (default: "
                        "this Python)")
    _add_best_args(p)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("diff", help="compare two record folders or two logs",
                       description="Compare two record folders or two logs: configuration (each side's logged "
                                   "hyperparameters, else its README's run command over the script's env-var defaults, "
                                   "else the defaults, read with ast; knobs only one script has are listed apart and "
                                   "likely renames paired), metrics, and the script diff summarized by function "
                                   "(--full-diff for the unified diff).")
    p.add_argument("a", help="record folder or log")
    p.add_argument("b", help="record folder or log")
    p.add_argument("--context", type=int, default=3, help="lines of context in the script diff (default 3)")
    p.add_argument("--all-keys", action="store_true", help="also show run-identity (SEED, RUN_ID) and local-path keys")
    p.add_argument("--full-diff", action="store_true", help="print the unified script diff after the summary by function")
    p.set_defaults(func=cmd_diff)

    p = sub.add_parser("compare", aliases=["plot"], help="curves and final scores of any logs in one PNG and a table",
                       description="Plot the training loss, validation bpb, step time and final score of any set of "
                                   "run logs or record folders (ours and the published records' formats) into one "
                                   "PNG, and print a table of steps, step time, train and eval time, score and size.")
    p.add_argument("paths", nargs="+", help="run logs (logs/<RUN_ID>.txt) or record folders (every log inside)")
    p.add_argument("--out", default="compare.png", help="the PNG to write (default compare.png)")
    p.add_argument("--title", help="a title above the plots")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("pack", help="write a script as a small self-extracting train_gpt.py (+ train_gpt_human.py)",
                       description="Write OUT/train_gpt.py: the script lzma-compressed and base85-encoded inside a "
                                   "three-line wrapper that decompresses and executes it (the layout of the accepted "
                                   "2026-04-05 record); its bytes are the counted code. The readable source goes to "
                                   "OUT/train_gpt_human.py. The trainer logs the readable source and counts the "
                                   "wrapper's bytes; a packed run gives the same metrics bit for bit.")
    p.add_argument("script", nargs="?", default="train_gpt.py", help="the readable script (default train_gpt.py)")
    p.add_argument("--out", required=True, help="folder to write train_gpt.py and train_gpt_human.py into")
    p.add_argument("--force", action="store_true", help="overwrite existing files in --out")
    p.set_defaults(func=cmd_pack)

    p = sub.add_parser("leaderboard", help="table of every record, sorted by score",
                       description="One table per track of every record folder under a root, with date, author and name, "
                                   "sorted by the score submission.json reports (the logs' scored metric when there is "
                                   "no json). Logs are found recursively (logs/ subfolders too), byte copies and "
                                   "repeated seeds count once, and notes flag logs over the cap or disagreeing with "
                                   "the json.")
    p.add_argument("--root", default="records", help="root folder (default records)")
    p.add_argument("--by", choices=("bpb", "loss"), default="bpb", help="sort key (default bpb)")
    p.add_argument("--track", help="only this track, e.g. 10min_16mb")
    p.add_argument("--progress", action="store_true", help="print how many folders have been read (to stderr)")
    p.set_defaults(func=cmd_leaderboard)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except OSError as e:  # a file the user named cannot be read or written: one line, no traceback
        where = e.filename if e.filename is not None else "a file"
        return refuse(f"{where}: {e.strerror or e} (check the path and its permissions, or pass another --out)")

