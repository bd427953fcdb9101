"""Command `compare` (alias `plot`): the curves and final scores of any set of logs or record
folders, ours and the published records', in one PNG and one table."""
from __future__ import annotations

from pathlib import Path

from .common import *
from .logs import *


def collect(paths: list[str]) -> list[tuple[str, RunLog]] | str:
    """(label, run) for every log given or found in a given folder; a message when a path holds none."""
    out = []
    for p in map(Path, paths):
        if not p.exists():
            return f"{p} does not exist"
        runs = find_logs(p) if p.is_dir() else [parse_log(p)]
        runs = [r for r in runs if r.has_content()]
        if not runs:
            return f"{p} holds no training log (no step or metric lines)"
        for r in runs:
            where = p.name if p.is_dir() else (p.parent.name or ".")
            out.append((f"{where}/{r.path.name}" if not p.is_dir() or len(runs) > 1 else f"{p.name}/{r.path.name}", r))
    return out


def step_times(run: RunLog) -> list[tuple[float, float]]:
    """(step, ms per step) between consecutive logged step lines whose times differ (a log that
    prints minutes with one decimal shows no time for its first steps: they join the next interval)."""
    pts = sorted(set(run.time_points))
    out, prev = [], (0, 0.0)
    for s, ms in pts:
        if s > prev[0] and ms > prev[1]:  # equal times: below the log's resolution (the 04-27 record logs 0.1 min)
            out.append(((prev[0] + s) / 2, (ms - prev[1]) / (s - prev[0])))
            prev = (s, ms)
        elif ms > prev[1] or s <= prev[0]:
            prev = (s, ms)
    return out


def table_rows(items: list[tuple[str, RunLog]]) -> list[str]:
    head = (f"{'log':<44} {'steps':>6} {'step_ms':>8} {'train_s':>8} {'eval_s':>8} {'val_bpb':>11} {'val_loss':>11} "
            f"{'total_bytes':>11}  scored metric")
    rows = [head, "-" * len(head)]
    for label, r in items:
        sc = r.score
        rows.append(f"{label[-44:]:<44} {r.steps if r.steps is not None else '-':>6} "
                    f"{'-' if r.step_avg_ms is None else f'{r.step_avg_ms:.2f}':>8} "
                    f"{'-' if r.train_time_ms is None else f'{r.train_time_ms / 1000:.1f}':>8} "
                    f"{'-' if r.eval_time_ms is None else f'{r.eval_time_ms / 1000:.1f}':>8} "
                    f"{'-' if sc is None or sc.val_bpb is None else f'{sc.val_bpb:.8f}':>11} "
                    f"{'-' if sc is None or sc.val_loss is None else f'{sc.val_loss:.8f}':>11} "
                    f"{'-' if r.total_bytes is None else f'{r.total_bytes:,}':>11}  {sc.name if sc else NOT_IN_LOG}")
    return rows


def _zoom(ax, ys: list[float]) -> None:
    if len(ys) > 1:
        pad = 0.05 * (max(ys) - min(ys)) + 1e-3
        ax.set_ylim(min(ys) - pad, max(ys) + pad)


def plot(items: list[tuple[str, RunLog]], out: Path, title: str = "") -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, 2, figsize=(13, 8.5))
    (a_train, a_val), (a_time, a_score) = axes
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    train_tail, val_all, time_all = [], [], []
    for i, (label, r) in enumerate(items):
        c = colors[i % len(colors)]
        if r.train_points:
            last = max(s for s, _ in r.train_points)
            xs, ys = zip(*sorted(r.train_points))
            a_train.plot(xs, ys, lw=1.2, color=c, label=label, marker="." if len(xs) < 40 else None)
            train_tail += [y for s, y in r.train_points if s >= 0.1 * last]
        vals = sorted((s, b) for s, _, b in r.val_points if b is not None)
        if vals:
            xs, ys = zip(*vals)
            a_val.plot(xs, ys, marker="o", ms=3, color=c, label=label)
            last = max(xs)
            val_all += [y for x, y in vals if x >= 0.1 * last] or list(ys)  # the step-0 eval would flatten the rest
        if r.score is not None and r.score.val_bpb is not None and r.steps is not None:
            a_val.scatter([r.steps], [r.score.val_bpb], marker="*", s=120, color=c, zorder=3, edgecolor="k", lw=0.5)
            val_all.append(r.score.val_bpb)
        st = step_times(r)
        if st:
            xs, ys = zip(*st)
            a_time.plot(xs, ys, lw=1.2, color=c, label=label, marker="." if len(xs) < 40 else None)
            time_all += ys
    _zoom(a_train, train_tail)
    _zoom(a_val, val_all)
    scored = [(label, r.score.val_bpb, colors[i % len(colors)]) for i, (label, r) in enumerate(items)
              if r.score is not None and r.score.val_bpb is not None]
    if scored:
        ys = range(len(scored))
        a_score.barh(list(ys), [b for _, b, _ in scored], color=[c for *_, c in scored])
        a_score.set_yticks(list(ys), [lab.replace("/", "/\n", 1) if len(lab) > 30 else lab for lab, *_ in scored],
                           fontsize=7)
        a_score.invert_yaxis()
        lo, hi = min(b for _, b, _ in scored), max(b for _, b, _ in scored)
        pad = 0.15 * (hi - lo) + 1e-3
        a_score.set_xlim(lo - pad, hi + pad)
        for y, (_, b, _) in zip(ys, scored):
            a_score.text(b, y, f" {b:.5f}", va="center", fontsize=7)
    a_train.set(xlabel="step", ylabel="train loss (nats)", title="training loss (last 90% of steps)")
    a_val.set(xlabel="step", ylabel="val bpb", title="validation bpb (star: the scored metric)")
    a_time.set(xlabel="step", ylabel="ms per step", title="step time (between logged steps)")
    a_score.set(xlabel="val bpb (lower is better)", title="final score")
    for ax in (a_train, a_val, a_time, a_score):
        ax.grid(alpha=0.3)
    for ax in (a_train, a_val, a_time):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def cmd_compare(args) -> int:
    items = collect(args.paths)
    if isinstance(items, str):
        return refuse(f"{items}; give run logs (logs/<RUN_ID>.txt) or record folders")
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        return refuse(f"--out {out} must name a .png file")
    if not out.parent.is_dir():
        return refuse(f"--out {out}: the folder {out.parent} does not exist")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return refuse("matplotlib is not installed (python -m pip install -r requirements.txt)")
    for line in table_rows(items):
        print(line)
    tmp = out.with_name(f".{out.name}.partial.png")
    try:
        plot(items, tmp, args.title or "")
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    n_train = sum(len(r.train_points) for _, r in items)
    print(f"wrote {out}: training loss ({n_train} points), validation bpb, step time and final scores of "
          f"{len(items)} log(s)")
    return 0
