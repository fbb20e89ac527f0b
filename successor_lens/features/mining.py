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

from successor_lens.display import html_card
from successor_lens.features.matrix import ItemTable, class_profiles, latent_matrix, selectivity, task_profiles
from successor_lens.features.mine_config import MineConfig
from successor_lens.paper import FIGURES
from successor_lens.sae_train.dictionary import as_sae


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
    modal_coverage_numbers: dict[int, float | None] = field(default_factory=dict)
    """Modal coverage on the class's number items only (split numbers share their last digit, so
    this part is easy: reported apart, docs/method.md)."""
    modal_coverage_other: dict[int, float | None] = field(default_factory=dict)
    """Modal coverage on the class's items of the other tasks."""
    modal_coverage_unsplit: dict[int, float | None] = field(default_factory=dict)
    """Modal coverage on the class's items that are not split into tokens (for a digit-splitting
    tokenizer: the other tasks and the one-digit numbers), whose class is not written in the
    token they are read at: the headline coverage (docs/method.md, "Nulls")."""
    acts_FN: Tensor | None = None
    """[d_sae, items] activations over the mined (non-held-out) items: the firing patterns that
    recurrence matches across SAEs."""
    W_dec: Tensor | None = None

    def latents_of(self, c: int) -> list[int]:
        """The latents assigned to class `c`, in index order (none: an empty list)."""
        return sorted(latent for latent, k in self.latent_class.items() if k == c)

    def __len__(self) -> int:
        return len(self.classes_found)

    def __iter__(self):
        """Each class found as (class, its latents, its modal coverage)."""
        return iter([(c, self.latents_of(c), self.modal_coverage.get(c)) for c in self.classes_found])

    def __getitem__(self, c: int) -> list[int]:
        """The latents of class `c` (KeyError when no latent was assigned to it)."""
        if c not in self.classes_found:
            raise KeyError(f"class {c}: no latent was assigned to it (classes found: {self.classes_found})")
        return self.latents_of(c)

    def top(self, n: int = 10) -> list[tuple[int, list[int], float | None]]:
        """The n classes found with the highest modal coverage: (class, latents, modal coverage)."""
        return sorted(self, key=lambda row: -(row[2] or 0.0))[:n]

    def __repr__(self) -> str:
        return (f"MinedFeatures({len(self.classes_found)}/{self.config.modulus} classes, {len(self.latent_class)} latents assigned; mean modal "
                f"coverage {self.mean_modal_coverage:.3f} (unsplit items {self.mean_modal_coverage_unsplit:.3f}; paper {FIGURES['modal_coverage']}); "
                "NO null computed, so this count is not evidence by itself: an untrained dictionary can find classes too; "
                "`sl.mining_null(...).compare(mined)` gives the counts beside their nulls)")

    def _repr_html_(self) -> str:
        rows = [[c, ", ".join(str(l) for l in sorted(l for l, k in self.latent_class.items() if k == c)), self.modal_coverage.get(c)]
                for c in self.classes_found]
        return html_card("mod-10 features", ["class", "latents", "modal coverage"], rows,
                         [f"mean modal coverage {self.mean_modal_coverage:.3f}, on unsplit items {self.mean_modal_coverage_unsplit:.3f} "
                          f"(paper {FIGURES['modal_coverage']}); the nulls (index-permuted labels, an untrained dictionary) are in `mine_model`'s result"])

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
            "mean_modal_coverage": self.mean_modal_coverage,
            "modal_coverage_numbers": self.modal_coverage_numbers,
            "modal_coverage_other": self.modal_coverage_other,
            "mean_modal_coverage_numbers": _mean(self.modal_coverage_numbers),
            "mean_modal_coverage_other": _mean(self.modal_coverage_other),
            "modal_coverage_unsplit": self.modal_coverage_unsplit,
            "mean_modal_coverage_unsplit": self.mean_modal_coverage_unsplit,
        }

    @property
    def mean_modal_coverage(self) -> float:
        """Mean over the ten classes; a class not found counts 0 (so a miner that finds fewer
        classes cannot look better by averaging over fewer)."""
        return sum(self.modal_coverage.get(c, 0.0) for c in range(self.config.modulus)) / self.config.modulus

    @property
    def mean_modal_coverage_unsplit(self) -> float:
        """The same mean on the items that are not split (a class not found, or with no such item, counts 0)."""
        return sum(self.modal_coverage_unsplit.get(c) or 0.0 for c in range(self.config.modulus)) / self.config.modulus


def _mean(d: dict) -> float | None:
    values = [v for v in d.values() if v is not None]
    return sum(values) / len(values) if values else None


