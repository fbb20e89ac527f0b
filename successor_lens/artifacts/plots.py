"""Plots: every figure is written atomically as PNG with a non-interactive backend."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from torch import Tensor  # noqa: E402

from successor_lens.io import atomic_path  # noqa: E402


def save(fig, path: str | os.PathLike) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def head_heatmap(scores_LH: Tensor, path: str | os.PathLike, title: str, top: int = 5, vmax: float = 1.0) -> Path:
    """Layer x head heatmap with the top heads labelled L{layer}H{head}."""
    n_layers, n_heads = scores_LH.shape
    fig, ax = plt.subplots(figsize=(max(4, 0.5 * n_heads + 2), max(3, 0.22 * n_layers + 1.5)))
    im = ax.imshow(scores_LH.numpy(), aspect="auto", cmap="viridis", vmin=0.0, vmax=vmax, origin="lower")
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_xticks(range(n_heads))
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, label="score")
    for i in scores_LH.flatten().argsort(descending=True)[:top].tolist():
        layer, head = divmod(i, n_heads)
        ax.annotate(f"L{layer}H{head}", (head, layer), color="red", fontsize=7, ha="center", va="center")
    return save(fig, path)
