"""Mining SAE latents into mod-10 classes, and the feature directions f_0..f_9.

Latents that fire on enough items are clustered (scikit-learn KMeans) by their normalised
residue-class profiles; each cluster takes the class its centroid peaks on. A latent joins its
cluster's class only if its own selectivity for that class passes the threshold; the others are
reported as fitting no class. f_c is the mean of the class's unit decoder directions, each
weighted by the latent's mean activation on the class (so a latent that barely fires counts little).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from sklearn.cluster import KMeans
from torch import Tensor

from successor_lens.features.matrix import ItemTable, class_profiles, latent_matrix, selectivity, task_profiles


@dataclass(frozen=True)
class MineConfig:
    """How latents are grouped into residue classes."""

    selectivity: float = 0.5
    """Minimum share of a latent's class-averaged activation on one class (chance is 0.1)."""
    n_clusters: int = 10
    """KMeans clusters over the latents' class profiles."""
    min_items: int = 2
    """A latent must fire on at least this many items to be considered."""
    min_tasks: int = 2
    """...and on items of at least this many tasks (variants count as one): a mod-10 feature is
    abstract, so a latent for one word (" eight" and "eight") is not one."""
    modulus: int = 10
    """Residue classes: index mod this."""
    seed: int = 0
    """KMeans seed."""

    def __post_init__(self):
        if not 0 < self.selectivity <= 1:
            raise ValueError("selectivity must lie in (0, 1]")
        if self.n_clusters < 1:
            raise ValueError("n_clusters must be positive")


@dataclass
class MinedFeatures:
    """Result of mining one SAE."""

    latent_class: dict[int, int]
    """Latent -> residue class, for latents that passed."""
    unassigned: list[int]
    """Active latents that fit no class (selectivity below the threshold)."""
    selectivity: Tensor
    """[d_sae] each latent's best-class share."""
    directions: dict[int, Tensor]
    """Class -> unit feature direction f_c (d_in)."""
    coverage: dict[int, float]
    """Class -> fraction of its items on which at least one of its latents fires."""
    modal_coverage: dict[int, float]
    """Class -> fraction of its items on which its best single latent fires (paper: 58.5% mean)."""
    modal_latent: dict[int, int]
    profiles: Tensor
    """[d_sae, classes] mean activation per class."""
    task_profiles: Tensor
    task_names: list[str]
    config: MineConfig = field(default_factory=MineConfig)

    @property
    def classes_found(self) -> list[int]:
        return sorted(set(self.latent_class.values()))

    def summary(self) -> dict:
        return {
            "config": asdict(self.config),
            "classes_found": self.classes_found,
            "n_classes_found": len(self.classes_found),
            "latents_per_class": {c: sorted(l for l, k in self.latent_class.items() if k == c) for c in self.classes_found},
            "n_unassigned": len(self.unassigned),
            "unassigned": self.unassigned,
            "coverage": self.coverage,
            "modal_latent": self.modal_latent,
            "modal_coverage": self.modal_coverage,
            "mean_modal_coverage": (sum(self.modal_coverage.values()) / len(self.modal_coverage)) if self.modal_coverage else None,
        }


def mine(sae, acts_ND: Tensor, table: ItemTable, cfg: MineConfig = MineConfig()) -> MinedFeatures:
    """Group `sae`'s latents into residue classes using the items' activations."""
    keep = ~table.held_out
    acts_FN = latent_matrix(sae, acts_ND[keep])
    residues = table.residues[keep] % cfg.modulus
    tasks = [t for t, k in zip(table.tasks, keep.tolist()) if k]
    profile = class_profiles(acts_FN, residues, cfg.modulus)
    share, best = selectivity(profile)
    fires = (acts_FN > 0).sum(-1)
    base = [t.split(":")[0] for t in tasks]
    base_onehot = torch.tensor([[b == n for n in dict.fromkeys(base)] for b in base], dtype=torch.float32)
    n_tasks = ((acts_FN > 0).float() @ base_onehot > 0).sum(-1)
    active = ((fires >= cfg.min_items) & (n_tasks >= cfg.min_tasks)).nonzero().flatten()

    latent_class: dict[int, int] = {}
    unassigned: list[int] = []
    if len(active):
        normed = profile[active] / profile[active].sum(-1, keepdim=True).clamp_min(1e-12)
        n_clusters = min(cfg.n_clusters, len(active))
        km = KMeans(n_clusters=n_clusters, n_init=10, random_state=cfg.seed).fit(normed.numpy())
        cluster_class = torch.tensor(km.cluster_centers_).argmax(-1)
        for latent, cluster in zip(active.tolist(), km.labels_.tolist()):
            cls = int(cluster_class[cluster])
            if best[latent] == cls and share[latent] >= cfg.selectivity:
                latent_class[latent] = cls
            else:
                unassigned.append(latent)

    W_dec = sae.W_dec.detach().cpu().float()
    directions, coverage, modal_cov, modal = {}, {}, {}, {}
    for cls in sorted(set(latent_class.values())):
        members = [l for l, c in latent_class.items() if c == cls]
        rows = W_dec[members] / W_dec[members].norm(dim=-1, keepdim=True)
        mean = (profile[members, cls][:, None] * rows).sum(0)
        directions[cls] = mean / mean.norm()
        in_class = residues == cls
        fired = acts_FN[members][:, in_class] > 0
        coverage[cls] = fired.any(0).float().mean().item()
        per_latent = fired.float().mean(-1)
        modal[cls] = members[int(per_latent.argmax())]
        modal_cov[cls] = per_latent.max().item()
    tprof, tnames = task_profiles(acts_FN, tasks)
    return MinedFeatures(latent_class, unassigned, share, directions, coverage, modal_cov, modal, profile, tprof, tnames, cfg)


@dataclass
class Recurrence:
    """How often each class's features recur across SAEs trained with different seeds."""

    counts: dict[int, int]
    """Class -> number of SAEs (out of n) in which a feature matching the reference's appears."""
    n_saes: int
    modal_directions: dict[int, Tensor]
    """Class -> mean direction over the SAEs where it recurs, for classes found in at least half."""
    threshold: float

    def summary(self) -> dict:
        return {
            "n_saes": self.n_saes, "cosine_threshold": self.threshold,
            "recurrence": {c: f"{n}/{self.n_saes}" for c, n in self.counts.items()},
            "modal_classes": sorted(self.modal_directions),
        }


def recurrence(mined: list[MinedFeatures], threshold: float = 0.7) -> Recurrence:
    """Match each class's feature direction across SAEs; keep the classes that recur ("modal")."""
    counts, modal = {}, {}
    classes = sorted({c for m in mined for c in m.directions})
    for cls in classes:
        found = [m.directions[cls] for m in mined if cls in m.directions]
        ref = found[0]
        matching = [d for d in found if torch.dot(d, ref).item() >= threshold]
        counts[cls] = len(matching)
        if len(matching) * 2 >= len(mined):
            mean = torch.stack(matching).mean(0)
            modal[cls] = mean / mean.norm()
    return Recurrence(counts, len(mined), modal, threshold)
