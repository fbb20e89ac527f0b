"""Plots: every figure is written atomically as PNG with a non-interactive backend."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from successor_lens.filenames import (  # noqa: E402
    ARITHMETIC_PNG,
    HEADS_COPYING_PNG,
    HEADS_PNG,
    INCONTEXT_PNG,
    OFFSET_PNG,
    PROBE_PNG,
    WILD_PNG,
)
from successor_lens.io import atomic_path  # noqa: E402
from successor_lens.paper import SUCCESSOR_BAR  # noqa: E402
from successor_lens.probes.scan import READOUT_BAR  # noqa: E402

DPI = 110
MAX_WIDTH_PX = 1060
"""The widest a figure may be: the atlas pages' content column at a 1280 px window (1100 px less
padding), so a figure is shown at its own size and its text at the size it was drawn."""
MIN_TEXT_PX = 9
"""The smallest text a figure may hold, in pixels as shown (its points x dpi / 72)."""
TEXT_PT = 8
"""The smallest font the figures use (8 pt at 110 dpi is 12 px)."""
MIN_TEXT_KEY = "successor-lens:min-text-px"


def save(fig, path: str | os.PathLike) -> Path:
    """Write `fig` as PNG at `DPI`, lowered (never below the dpi that keeps `MIN_TEXT_PX`) when the
    figure would be wider than `MAX_WIDTH_PX`. The smallest text size in pixels is recorded in the
    PNG (`MIN_TEXT_KEY`), so the tests can hold every figure to it."""
    from matplotlib.text import Text

    fig.canvas.draw()
    texts = [t for t in fig.findobj(Text) if t.get_text().strip() and t.get_visible()]
    smallest = min((t.get_fontsize() for t in texts), default=TEXT_PT)
    width_in = fig.get_tightbbox(fig.canvas.get_renderer()).width + 0.2
    dpi = max(min(DPI, MAX_WIDTH_PX / width_in), MIN_TEXT_PX * 72 / smallest)  # never so low that text drops below MIN_TEXT_PX
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight", metadata={MIN_TEXT_KEY: f"{smallest * dpi / 72:.2f}"})
    plt.close(fig)
    return Path(path)


def head_heatmap(scores_LH: Tensor, path: str | os.PathLike, title: str, top: int = 5, null: float | None = None,
                 bar: float | None = None, label: str = "score", floor: tuple[float, str] | None = None) -> Path:
    """Layer x head heatmap with the top heads labelled L{layer}H{head}; the colour scale spans the
    data, the null and the paper's bar, and at least up to `floor` ((score, what a head at it does)),
    so a map where no head does it is not drawn in the brightest colours: the title says so ("no
    head copies: best 0.05, chance 0.03"). The null is a labelled line across the colour bar."""
    n_layers, n_heads = scores_LH.shape
    data = scores_LH.float().nan_to_num(0.0)
    lo, hi = min(0.0, float(data.min())), float(data.max())
    best = hi
    for level in (null, bar, floor[0] if floor else None):
        hi = max(hi, level) if level is not None else hi
    hi = hi if hi > lo else lo + 1e-6
    fig, ax = plt.subplots(figsize=(min(8.5, max(4.5, 0.45 * n_heads + 2.5)), min(9.0, max(3.2, 0.22 * n_layers + 1.6))))
    im = ax.imshow(data.numpy(), aspect="auto", cmap="viridis", vmin=lo, vmax=hi, origin="lower")
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_xticks(range(0, n_heads, max(1, n_heads // 16)))
    ax.set_yticks(range(0, n_layers, max(1, n_layers // 12)))
    cb = fig.colorbar(im, ax=ax, label=label)
    notes = []
    if floor is not None and best < floor[0]:
        notes.append(f"no head {floor[1]}: best {best:.2f}" + (f", chance {null:.2f}" if null is not None else ""))
    if null is not None:
        cb.ax.axhline(null, color="white", lw=4)
        cb.ax.axhline(null, color="black", lw=1.5, ls="--")
        cb.ax.text(-0.1, null, "chance ", color="black", fontsize=TEXT_PT, ha="right", va="center", transform=cb.ax.get_yaxis_transform())
        notes.append(f"dashed line on the colour bar: chance {null:.3f}")
    if bar is not None:
        cb.ax.axhline(bar, color="red", lw=2.5)
        notes.append(f"red line: paper's bar {bar}")
    ax.set_title(title + ("\n" + "; ".join(notes) if notes else ""), fontsize=9)
    for i in data.flatten().argsort(descending=True)[:top].tolist():
        layer, head = divmod(i, n_heads)
        ax.annotate(f"L{layer}H{head}", (head, layer), color="red", fontsize=TEXT_PT, ha="center", va="center")
    return save(fig, path)


def class_latent_heatmap(profile_FC: Tensor, latent_class: dict[int, int], path, title: str) -> Path:
    """Mean activation per residue class for the latents assigned to a class, grouped by class."""
    latents = sorted(latent_class, key=lambda l: (latent_class[l], l))
    fig, ax = plt.subplots(figsize=(min(8.5, max(5, 0.5 * len(latents) + 2)), 4))
    if latents:
        data = profile_FC[latents].T
        data = data / data.max(0, keepdim=True).values.clamp_min(1e-12)
        im = ax.imshow(data.numpy(), aspect="auto", cmap="magma", origin="lower")
        step = max(1, len(latents) // 40)
        ax.set_xticks(range(0, len(latents), step))
        ax.set_xticklabels([str(l) for l in latents][::step], fontsize=TEXT_PT, rotation=90)
        groups: dict[int, list[int]] = {}
        for i, l in enumerate(latents):
            groups.setdefault(latent_class[l], []).append(i)
        top = ax.secondary_xaxis("top")  # each class's latents under one label, split by white lines
        top.set_xticks([(g[0] + g[-1]) / 2 for g in groups.values()])
        top.set_xticklabels([f"class {c}" if len(g) > 2 else str(c) for c, g in groups.items()], fontsize=TEXT_PT)
        top.tick_params(length=0)
        for g in list(groups.values())[1:]:
            ax.axvline(g[0] - 0.5, color="white", lw=1.5)
        fig.colorbar(im, ax=ax, label="activation / latent max")
    else:
        ax.text(0.5, 0.5, "no latent passed the selectivity threshold", ha="center", va="center", transform=ax.transAxes)
    ax.set_ylabel("index mod 10")
    ax.set_yticks(range(10))
    ax.set_xlabel("latent index, grouped by the class it was assigned (top)")
    ax.set_title(title, fontsize=9, pad=18 if latents else 6)
    return save(fig, path)


def grouped_bars(groups: dict[str, dict[str, float]], path, title: str, ylabel: str, chance: float | None = None) -> Path:
    """One bar group per category (x), one bar per series (e.g. real vs control)."""
    series = list(groups)
    cats = list(dict.fromkeys(c for s in series for c in groups[s]))
    fig, ax = plt.subplots(figsize=(min(7.0, max(4.5, 0.35 * len(cats) * len(series) + 1.5)), 3.6))
    width = 0.8 / max(1, len(series))
    for i, s in enumerate(series):
        xs = [j + i * width for j in range(len(cats))]
        ax.bar(xs, [groups[s].get(c, 0.0) for c in cats], width, label=s)
    if chance is not None:
        ax.axhline(chance, color="gray", ls="--", lw=1, label="chance")
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(cats))])
    ax.set_xticklabels(cats, rotation=45, ha="right", fontsize=TEXT_PT)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=TEXT_PT, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return save(fig, path)


def offset_plot(profile: dict[str, dict[int, float]], path, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for task, values in profile.items():
        if values:
            xs = sorted(values)
            ax.plot(xs, [values[x] for x in xs], lw=2.5 if task == "all" else 0.8, label=task, alpha=1.0 if task == "all" else 0.6)
    ax.axvline(1, color="gray", ls="--", lw=1)
    ax.set_xlabel("candidate index - input index")
    ax.set_ylabel("mean centred OV logit")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=TEXT_PT, ncol=1 if len(profile) <= 14 else 2, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return save(fig, path)


def histogram(heights: list[float], centres: list[float], path, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(4.5, 2.6))
    if heights:
        width = (centres[1] - centres[0]) if len(centres) > 1 else 1.0
        ax.bar(centres, heights, width=width * 0.9, color="#4c72b0")
    else:
        ax.text(0.5, 0.5, "never fires on these items", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("activation (non-zero)")
    ax.set_ylabel("items")
    ax.set_title(title, fontsize=9)
    return save(fig, path)


# --- figure sets, drawn from the JSON documents (the run folder's and the atlas's are the same) ---


def _int_keys(profile: dict) -> dict[str, dict[int, float]]:
    return {task: {int(k): v for k, v in values.items()} for task, values in profile.items()}


def scan_figures(model_name: str, embedding: str, succession, copying, folder: Path, null: float | None = None) -> list[Path]:
    """heads.png and heads_copying.png: the layer x head succession and copying heatmaps, with the
    scan's chance level (`null`) and the paper's bar marked."""
    folder = Path(folder)
    return [
        head_heatmap(torch.as_tensor(succession), folder / HEADS_PNG, f"{model_name}: succession score ({embedding})", null=null,
                     bar=SUCCESSOR_BAR, label="succession score", floor=(SUCCESSOR_BAR, "passes the paper's bar")),
        head_heatmap(torch.as_tensor(copying), folder / HEADS_COPYING_PNG, f"{model_name}: copying score (control)", null=null, label="copying score",
                     floor=(READOUT_BAR, f"copies (a copying head scores {READOUT_BAR} or more)")),
    ]


def probe_figures(probes: dict, folder: Path) -> list[Path]:
    """probe_accuracy.png, arithmetic.png and offset_profile.png from probe.json's fields."""
    folder, p = Path(folder), probes["probe_mlp0"]
    return [
        grouped_bars({"MLP0 probe": p["accuracy"], "embedding probe": probes["probe_embed"]["accuracy"],
                      "shuffled-label control": p["shuffled_label_control"]},
                     folder / PROBE_PNG, "index mod 10, leave-one-task-out", "accuracy", chance=0.1),
        grouped_bars({k: v["per_task"] for k, v in probes["arithmetic"].items()}, folder / ARITHMETIC_PNG,
                     f"vector arithmetic through {probes['head']}", "success"),
        offset_plot(_int_keys(probes["offset_profile"]), folder / OFFSET_PNG, f"{probes['head']}: OV logit by index offset"),
    ]


def wild_figures(wild: dict, folder: Path) -> list[Path]:
    """wild_categories.png and incontext_dla.png from wild.json's fields."""
    folder = Path(folder)
    dla = torch.as_tensor(wild["in_context"]["dla"])
    return [
        grouped_bars({h["head"]: h["category_shares"] for h in wild["heads"]}, folder / WILD_PNG,
                     "where each head helps most: category shares", "share of positions"),
        head_heatmap(dla, folder / INCONTEXT_PNG, "in-context succession: DLA on the answer", null=0.0, label="DLA (logits)"),
    ]


def succession_distribution(names: list[str], scores: list[list[float]], path) -> Path:
    """Every head's OV succession score, one column of points per model, the best head labelled and
    the paper's bar drawn: a successor head stands far above its model's other heads."""
    fig, ax = plt.subplots(figsize=(min(7.5, 1.6 + 1.5 * len(names)), 3.8))
    gen = torch.Generator().manual_seed(0)
    for i, (_name, values) in enumerate(zip(names, scores)):
        x = i + (torch.rand(len(values), generator=gen) - 0.5) * 0.5
        ax.scatter(x, values, s=8, alpha=0.6)
        best = max(range(len(values)), key=values.__getitem__)
        ax.annotate(f"best {values[best]:.2f}", (float(x[best]), values[best]), xytext=(-10, 5), textcoords="offset points", fontsize=TEXT_PT)
    ax.axhline(SUCCESSOR_BAR, color="grey", linestyle="--", linewidth=0.8, label=f"paper's bar ({SUCCESSOR_BAR})")
    ax.set_xticks(range(len(names)), names, rotation=15)
    ax.set_ylabel("OV succession score (every head)")
    ax.set_ylim(-0.02, 1.12)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=TEXT_PT)
    ax.set_title("Succession score of every head, per model")
    return save(fig, path)


def roles_figure(effect: list, path: Path, model_name: str) -> Path:
    """The layer x head heatmap of each head's patching effect (roles.json), negatives shown as 0."""
    effect_LH = torch.tensor(effect).nan_to_num(0.0).clamp_min(0.0)
    return head_heatmap(effect_LH, path, f"{model_name}: share of in-context succession removed by patching each head", null=0.0,
                        label="share removed")


def pareto_figure(points: dict, path: str | os.PathLike, title: str) -> Path:
    """Target gain against side effect (KL to the unedited model) for every candidate `tune`
    evaluated on its search split (`decision.tune_points`), the Pareto front joined, the null
    search's candidates in grey, the KL budget dashed and the recommended edit starred."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    null = points["null"]
    ax.scatter([p[0] for p in null], [p[1] for p in null], marker="x", color="0.6", s=18, label="null search (random heads / directions)")
    cands = points["candidates"]
    ax.scatter([p[0] for p in cands], [p[1] for p in cands], color="tab:blue", s=16, label="candidates from the run's evidence")
    front = sorted((cands[i][0], cands[i][1]) for i in points["pareto"])
    if front:
        ax.plot([p[0] for p in front], [p[1] for p in front], color="tab:blue", lw=1, label="Pareto front")
    if points["chosen"]:
        ax.scatter([points["chosen"][0]], [points["chosen"][1]], marker="*", s=160, color="tab:red", zorder=5, label="recommended")
    ax.axvline(points["max_kl"], ls="--", color="tab:red", lw=0.8, label=f"KL budget {points['max_kl']:g}")
    ax.axhline(0.0, color="0.3", lw=0.5)
    ax.set_xscale("symlog", linthresh=1e-3)
    ax.set_xlim(left=0.0)  # KL is never negative: no empty half-axis
    ax.set_xlabel("side effect: KL(unedited || edited) per corpus token (nats)", fontsize=TEXT_PT + 1)
    ax.set_ylabel("target gain (succession accuracy)" if points.get("measure", "gain") == "gain"
                  else "answer log-prob change (nats; no edit changed accuracy)", fontsize=TEXT_PT + 1)
    ax.set_title(title, fontsize=TEXT_PT + 2)
    ax.tick_params(labelsize=TEXT_PT)
    ax.legend(fontsize=TEXT_PT, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return save(fig, Path(path))
