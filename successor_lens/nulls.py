"""Is a figure above its null? One home for the tests every headline figure goes through.

Each test returns a `Verdict`: the figure, its null, whether the figure is above the null, the
test used and its p-value. Rates (accuracies, success rates) are compared with a one-sided
Fisher exact test against a null measured in the same run (shuffled labels, random directions),
or a one-sided binomial test against a fixed chance level; statistics with a permutation or
sampling null (classes found, coverage, cosines) must exceed every null draw (or its 99th
percentile for sampled nulls). docs/method.md section "Nulls" says which null each figure has.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

ALPHA = 0.01
"""One-sided significance level of the rate tests."""


@dataclass(frozen=True)
class Verdict:
    value: float | None
    null: float | None
    """The null's level: its rate, its mean over draws, or its threshold (see `test`)."""
    above: bool
    """True only when the figure exists and beats its null by the test."""
    test: str
    p: float | None = None

    def to_json(self) -> dict:
        return {k: _finite(v) for k, v in asdict(self).items()}

    @staticmethod
    def from_json(d: dict | None, reason: str = "not computed") -> Verdict:
        """Read back `to_json` (or any dict with value/null/above/test); a missing one is `missing(reason)`."""
        if not d or "above" not in d:
            return missing(reason)
        return Verdict(d.get("value"), d.get("null"), bool(d["above"]), d.get("test", ""), d.get("p"))


def _finite(v):
    if isinstance(v, float) and not np.isfinite(v):
        return None
    return v


def missing(reason: str) -> Verdict:
    """A figure that could not be computed (no classes, no cases): never above its null."""
    return Verdict(None, None, False, f"not computed: {reason}")


def rate_vs_rate(hits: int, n: int, null_hits: int, null_n: int, alpha: float = ALPHA) -> Verdict:
    """Is hits/n above null_hits/null_n? One-sided Fisher exact test on the 2x2 table."""
    if n == 0 or null_n == 0:
        return missing("no cases")
    table = [[hits, n - hits], [null_hits, null_n - null_hits]]
    p = float(stats.fisher_exact(table, alternative="greater")[1])
    return Verdict(hits / n, null_hits / null_n, p < alpha, f"one-sided Fisher exact, alpha {alpha}", p)


def rate_vs_chance(hits: int, n: int, chance: float, alpha: float = ALPHA, comparisons: int = 1) -> Verdict:
    """Is hits/n above a fixed chance level? One-sided binomial test (Bonferroni over `comparisons`)."""
    if n == 0:
        return missing("no cases")
    p = float(stats.binomtest(int(hits), int(n), chance, alternative="greater").pvalue)
    level = alpha / comparisons
    name = f"one-sided binomial vs chance, alpha {alpha}" + (f"/{comparisons} (Bonferroni)" if comparisons > 1 else "")
    return Verdict(hits / n, chance, p < level, name, p)


def value_vs_draws(value: float | None, draws: Sequence[float], what: str) -> Verdict:
    """Is `value` above every draw of a permutation null (p <= 1/(draws+1))? Null level: the draws' mean."""
    draws = [d for d in draws if d is not None and np.isfinite(d)]
    if value is None or not np.isfinite(value):
        return missing("no value")
    if not draws:
        return missing("no null draws")
    p = (1 + sum(d >= value for d in draws)) / (1 + len(draws))
    return Verdict(float(value), float(np.mean(draws)), bool(value > max(draws)),
                   f"above all {len(draws)} draws of the {what}", float(p))


def value_vs_quantile(value: float | None, draws: Sequence[float], what: str, q: float = 1 - ALPHA) -> Verdict:
    """Is `value` above the q-quantile of a sampled null? Null level: that quantile."""
    if value is None or not np.isfinite(value):
        return missing("no value")
    finite = np.asarray([d for d in draws if np.isfinite(d)])
    threshold = float(np.quantile(finite, q))
    p = float((1 + (finite >= value).sum()) / (1 + len(finite)))
    return Verdict(float(value), threshold, bool(value > threshold), f"above the {q:.0%} quantile of the {what}", p)


def words(name: str, verdict: Verdict, paper=None, fmt: str = "{:.2f}") -> str:
    """One line a reader can act on: figure, null and paper side by side, and the verdict in words."""
    f = lambda v: "n/a" if v is None else fmt.format(v)  # noqa: E731
    paper_part = f"; paper {paper}" if paper is not None else ""
    if verdict.value is None:
        return f"{name}: not computed ({verdict.test.removeprefix('not computed: ')}){paper_part}: NOT above its null"
    tail = "above its null" if verdict.above else "NOT above its null"
    return f"{name}: {f(verdict.value)} vs null {f(verdict.null)}{paper_part}: {tail}"


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
