"""Summarize a measure.sh output folder: one row per run (ms/step, eval time, peak RSS, wall
time, final val_bpb), from each run's stdout.txt (the script's log lines) and time.txt
(/usr/bin/time -v).   python summarize.py OUT_DIR"""
import re
import sys
from pathlib import Path


def grab(pattern: str, text: str, cast=float, last: bool = True):
    found = re.findall(pattern, text, flags=re.M)
    return cast(found[-1] if last else found[0]) if found else None


def row(d: Path) -> dict:
    out, tv = (d / "stdout.txt").read_text(), (d / "time.txt").read_text()
    steps = re.findall(r"^step:(\d+)/\d+ .*?train_time:(\d+)ms", out, flags=re.M)
    last_step, last_ms = (int(steps[-1][0]), int(steps[-1][1])) if steps else (0, 0)
    # the last logged step line that is not an eval line; ms/step over steps 1..N as the scripts print it
    step_avg = grab(r"^step:\d+/\d+ (?:train_loss|.*train_time).*?step_avg:([\d.]+)ms", out)
    wall = grab(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", tv, str)
    h = [float(x) for x in wall.split(":")] if wall else []
    wall_s = sum(v * 60 ** (len(h) - 1 - i) for i, v in enumerate(h)) if h else None
    # ours prints final_score_exact; the reference prints final_int8_zlib_roundtrip_exact
    score = grab(r"^final_score_exact .*?val_bpb:([\d.]+)", out) or grab(r"^final_int8_zlib_roundtrip_exact .*?val_bpb:([\d.]+)", out)
    # eval time of the standard (non-overlapping) eval of the final weights on the full val split
    ev = grab(r"^final_(?:int\S+roundtrip|int8_zlib_roundtrip) val_loss.*?eval_time:(\d+)ms", out)
    return dict(run=d.name, steps=last_step, ms_per_step=step_avg, final_eval_s=ev and ev / 1000,
                peak_rss_gb=grab(r"Maximum resident set size \(kbytes\): (\d+)", tv) / 1e6,
                wall_s=wall_s, user_s=grab(r"User time \(seconds\): ([\d.]+)", tv), val_bpb=score)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    done = [d for d in sorted(Path(argv[0]).iterdir())
            if (d / "time.txt").is_file() and "Maximum resident" in (d / "time.txt").read_text()]  # finished runs
    rows = [row(d) for d in done]
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join("" if r[k] is None else (f"{r[k]:.4g}" if isinstance(r[k], float) and k != "val_bpb"
                                  else f"{r[k]:.4f}" if k == "val_bpb" else str(r[k])) for k in keys) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