def mine(sae, acts_ND: Tensor, table: ItemTable, cfg: MineConfig = MineConfig()) -> MinedFeatures:
    """Group `sae`'s latents (an sae-lens SAE or a `Dictionary`) into residue classes using the items' activations."""
    return mine_codes(*_codes(sae, acts_ND, table), table, cfg)


def _codes(sae, acts_ND: Tensor, table: ItemTable) -> tuple[Tensor, Tensor]:
    """(the latents' activations on the mined items [latents, items], the decoder on the CPU in fp32)."""
    sae = as_sae(sae)
    return latent_matrix(sae, acts_ND[~table.held_out]), sae.W_dec.detach().cpu().float()


def mine_codes(acts_FN: Tensor, W_dec: Tensor, table: ItemTable, cfg: MineConfig = MineConfig()) -> MinedFeatures:
    """`mine` from the latents' activations on the mined (not held-out) items, [latents, items], and
    the decoder: a null that only relabels the items encodes them once (`mining_null`)."""
    keep = ~table.held_out
    residues = table.residues[keep] % cfg.modulus
    tasks = [t for t, k in zip(table.tasks, keep.tolist()) if k]
    profile = class_profiles(acts_FN, residues, cfg.modulus)
    share, best = selectivity(profile)
    fires = (acts_FN > 0).sum(-1)
    base = [t.split(":")[0] for t in tasks]
    column = {name: i for i, name in enumerate(dict.fromkeys(base))}  # each base task once, in order of appearance
    base_onehot = torch.nn.functional.one_hot(torch.tensor([column[b] for b in base]), len(column)).float()
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

    number = torch.tensor([b == "numbers" for b in base])
    unsplit = ~table.split[keep]
    directions: dict[int, Tensor] = {}
    coverage: dict[int, float] = {}
    modal_cov: dict[int, float] = {}
    modal: dict[int, int] = {}
    cov_num: dict[int, float | None] = {}
    cov_other: dict[int, float | None] = {}
    cov_unsplit: dict[int, float | None] = {}
    for cls in sorted(set(latent_class.values())):
        members = [l for l, c in latent_class.items() if c == cls]
        rows = W_dec[members] / W_dec[members].norm(dim=-1, keepdim=True)
        mean = (profile[members, cls][:, None] * rows).sum(0)
        directions[cls] = mean / mean.norm()
        in_class = residues == cls
        fired = acts_FN[members][:, in_class] > 0
        coverage[cls] = fired.any(0).float().mean().item()
        per_latent = fired.float().mean(-1)
        best_latent = int(per_latent.argmax())
        modal[cls] = members[best_latent]
        modal_cov[cls] = per_latent.max().item()
        for part, out in ((number[in_class], cov_num), (~number[in_class], cov_other), (unsplit[in_class], cov_unsplit)):
            out[cls] = fired[best_latent, part].float().mean().item() if part.any() else None
    tprof, tnames = task_profiles(acts_FN, tasks)
    return MinedFeatures(latent_class, unassigned, share, directions, coverage, modal_cov, modal, profile, tprof, tnames, cfg,
                         cov_num, cov_other, cov_unsplit, acts_FN, W_dec)


@dataclass
class Recurrence:
    """How each class's feature recurs across SAEs trained with different seeds.

    A class's firing pattern in an SAE is the summed activation of its latents over the items (a
    class may split across two latents). Patterns are compared by cosine over every pair of SAEs:
    decoder rows of small SAEs differ between seeds while what they fire on recurs. The cosine of
    the class directions f_c of the same pairs is reported as a second measure.
    """

    counts: dict[int, int]
    """Class -> SAEs in which the class's pattern matches its pattern in at least one other SAE."""
    n_saes: int
    modal_directions: dict[int, Tensor]
    """Class -> mean f_c over the SAEs where it recurs, for classes recurring in at least half."""
    threshold: float
    pair_rate: dict[int, float | None]
    """Class -> share of SAE pairs (both found the class) whose patterns match."""
    match_cosine: dict[int, float | None]
    """Class -> median firing-pattern cosine over those pairs."""
    decoder_cosine: dict[int, float | None]
    """Class -> median cosine of the class directions f_c over the same pairs (the second measure)."""

    def summary(self) -> dict:
        return {
            "n_saes": self.n_saes, "match": "class firing pattern over the items (summed activation of its latents), all pairs of SAEs",
            "cosine_threshold": self.threshold,
            "recurrence": {c: f"{n}/{self.n_saes}" for c, n in self.counts.items()},
            "pair_rate": self.pair_rate, "match_cosine": self.match_cosine, "decoder_cosine": self.decoder_cosine,
            "modal_classes": sorted(self.modal_directions),
        }


def class_pattern(m: MinedFeatures, cls: int) -> Tensor:
    members = [latent for latent, c in m.latent_class.items() if c == cls]
    if m.acts_FN is None:
        raise ValueError("recurrence needs the mined activations (MinedFeatures.acts_FN)")
    pattern = m.acts_FN[members].sum(0)
    return pattern / pattern.norm().clamp_min(1e-12)


