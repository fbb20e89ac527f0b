"""Is a figure above its null? One home for the tests every verdict goes through.

Every verdict is a p-value from a stated test, compared with one alpha (`ALPHA`), and says in its
`test` how many draws it had; a figure that counts several tests corrects for them (Holm for "is
any of them real", Benjamini-Hochberg where a count of discoveries is reported).
- Rates (accuracies, success rates): one-sided Fisher exact test against a rate measured in the
  same run, or a one-sided binomial test against a fixed chance level (scipy.stats).
- Statistics with a permutation or sampling null (classes, coverage, cosines, ablations): the
  permutation p-value (1 + draws at or above the value) / (1 + draws). A null with too few draws
  to reach alpha cannot give "above"; the verdict says so ("p = 1/8: cannot reach 0.01 with 7
  draws"). A figure may state a minimum effect over its null's mean: below it, the verdict is
  NOT above whatever p says (a null identically 0 makes any positive value "significant").
Hand-written here: the permutation p (scipy's `permutation_test` draws its own permutations; ours
come from nulls that keep the tokenizer and the dictionary, built by the caller) and Holm's step-down
(scipy has Benjamini-Hochberg, `false_discovery_control`, not Holm). docs/method.md, "Nulls" and
"Calibration", says which null each figure has and what error rates the bench measured.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

ALPHA = 0.01
"""The one significance level of every verdict (one-sided; family-wise where a figure counts several tests)."""


@dataclass(frozen=True)
class Verdict:
    value: float | None
    null: float | None
    """The null's level: its rate, its mean over draws, or its threshold (see `test`)."""
    above: bool
    """True only when the figure exists and beats its null by the test."""
    test: str
    p: float | None = None
    note: str | None = None
    """Why a figure is NOT above whatever its p says (too few draws to reach alpha, below the
    minimum effect, a condition not met), in words; None when the p-value decides."""

    def to_json(self) -> dict:
        return {k: _finite(v) for k, v in asdict(self).items()}

    @staticmethod
    def from_json(d: dict | None, reason: str = "not computed") -> Verdict:
        """Read back `to_json` (or any dict with value/null/above/test); a missing one is `missing(reason)`."""
        if not d or "above" not in d:
            return missing(reason)
        return Verdict(d.get("value"), d.get("null"), bool(d["above"]), d.get("test", ""), d.get("p"), d.get("note"))


def _finite(v):
    if isinstance(v, float) and not np.isfinite(v):
        return None
    return v


def missing(reason: str) -> Verdict:
    """A figure that could not be computed (no classes, no cases): never above its null."""
    return Verdict(None, None, False, f"not computed: {reason}")


def fmt_p(p: float | None) -> str:
    """A p-value as people read it: "< 0.001" rather than 0.000."""
    if p is None:
        return "n/a"
    return "< 0.001" if p < 0.001 else f"{p:.3f}" if p < 0.1 else f"{p:.2f}"


def permutation_p(value: float, draws: Sequence[float]) -> float:
    """One-sided permutation p-value: (1 + draws at or above `value`) / (1 + draws); never 0."""
    return float((1 + sum(d >= value for d in draws)) / (1 + len(draws)))


def draws_for(tests: int = 1, alpha: float = ALPHA) -> int:
    """Null draws a permutation test needs so that its smallest possible p, 1 / (draws + 1), is half
    the strictest threshold of a correction over `tests` (Holm's first, alpha / tests): 199 for one
    test at 0.01, 1999 for ten, 5999 for thirty."""
    return math.ceil(2 * tests / alpha) - 1


def holm(pvalues: Sequence[float], alpha: float = ALPHA) -> list[bool]:
    """Holm's step-down: which of the tests are rejected with family-wise error <= alpha."""
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    rejected = [False] * len(pvalues)
    for rank, i in enumerate(order):
        if pvalues[i] > alpha / (len(pvalues) - rank):
            break
        rejected[i] = True
    return rejected


def benjamini_hochberg(pvalues: Sequence[float], alpha: float = ALPHA) -> list[bool]:
    """Which tests are discoveries at false-discovery rate alpha (scipy's `false_discovery_control`)."""
    if not len(pvalues):
        return []
    adjusted = stats.false_discovery_control(np.asarray(pvalues, dtype=float), method="bh")
    return [bool(a <= alpha) for a in adjusted]


def rate_vs_rate(hits: int, n: int, null_hits: int, null_n: int, alpha: float = ALPHA) -> Verdict:
    """Is hits/n above null_hits/null_n? One-sided Fisher exact test on the 2x2 table."""
    if n == 0 or null_n == 0:
        return missing("no cases")
    table = [[hits, n - hits], [null_hits, null_n - null_hits]]
    p = float(stats.fisher_exact(table, alternative="greater")[1])
    return Verdict(hits / n, null_hits / null_n, p <= alpha, f"one-sided Fisher exact, {n} vs {null_n} cases, alpha {alpha}", p)


def rate_vs_chance(hits: int, n: int, chance: float, alpha: float = ALPHA, comparisons: int = 1) -> Verdict:
    """Is hits/n above a fixed chance level? One-sided binomial test (Bonferroni over `comparisons`)."""
    if n == 0:
        return missing("no cases")
    p = float(stats.binomtest(int(hits), int(n), chance, alternative="greater").pvalue)
    level = alpha / comparisons
    name = f"one-sided binomial vs chance over {n} cases, alpha {alpha}" + (f"/{comparisons} (Bonferroni)" if comparisons > 1 else "")
    return Verdict(hits / n, chance, p <= level, name, p)


