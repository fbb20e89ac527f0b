"""Linear probes for index mod 10 (scikit-learn), evaluated leave-one-task-out.

Both variants of a task (" days" and "days") are held out together, so a probe never sees a
near-copy of a test item. The held-out Roman numerals are never trained on. A shuffled-label
control (same model, labels permuted within the training set) gives the chance baseline.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import Tensor

from successor_lens.features.matrix import ItemTable


def _fit(X: np.ndarray, y: np.ndarray, seed: int):
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0, random_state=seed)).fit(X, y)


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

    def summary(self) -> dict:
        return {"accuracy": self.accuracy, "shuffled_label_control": self.control, "n_items": self.n_items, "chance": 0.1}


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
    scaler, clf = full[0], full[1]
    W = torch.tensor(clf.coef_ / scaler.scale_, dtype=torch.float32)  # back to activation space
    return ProbeResult(accuracy, control, counts, W / W.norm(dim=-1, keepdim=True), [int(c) for c in clf.classes_])


@dataclass
class CosineReport:
    per_class: dict[int, float]
    mean: float
    random_baseline: float
    """Mean |cosine| of the probe rows with random unit directions."""
    mismatched_baseline: float
    """Mean cosine of probe row c with SAE feature c' != c."""

    def summary(self) -> dict:
        return {"per_class": self.per_class, "mean": self.mean, "random_baseline": self.random_baseline,
                "mismatched_class_baseline": self.mismatched_baseline, "paper_mean": 0.71}


def probe_feature_cosine(probe: ProbeResult, directions: dict[int, Tensor], seed: int = 0) -> CosineReport:
    rows = {c: probe.directions[i] for i, c in enumerate(probe.classes)}
    shared = sorted(set(rows) & set(directions))
    per_class = {c: float(torch.dot(rows[c], directions[c])) for c in shared}
    gen = torch.Generator().manual_seed(seed)
    rand = torch.randn(256, probe.directions.shape[1], generator=gen)
    rand /= rand.norm(dim=-1, keepdim=True)
    random_baseline = float((probe.directions @ rand.T).abs().mean())
    off = [float(torch.dot(rows[a], directions[b])) for a in shared for b in shared if a != b]
    return CosineReport(
        per_class, float(np.mean(list(per_class.values()))) if per_class else float("nan"),
        random_baseline, float(np.mean(off)) if off else float("nan"),
    )