def recurrence(mined: list[MinedFeatures], threshold: float = 0.7) -> Recurrence:
    """Match each class's firing pattern across every pair of SAEs; keep classes that recur ("modal")."""
    n = len(mined)
    counts, modal, pair_rate, match_cos, dec_cos = {}, {}, {}, {}, {}
    for cls in sorted({c for m in mined for c in m.directions}):
        have = [i for i, m in enumerate(mined) if cls in m.directions]
        patterns = {i: class_pattern(mined[i], cls) for i in have}
        matched, cosines, decoders = set(), [], []
        for x in range(len(have)):
            for y in range(x + 1, len(have)):
                s, t = have[x], have[y]
                cos = float(patterns[s] @ patterns[t])
                cosines.append(cos)
                decoders.append(float(mined[s].directions[cls] @ mined[t].directions[cls]))
                if cos >= threshold:
                    matched |= {s, t}
        counts[cls] = len(matched) if n > 1 else len(have)
        n_pairs = len(cosines)
        pair_rate[cls] = sum(c >= threshold for c in cosines) / n_pairs if n_pairs else None
        match_cos[cls] = float(torch.tensor(cosines).median()) if cosines else None
        dec_cos[cls] = float(torch.tensor(decoders).median()) if decoders else None
        if counts[cls] * 2 >= n:
            recurring = sorted(matched) if n > 1 else have
            mean = torch.stack([mined[i].directions[cls] for i in recurring]).mean(0)
            modal[cls] = mean / mean.norm()
    return Recurrence(counts, n, modal, threshold, pair_rate, match_cos, dec_cos)


@dataclass
class MiningNull:
    """What the miner reports on labels that carry no more than the tokens give away, and on
    dictionaries that learned nothing."""

    permuted: list[MinedFeatures]
    """The same dictionary mined with the item indices permuted (one per draw)."""
    untrained: list[MinedFeatures]
    """The tested dictionary with its input space randomly rotated (`rotated_like`), mined on the real indices."""
    relabelled: list[MinedFeatures] = field(default_factory=list)
    """The same dictionary mined with the numbers relabelled keeping their read-at token
    (`ItemTable.relabelled`): the tokenizer-aware null."""

    def __repr__(self) -> str:
        return (f"MiningNull({len(self.permuted)} permuted-label, {len(self.relabelled)} relabelled-number and {len(self.untrained)} untrained "
                "draws; `compare(mined)` puts a mining beside them)")

    @property
    def label_draws(self) -> list[MinedFeatures]:
        return self.permuted + self.relabelled

    def compare(self, mined: MinedFeatures) -> str:
        """One line: the mined dictionary's classes and unsplit-item modal coverage beside the same
        figures' mean over the label draws (and the untrained dictionaries), said in words when not above."""
        def line(name: str, value: float, draws: list[MinedFeatures], get) -> str:
            null = sum(get(m) for m in draws) / len(draws) if draws else float("nan")
            return f"{name} {value:.2f} vs null {null:.2f}" + ("" if value > null else " (NOT above its null)")

        cover = lambda m: m.mean_modal_coverage_unsplit  # noqa: E731
        found = lambda m: float(len(m.classes_found))  # noqa: E731
        return "; ".join([line("classes found", found(mined), self.label_draws, found),
                          line("modal coverage (unsplit items)", cover(mined), self.label_draws, cover)]
                         + ([line("modal coverage vs untrained", cover(mined), self.untrained, cover)] if self.untrained else []))


def mining_null(sae, acts_ND: Tensor, table: ItemTable, untrained_saes: list | None = None, cfg: MineConfig = MineConfig(),
                draws: int = 10, seed: int = 0) -> MiningNull:
    """`mine` on labels that carry nothing the tokens do not give away (index-permuted and, for
    numbers, relabelled keeping their read-at token; `draws` each) and on `untrained_saes` (e.g.
    `rotated_like` copies of the tested dictionary). `MiningNull.compare(mined)` says how the real
    mining stands against them."""
    untrained_saes = untrained_saes or []
    gen = torch.Generator().manual_seed(seed)
    codes, W_dec = _codes(sae, acts_ND, table)  # once: relabelling keeps the held-out items
    permuted = [mine_codes(codes, W_dec, table.permuted(gen), cfg) for _ in range(draws)]
    relabelled = [mine_codes(codes, W_dec, table.relabelled(gen), cfg) for _ in range(draws)] if table.is_number.any() else []
    untrained = [mine(u, acts_ND, table, cfg) for u in untrained_saes]
    return MiningNull(permuted, untrained, relabelled)