def value_vs_draws(value: float | None, draws: Sequence[float | None], what: str, min_effect: float = 0.0,
                   alpha: float = ALPHA) -> Verdict:
    """Is `value` above a permutation or sampling null? Above when the permutation p is at most
    `alpha` and the value exceeds the draws' mean (the null level) by at least `min_effect`."""
    finite = [float(d) for d in draws if d is not None and np.isfinite(d)]
    if value is None or not np.isfinite(value):
        return missing("no value")
    if not finite:
        return missing("no null draws")
    p, level, n = permutation_p(value, finite), float(np.mean(finite)), len(finite)
    test = f"permutation test against {n} draws of the {what}, alpha {alpha}"
    if min_effect:
        test += f", minimum effect {min_effect:g}"
    if max(finite) == min(finite):
        test += f" (the null is constant at {finite[0]:.3g})"
    note = None
    if 1 / (n + 1) > alpha:
        note = f"p = 1/{n + 1}: cannot reach {alpha} with {n} draws"
    elif p <= alpha and value - level < min_effect:
        note = f"{value - level:.3g} over the null's mean, below the minimum effect {min_effect:g}"
    return Verdict(float(value), level, p <= alpha and note is None, test, p, note)


def value_vs_quantile(value: float | None, draws: Sequence[float], what: str, alpha: float = ALPHA) -> Verdict:
    """Is `value` above a sampled null (p <= alpha)? Null level: its 1 - alpha quantile, the value to beat."""
    if value is None or not np.isfinite(value):
        return missing("no value")
    finite = [float(d) for d in draws if np.isfinite(d)]
    threshold = float(np.quantile(finite, 1 - alpha))
    v = value_vs_draws(value, finite, what, alpha=alpha)
    return Verdict(v.value, threshold, v.above, v.test.replace("permutation test", "sampling test"), v.p, v.note)


def all_of(verdicts: dict[str, Verdict], name: str) -> Verdict:
    """Above every one of several nulls (an intersection-union test: its p is the largest p, so
    its error rate is at most alpha with no correction). Null level: the highest null level."""
    if not verdicts or any(v.value is None for v in verdicts.values()):
        return next((v for v in verdicts.values() if v.value is None), missing("no null"))
    first = next(iter(verdicts.values()))
    notes = [f"{k}: {v.note}" for k, v in verdicts.items() if v.note]
    p = max(v.p if v.p is not None else 1.0 for v in verdicts.values())
    return Verdict(first.value, max(v.null or 0.0 for v in verdicts.values()), all(v.above for v in verdicts.values()),
                   f"above each of {name} (p the largest of theirs): " + "; ".join(f"{k}: {v.test}" for k, v in verdicts.items()),
                   p, "; ".join(notes) or None)


def words(name: str, verdict: Verdict, paper=None, fmt: str = "{:.2f}") -> str:
    """One line a reader can act on: figure, null and paper side by side, the verdict in words with
    its p, and why a figure is not above when the p alone would not say (`Verdict.note`)."""
    f = lambda v: "n/a" if v is None else fmt.format(v)  # noqa: E731
    paper_part = f"; paper {paper}" if paper is not None else ""
    if verdict.value is None:
        return f"{name}: not computed ({verdict.test.removeprefix('not computed: ')}){paper_part}: NOT above its null"
    p_part = f" (p {fmt_p(verdict.p)})" if verdict.p is not None else ""
    tail = "above its null" if verdict.above else "NOT above its null"
    note = f" ({verdict.note})" if verdict.note and not verdict.above else ""
    return f"{name}: {f(verdict.value)} vs null {f(verdict.null)}{paper_part}: {tail}{p_part}{note}"


def paired_ab(after: Sequence[float], before: Sequence[float], seed: int = 0, draws: int = 2000) -> dict:
    """An A/B test on paired units (the same prompts or windows measured without and with a change):
    the mean difference after - before, its paired bootstrap 95% interval (units resampled with
    replacement, `draws` times, by `seed`) and a two-sided paired sign-flip permutation p-value
    (each unit's difference negated at random). `excludes_zero`: the interval lies on one side of 0."""
    d = np.asarray(after, dtype=float) - np.asarray(before, dtype=float)
    if d.size == 0 or not np.all(np.isfinite(d)):
        return {"delta": None, "ci95": [None, None], "p": None, "n": int(d.size), "excludes_zero": False}
    rng = np.random.default_rng(seed)
    boot = d[rng.integers(0, d.size, size=(draws, d.size))].mean(1)
    lo, hi = (float(v) for v in np.quantile(boot, [0.025, 0.975]))
    flips = np.where(rng.random((draws, d.size)) < 0.5, -1.0, 1.0)
    observed = abs(d.mean())
    p = float((1 + (np.abs((flips * d).mean(1)) >= observed - 1e-12).sum()) / (1 + draws)) if observed > 0 else 1.0
    return {"delta": float(d.mean()), "ci95": [lo, hi], "p": p, "n": int(d.size), "excludes_zero": bool(lo > 0 or hi < 0)}
