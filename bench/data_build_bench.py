"""Time and peak memory of one data/build_sp_dataset.py build, and its bytes per token.

    python bench/data_build_bench.py --name NAME --out bench/results/data -- BUILD_ARGS...

Runs `python data/build_sp_dataset.py BUILD_ARGS... --no-progress` as a child process,
samples the resident memory of the child and all its descendants (the encoding workers)
from /proc every 0.2 s, and writes NAME.txt under --out: the command, wall time, CPU time
(user and system, the child and its workers), peak summed RSS, the build's own output (tokens and text bytes per token of each split) and the
tokenizer line. Linux only (/proc). Wall times depend on the machine's load; compare them
only within one series run back to back.
"""
from __future__ import annotations

import argparse
import os
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def tree_rss_bytes(root: int) -> int:
    """Summed VmRSS of `root` and every descendant (0 for processes that are gone)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue
        pid, ppid = int(entry), int(fields.get("PPid", "0").strip())
        children.setdefault(ppid, []).append(pid)
        rss[pid] = int(fields.get("VmRSS", "0 kB").split()[0]) * 1024
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo += children.get(pid, [])
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", required=True, help="result file stem")
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/data", help="result folder")
    parser.add_argument("--redact", action="append", default=[], metavar="TEXT=NAME",
                        help="replace TEXT by NAME in the written report (e.g. a local corpus path by $PROXY_TEXT)")
    parser.add_argument("build_args", nargs=argparse.REMAINDER, help="arguments for build_sp_dataset.py (after --)")
    args = parser.parse_args(argv)
    build_args = args.build_args[1:] if args.build_args[:1] == ["--"] else args.build_args
    cmd = [sys.executable, str(REPO / "data/build_sp_dataset.py"), *build_args, "--no-progress"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_rss_bytes(proc.pid))
        time.sleep(0.2)
    wall = time.perf_counter() - t0
    # The child and the workers it waited for: CPU time does not depend on the machine's load
    # the way wall time does.
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    output = proc.stdout.read()
    args.out.mkdir(parents=True, exist_ok=True)
    report = (f"command: python data/build_sp_dataset.py {shlex.join(build_args + ['--no-progress'])}\n"
              f"exit_code: {proc.returncode}\nwall_s: {wall:.1f}\ncpu_user_s: {usage.ru_utime:.1f}\n"
              f"cpu_sys_s: {usage.ru_stime:.1f}\npeak_rss_mib: {peak / 2**20:.0f}\n"
              f"load_avg_at_end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}\n--- build output ---\n{output}")
    for item in args.redact:
        text, name = item.split("=", 1)
        report = report.replace(text, name)
    (args.out / f"{args.name}.txt").write_text(report)
    print(report, end="")
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
