"""Statistics (Student t without scipy) and the significance test against the best record."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from .common import *
from .logs import *

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



def parse_float_list(text: str) -> list[float]:
    return [float(x) for x in re.split(r"[,\s]+", text.strip()) if x]


@dataclass
class ScoreSide:
    """Per-seed scores of one side of a significance test, with what identifies its tokenizer."""
    losses: list
    bpbs: list
    tokenizer: str | None      # "VOCAB_SIZE=8192 fineweb_8192_bpe.model", from the logged config
    ratio: float | None        # mean val_bpb / val_loss: bits per nat, a property of tokenizer and val split

    def same_tokenizer(self, other: "ScoreSide") -> bool | None:
        """True/False, or None when neither the configs nor the bpb/loss ratios can tell."""
        if self.tokenizer and other.tokenizer:
            return self.tokenizer == other.tokenizer
        if self.ratio and other.ratio:
            return abs(self.ratio - other.ratio) <= 0.005 * other.ratio
        return None


def tokenizer_id(runs) -> str | None:
    for r in runs:
        vocab, path = r.config.get("VOCAB_SIZE"), r.config.get("TOKENIZER_PATH")
        if vocab or path:
            return " ".join(x for x in (f"VOCAB_SIZE={vocab}" if vocab else "",
                                        Path(path).name if path else "") if x)
    return None


def side_of_runs(runs) -> ScoreSide:
    pairs = [(r.score.val_loss, r.score.val_bpb) for r in runs if r.score is not None
             and is_finite(r.score.val_loss) and is_finite(r.score.val_bpb) and r.score.val_loss > 0]
    ratio = mean(b / l for l, b in pairs) if pairs else None
    return ScoreSide(score_values(runs, "val_loss"), score_values(runs, "val_bpb"), tokenizer_id(runs), ratio)


def best_side_of(folder: Path) -> ScoreSide:
    """The best record's per-seed scores: its logs (scored as its submission.json reports), else the
    json's seed_results."""
    rec = load_record(folder)
    side = side_of_runs(rec.runs)
    if side.losses or side.bpbs:
        return side
    results = (rec.sub or {}).get("seed_results") or {}
    results = results.values() if isinstance(results, dict) else []
    losses = [r["val_loss"] for r in results if isinstance(r, dict) and is_number(r.get("val_loss"))]
    bpbs = [r["val_bpb"] for r in results if isinstance(r, dict) and is_number(r.get("val_bpb"))]
    if not losses and not bpbs:
        raise ValueError(f"no per-seed scores in {folder} (logs or submission.json seed_results)")
    ratio = mean(b / l for l, b in zip(losses, bpbs)) if losses and len(losses) == len(bpbs) else None
    return ScoreSide(losses, bpbs, None, ratio)


def best_losses_of(folder: Path) -> list[float]:
    values = best_side_of(folder).losses
    if not values:
        raise ValueError(f"no per-seed val_loss in {folder} (logs or submission.json seed_results)")
    return values


def record_test(ours: ScoreSide, best: ScoreSide, folder: Path) -> SigTest | str:
    """Welch test against a best record. The rule's 0.005 nats is in val_loss, and nats are per
    token: across tokenizers a token is a different amount of text, so val_loss is not comparable.
    Then the test runs on val_bpb with the margin converted at the best record's bits per nat."""
    same = ours.same_tokenizer(best)
    if same:
        return welch_test(ours.losses, best.losses, MIN_GAIN_NATS)
    if same is None:
        return (f"cannot tell whether {folder.name} used our tokenizer (no VOCAB_SIZE/TOKENIZER_PATH in its logs and "
                "no val_bpb with val_loss to compare), and val_loss in nats is only comparable with one tokenizer")
    if len(best.bpbs) < 2 or best.ratio is None:
        return (f"the tokenizers differ (ours {ours.tokenizer or f'{ours.ratio:.4f} bpb/nat'}, {folder.name} "
                f"{best.tokenizer or f'{best.ratio:.4f} bpb/nat'}), so the test must run on val_bpb, and "
                f"{folder.name} gives fewer than 2 per-seed val_bpb values with val_loss")
    margin = MIN_GAIN_NATS * best.ratio
    sig = welch_test(ours.bpbs, best.bpbs, margin)
    ours_tok = ours.tokenizer or f"{ours.ratio:.4f} bpb/nat"
    best_tok = best.tokenizer or f"{best.ratio:.4f} bpb/nat"
    sig.test += (f" on val_bpb: the tokenizers differ (ours {ours_tok}, best {best_tok}) and nats are not comparable "
                 f"across tokenizers; margin 0.005 nats = {margin:.6f} bpb at the best record's {best.ratio:.6f} bpb/nat")
    return sig


def significance_from_args(args, runs: list[RunLog]) -> SigTest | str | None:
    """SigTest, or a reason string when a test was asked for but cannot run, or None."""
    best_loss = getattr(args, "best_loss", None)
    best_bpb = getattr(args, "best_bpb", None)
    best_losses = getattr(args, "best_losses", None)
    best_record = getattr(args, "best_record", None)
    if best_loss is None and best_bpb is None and best_losses is None and best_record is None:
        return None
    ours = side_of_runs(runs)
    losses, bpbs = ours.losses, ours.bpbs
    try:
        if best_record is not None:
            return record_test(ours, best_side_of(Path(best_record)), Path(best_record))
        if best_losses is not None:
            return welch_test(losses, parse_float_list(best_losses), MIN_GAIN_NATS)
        if best_loss is not None:
            return one_sample_test(losses, float(best_loss), MIN_GAIN_NATS)
        # bpb: the 0.005-nat margin is converted with our logs' bpb-per-nat ratio
        ratio = mean(b / l for b, l in zip(bpbs, losses))
        sig = one_sample_test(bpbs, float(best_bpb), MIN_GAIN_NATS * ratio)
        sig.test += f" on val_bpb; margin 0.005 nats = {MIN_GAIN_NATS * ratio:.6f} bpb (ratio {ratio:.6f} from our logs)"
        return sig
    except (ValueError, ZeroDivisionError) as e:
        return str(e)
