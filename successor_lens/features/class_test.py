"""Which mod-10 classes a dictionary holds: a per-class test with power on any tokenizer.

The statistic of class c: over the items whose class is not written in the token they are read
at (`ItemTable.split` is False; the Roman numerals held out), the best latent's standardised
difference between its activation in the class and outside it (`class_statistic`). Two nulls,
neither of which contains the true labels:
- the residues permuted within each base task, an index moving with all its variants (" May" and
  "May" keep one label), so each task keeps its own mix of classes and what a task gives away stays;
- untrained dictionaries of the tested one's architecture (`untrained_codes`: this trainer's
  initialisation, or the tested weights rotated for a dictionary from elsewhere) on the true labels.
A class's p is the larger of its two permutation p-values (above both nulls: no correction needed
for the pair); `MineRun.figures` corrects over every (dictionary, class) of a run (Holm for the
count, Benjamini-Hochberg beside it). The draws are `nulls.draws_for` that family: numpy-sized work
on the items' codes, so they cost seconds.

The relabelling null (`ItemTable.relabelled`) has no power per class on a tokenizer that reads
every number at one of ten digit tokens: it is a permutation of ten digits, and maps digit c back
to class c in one draw in ten. It stays for the aggregate figures, where it has 10! mappings.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.func import functional_call, vmap

from successor_lens.features.matrix import ItemTable, base_task, latent_matrix
from successor_lens.sae_train.dictionary import as_sae, haar_rotation, rotated_like, untrained_parameters

CHUNK = 256
"""Null draws scored at once (memory: CHUNK x latents x classes floats)."""


@dataclass
class ClassTest:
    """One dictionary's per-class test (`class_test`)."""

    statistic: list[float | None]
    """Per class: the best latent's hit rate minus its false-alarm rate (None: no tested item of the class)."""
    p_permuted: list[float]
    """Per class: permutation p against the residues permuted within each base task."""
    p_untrained: list[float]
    """Per class: permutation p against the untrained dictionaries on the true labels."""
    draws: int
    untrained_draws: int
    n_items: int
    """Items tested (not split into tokens, not held out)."""
    best_latent: list[int | None]

    @property
    def p(self) -> list[float]:
        """Per class: the larger of the two p-values (a class must beat both nulls)."""
        return [max(a, b) for a, b in zip(self.p_permuted, self.p_untrained)]

    def to_json(self) -> dict:
        return {"statistic": self.statistic, "p": self.p, "p_permuted": self.p_permuted, "p_untrained": self.p_untrained,
                "draws": self.draws, "untrained_draws": self.untrained_draws, "n_items": self.n_items, "best_latent": self.best_latent}


def unsplit_rows(table: ItemTable) -> Tensor:
    """Rows whose class is not in the token they are read at: not split into tokens, not held out."""
    return (~table.split & ~table.held_out).nonzero().flatten()


def class_statistic(acts: Tensor, residues_DN: Tensor, modulus: int = 10) -> tuple[Tensor, Tensor]:
    """[draws, classes] max over latents of the standardised difference between the latent's mean
    activation in the class and outside it ((mean_in - mean_out) / pooled sd, Cohen's d), and the
    latent that attains it; NaN for a class with no item (or no item outside it). Unlike a hit
    rate it does not saturate: a latent that fires on exactly the class, strongly and evenly (what
    training makes), scores above one that happens to separate it by a hair (what chance makes).
    `acts`: [latents, items] under `draws` labellings, or [draws, latents, items] (each dictionary
    of a null) under one labelling; either way one matrix product."""
    a = acts.float()
    if a.ndim == 2:
        a = a[None]
    B, F, n = a.shape
    D = residues_DN.shape[0]
    if B > 1 and D > 1:
        raise ValueError("class_statistic takes several dictionaries or several labellings, not both")
    onehot_DNC = torch.nn.functional.one_hot(residues_DN, modulus).float()

    def per_class(x: Tensor) -> Tensor:  # [max(B, D), F, C]: sums of x over each class's items
        if B == 1:
            return (x[0] @ onehot_DNC.permute(1, 0, 2).reshape(n, D * modulus)).reshape(F, D, modulus).permute(1, 0, 2)
        return (x.reshape(B * F, n) @ onehot_DNC[0]).reshape(B, F, modulus)

    n_in = onehot_DNC.sum(1)[:, None, :]  # [D, 1, C]
    n_out = n - n_in
    s1, s2 = per_class(a), per_class(a * a)
    t1, t2 = a.sum(-1)[..., None], (a * a).sum(-1)[..., None]
    mean_in, mean_out = s1 / n_in, (t1 - s1) / n_out
    var_in = (s2 / n_in - mean_in**2).clamp_min(0)
    var_out = ((t2 - s2) / n_out - mean_out**2).clamp_min(0)
    floor = 1e-6 * (a * a).mean(-1)[..., None] + 1e-12  # a latent constant on every item scores 0, not 0/0
    d = (mean_in - mean_out) / torch.sqrt((var_in + var_out) / 2 + floor)
    best, latent = d.nan_to_num(float("-inf")).max(1)
    empty = ((n_in[:, 0] == 0) | (n_in[:, 0] == n)).expand_as(best)
    return best.masked_fill(empty, float("nan")), latent


