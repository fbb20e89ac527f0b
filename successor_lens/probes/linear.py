"""Linear probes for index mod 10 (scikit-learn), evaluated leave-one-task-out.

Both variants of a task (" days" and "days") are held out together, so a probe never sees a
near-copy of a test item. The held-out Roman numerals are never trained on. A shuffled-label
control (same model, labels permuted within the training set) gives the chance baseline.

Inputs are centred and divided by one global scale, not standardised per dimension: a probe fit
on per-dimension standardised inputs maps back to activation space as coef / scale, which
stretches its rows along low-variance dimensions (docs/method.md, "Probes"). With one scale the
probe rows are directions in activation space as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from torch import Tensor

from successor_lens.features.matrix import ItemTable
from successor_lens.nulls import Verdict, missing, rate_vs_rate, value_vs_quantile
from successor_lens.paper import FIGURES


class IsotropicScaler(TransformerMixin, BaseEstimator):
    """Centre, then divide every dimension by the same number (the root mean squared deviation)."""

    def fit(self, X, y=None):
        self.mean_ = X.mean(0)
        self.scale_ = float(np.sqrt(((X - self.mean_) ** 2).sum(1).mean())) or 1.0
        return self

    def transform(self, X):
        return (X - self.mean_) / self.scale_


def _fit(X: np.ndarray, y: np.ndarray, seed: int):
    return make_pipeline(IsotropicScaler(), LogisticRegression(max_iter=2000, C=1.0, random_state=seed)).fit(X, y)


@dataclass
class ProbeResult:
    accuracy: dict[str, float]
    """Held-out task -> accuracy of the probe trained on the other tasks."""
    control: dict[str, float]
    """Same, with the training labels shuffled."""
    n_items: dict[str, int]
    directions: Tensor
    """[classes, d] probe rows mapped back to activation space (fit on all training tasks), unit norm."""
    classes: list[int]
    other_directions: Tensor | None = None
    """[classes, d] the same, fit on the non-number items only: items whose class is not written
    in the token they are read at (the probe/feature cosine that a tokenizer cannot give away)."""
    other_classes: list[int] | None = None

    def verdict(self) -> Verdict:
        """Held-out accuracy pooled over the items of every non-number task (the paper's 94/102 are
        non-number items), vs the same pool with shuffled training labels."""
        tasks = [t for t in self.accuracy if t != "numbers"]
        n = sum(self.n_items[t] for t in tasks)
        hits = round(sum(self.accuracy[t] * self.n_items[t] for t in tasks))
        null_hits = round(sum(self.control[t] * self.n_items[t] for t in tasks))
        return rate_vs_rate(hits, n, null_hits, n)

    def summary(self) -> dict:
        return {"accuracy": self.accuracy, "shuffled_label_control": self.control, "n_items": self.n_items, "chance": 0.1,
                "pooled": self.verdict().to_json()}


def leave_one_task_out(acts_ND: Tensor, table: ItemTable, seed: int = 0, modulus: int = 10) -> ProbeResult:
    X = acts_ND.float().numpy()
    y = (table.residues % modulus).numpy()
    tasks = np.array(table.base_tasks)
    held = table.held_out.numpy()
    rng = np.random.default_rng(seed)
    accuracy, control, counts = {}, {}, {}
    for task in dict.fromkeys(tasks.tolist()):
        test = tasks == task
        train = ~test & ~held
        if len(set(y[train])) < 2:
            continue
        counts[task] = int(test.sum())
        accuracy[task] = float((_fit(X[train], y[train], seed).predict(X[test]) == y[test]).mean())
        shuffled = rng.permutation(y[train])
        control[task] = float((_fit(X[train], shuffled, seed).predict(X[test]) == y[test]).mean())

    full = _fit(X[~held], y[~held], seed)
    W = torch.tensor(full[1].coef_, dtype=torch.float32)  # one global scale: already activation-space directions
    other = ~held & ~table.is_number.numpy()
    W_other, other_classes = None, None
    if len(set(y[other])) >= 2:
        fit = _fit(X[other], y[other], seed)
        W_other = torch.tensor(fit[1].coef_, dtype=torch.float32)
        W_other, other_classes = W_other / W_other.norm(dim=-1, keepdim=True), [int(c) for c in fit[1].classes_]
    return ProbeResult(accuracy, control, counts, W / W.norm(dim=-1, keepdim=True), [int(c) for c in full[1].classes_],
                       W_other, other_classes)


def class_mean_directions(acts_ND: Tensor, table: ItemTable, modulus: int = 10) -> dict[int, Tensor]:
    """Unit direction of each class's mean activation minus the overall mean (non-held-out items)."""
    keep = ~table.held_out
    x, y = acts_ND[keep].float(), table.residues[keep] % modulus
    centre = x.mean(0)
    out = {}
    for c in range(modulus):
        if (y == c).any():
            d = x[y == c].mean(0) - centre
            out[c] = d / d.norm().clamp_min(1e-12)
    return out