def within_task_residues(table: ItemTable, rows: Tensor, draws: int, generator: torch.Generator, modulus: int = 10) -> Tensor:
    """[draws, rows] residues with each base task's indices permuted among themselves (an index and
    all its variants move together), over the tested `rows`."""
    out = torch.empty(draws, len(rows), dtype=torch.long)
    tasks = [base_task(table.tasks[int(r)]) for r in rows]
    indices = table.indices[rows]
    for task in dict.fromkeys(tasks):
        cols = torch.tensor([t == task for t in tasks]).nonzero().flatten()
        values, position = torch.unique(indices[cols], return_inverse=True)
        order = torch.rand(draws, len(values), generator=generator).argsort(-1)
        out[:, cols] = values[order][:, position]
    return out % modulus


def untrained_codes(sae, acts_ND: Tensor, seed: int, data_mean: Tensor | None) -> Callable[[int], Tensor]:
    """A function n -> [n, latents, items]: every latent's activation on every item in the next n
    untrained dictionaries of `sae`'s architecture. With `data_mean`: our trainer's initialisation
    (`dictionary.untrained_parameters`), n at a time as batched products where they equal the
    dictionary's own `encode` (checked on the first draw), else `torch.func.vmap` over that encode;
    without: the tested weights with the input space rotated (`rotated_like`), for a dictionary
    whose initialisation is not known here. On the CPU in fp32 (a copy if the dictionary is not)."""
    sae = as_sae(sae)
    if sae.W_dec.device.type != "cpu" or sae.W_dec.dtype != torch.float32:
        sae = copy.deepcopy(sae).cpu().float()
    x = acts_ND.float()
    gen = torch.Generator().manual_seed(seed)
    if data_mean is None:
        return _rotated_codes(sae, x, gen, seed)
    encoder = _Encoder(sae)

    def one(params: dict[str, Tensor]) -> Tensor:  # the dictionary's own encode with these parameters
        return functional_call(encoder, {f"sae.{k}": v for k, v in params.items()}, (x,), strict=False)

    def batched(params: dict[str, Tensor]) -> Tensor:  # the same for sae-lens's encoders, as batched products
        shift = params["b_enc"][:, None] - float(sae.cfg.apply_b_dec_to_input) * (params["b_dec"][:, None] @ params["W_enc"])
        pre = torch.matmul(x, params["W_enc"]) + shift  # (x - b_dec) W_enc + b_enc, with no [draws, items, d_in] copy of x
        acts = sae.activation_fn(pre)
        return acts * (pre > sae.threshold) if hasattr(sae, "threshold") else acts

    fast: list[bool] = []

    def codes(n: int) -> Tensor:
        params = untrained_parameters(sae, n, gen, data_mean)
        with torch.no_grad():
            if not fast:  # the batched form is used only where it equals the dictionary's own encode
                fast.append(torch.allclose(batched({k: v[:1] for k, v in params.items()})[0], one({k: v[0] for k, v in params.items()}),
                                           rtol=1e-4, atol=1e-5))
            acts = batched(params) if fast[0] else vmap(one)(params)
        return acts.transpose(1, 2)

    return codes


def _rotated_codes(sae, x: Tensor, gen: torch.Generator, seed: int) -> Callable[[int], Tensor]:
    """`untrained_codes` for the rotated null, rotating the inputs rather than the dictionary: for
    sae-lens's encoders, rotated_like(sae, Q).encode(x) = sae.encode(b + (x - b) Q) with b = b_dec
    where the dictionary subtracts it (else 0). For a Haar Q, (x - b) Q is drawn as A G^T, where
    x - b = A V^T (thin SVD, rank r) and G is a Haar r-frame of the input space (V^T Q is one): a
    QR of d x r, not d x d, a draw. Used only where it matches `rotated_like` on one full rotation;
    otherwise every draw is a `rotated_like` copy (slow for large dictionaries)."""
    b = sae.b_dec.detach().float() * float(sae.cfg.apply_b_dec_to_input)
    centred = x - b
    U, S, _ = torch.linalg.svd(centred, full_matrices=False)
    A = U * S
    d, r = x.shape[1], A.shape[1]
    Q0 = haar_rotation(d, seed).float()
    with torch.no_grad():
        exact = sae.encode(b + centred @ Q0).T
        agree = float(((exact - latent_matrix(rotated_like(sae, seed, Q0), x)).abs() <= 1e-3 * exact.abs().max()).float().mean()) > 0.999
    if not agree:
        drawn = iter(range(seed, seed + 10**9))
        return lambda n: torch.stack([latent_matrix(rotated_like(sae, next(drawn)), x) for _ in range(n)])

    def codes(n: int) -> Tensor:
        G, R = torch.linalg.qr(torch.randn(n, d, r, generator=gen))
        G = G * torch.sign(torch.diagonal(R, dim1=-2, dim2=-1))[:, None, :]
        with torch.no_grad():
            acts = sae.encode((b + A @ G.transpose(1, 2)).reshape(n * len(x), d))
        return acts.reshape(n, len(x), -1).transpose(1, 2)

    return codes


class _Encoder(torch.nn.Module):
    """A module whose forward is the dictionary's `encode` (what `functional_call` calls)."""

    def __init__(self, sae):
        super().__init__()
        self.sae = sae

    def forward(self, x: Tensor) -> Tensor:
        return self.sae.encode(x)


def untrained_key(sae) -> tuple:
    """What our trainer's untrained draws of `sae` depend on (its class, shape, k, centring and any
    parameter the initialisation keeps, a threshold): dictionaries with one key share their draws."""
    sae = as_sae(sae)
    kept = sorted((k, v.detach().cpu().float().numpy().tobytes()) for k, v in sae.named_parameters() if k not in ("W_enc", "W_dec", "b_enc", "b_dec"))
    return (type(sae).__name__, tuple(sae.W_dec.shape), getattr(sae.cfg, "k", None), bool(sae.cfg.apply_b_dec_to_input), tuple(kept))


def untrained_statistics(codes: Callable[[int], Tensor], table: ItemTable, draws: int, modulus: int = 10) -> Tensor:
    """[draws, classes] the class statistic of each of `draws` untrained dictionaries (`codes`, built
    on the tested rows' activations) on the true labels."""
    residues = (table.indices[unsplit_rows(table)] % modulus)[None]
    out = [class_statistic(codes(min(CHUNK, draws - start)), residues, modulus)[0] for start in range(0, draws, CHUNK)]
    return torch.cat(out).nan_to_num(float("-inf"))


def class_test(sae, acts_ND: Tensor, table: ItemTable, draws: int, untrained_stats: Tensor, seed: int = 0,
               modulus: int = 10) -> ClassTest:
    """The per-class test of `sae` (module docstring) with `draws` within-task permutations; the
    untrained null's statistics are `untrained_statistics` of its architecture (one set serves every
    dictionary whose untrained draws are the same: ours of one shape)."""
    rows = unsplit_rows(table)
    acts = latent_matrix(sae, acts_ND[rows])
    residues = table.indices[rows] % modulus
    observed, latent = class_statistic(acts, residues[None], modulus)
    gen = torch.Generator().manual_seed(seed)
    at_least = torch.zeros(modulus)
    for start in range(0, draws, CHUNK):
        null, _ = class_statistic(acts, within_task_residues(table, rows, min(CHUNK, draws - start), gen, modulus), modulus)
        at_least += (null >= observed).sum(0)
    untrained_at_least = (untrained_stats >= observed).sum(0)
    stat = [None if torch.isnan(v) else float(v) for v in observed[0]]
    p_perm = [1.0 if s is None else float((1 + at_least[c]) / (1 + draws)) for c, s in enumerate(stat)]
    p_untr = [1.0 if s is None else float((1 + untrained_at_least[c]) / (1 + len(untrained_stats))) for c, s in enumerate(stat)]
    best = [None if s is None else int(latent[0, c]) for c, s in enumerate(stat)]
    return ClassTest(stat, p_perm, p_untr, draws, len(untrained_stats), len(rows), best)