RANDOM_DRAWS = 2000
"""Draws of random directions for the cosine null."""


@dataclass
class CosineReport:
    per_class: dict[int, float]
    mean: float | None
    random_baseline: float
    """Mean |cosine| of the probe rows with random unit directions."""
    mismatched_baseline: float | None
    """Mean cosine of probe row c with SAE feature c' != c."""
    verdict: Verdict
    """The mean cosine vs the 99% quantile of the same mean with random unit directions."""
    class_mean: float | None
    """Mean cosine of probe row c with the class-mean direction c (a reference: what a feature
    read off the data's class means would score)."""

    def summary(self) -> dict:
        return {"per_class": self.per_class, "mean": self.mean, "random_baseline": self.random_baseline,
                "mismatched_class_baseline": self.mismatched_baseline, "class_mean_directions": self.class_mean,
                "verdict": self.verdict.to_json(), "paper_mean": FIGURES["probe_feature_cosine"]}


def probe_feature_cosine(probe: ProbeResult, directions: dict[int, Tensor], seed: int = 0,
                         class_means: dict[int, Tensor] | None = None, non_numbers: bool = False) -> CosineReport:
    """Mean cosine of probe row c with feature c over the classes both have, vs random directions.
    `non_numbers`: the probe fit on the non-number items only (`ProbeResult.other_directions`)."""
    if non_numbers and (probe.other_directions is None or probe.other_classes is None):
        return CosineReport({}, None, 0.0, None, missing("no probe on non-number items"), None)
    W, classes = (probe.other_directions, probe.other_classes) if non_numbers else (probe.directions, probe.classes)
    assert W is not None and classes is not None
    rows = {c: W[i] for i, c in enumerate(classes)}
    shared = sorted(set(rows) & set(directions))
    per_class = {c: float(torch.dot(rows[c], directions[c])) for c in shared}
    gen = torch.Generator().manual_seed(seed)
    d = W.shape[1]
    rand = torch.randn(256, d, generator=gen)
    rand /= rand.norm(dim=-1, keepdim=True)
    random_baseline = float((W @ rand.T).abs().mean())
    off = [float(torch.dot(rows[a], directions[b])) for a in shared for b in shared if a != b]
    mean = float(np.mean(list(per_class.values()))) if per_class else None
    if shared:  # null: the same statistic with a random unit direction in place of each feature
        R = torch.randn(RANDOM_DRAWS, len(shared), d, generator=gen)
        R /= R.norm(dim=-1, keepdim=True)
        P = torch.stack([rows[c] for c in shared])
        draws = (R * P).sum(-1).mean(-1).tolist()
        verdict = value_vs_quantile(mean, draws, "mean cosine with random unit directions")
    else:
        verdict = missing("no mod-10 class shared by the probe and the features")
    cm = [float(torch.dot(rows[c], class_means[c])) for c in rows if class_means and c in class_means]
    return CosineReport(per_class, mean, random_baseline, float(np.mean(off)) if off else None, verdict,
                        float(np.mean(cm)) if cm else None)
