"""Causal checks through one head's OV circuit: vector arithmetic and the greater-than profile.

Vector arithmetic (docs/method.md section 5): x' = x_a - k f_{a mod 10} + k f_j, passed through the
head's OV circuit; success when the top-1 among the task's own tokens is the successor of the
item b in a's decade with index = j (mod 10) ("fifth" - f5 + f7 -> "eighth"); items are compared
by their (last) token. The scale k is chosen on a random half of the cases from a grid wide
enough that the choice sits inside it (an edge is reported), and success is reported on the other
half. Controls: random directions (same unit norm, own best k) and the probe's directions instead
of SAE features. The head's own ceiling: how often its clean OV top-1 on the target item b is
succ(b); success is also reported on the cases where the head is right (docs/method.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from successor_lens.features.matrix import ItemTable
from successor_lens.probes.circuit import OVCircuit
from successor_lens.tasks import same_task

SCALES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
"""Candidate k, in units of the mean projection of an item's activation on its own class feature."""


def _cases(table: ItemTable, modulus: int = 10) -> list[tuple[int, int, int, int]]:
    """(row a, class j, row b, row of b's successor) for every valid arithmetic case."""
    rows = {(t, int(i)): r for r, (t, i) in enumerate(zip(table.tasks, table.indices.tolist()))}
    out = []
    for a, (task, index) in enumerate(zip(table.tasks, table.indices.tolist())):
        if table.held_out[a]:
            continue
        for j in range(modulus):
            if j == index % modulus:
                continue
            b = rows.get((task, index - index % modulus + j))
            if b is not None and table.successor[b] >= 0:
                out.append((a, j, b, int(table.successor[b])))
    return out


@dataclass
class ArithmeticResult:
    success: dict[str, float]
    """Task variant -> success rate on the report half."""
    overall: float | None
    """Success rate on the report half (None when there are no cases)."""
    scale: float | None
    n_cases: dict[str, int]
    overshoot: float | None
    """Fraction of failures whose prediction lies after the target (wrapped for cyclic tasks)."""
    overshoot_chance: float | None
    """Expected fraction if a failure picked any other item of the task uniformly."""
    predictions: list[tuple[str, str, int, str, str]]
    """(task, input text, class j, target text, predicted text) on the report half."""
    hits: int = 0
    n: int = 0
    ceiling: float | None = None
    """How often the head's clean OV top-1 on the target item b is succ(b), on the report half."""
    conditional: float | None = None
    """Success rate on the report cases where the head is right on b."""
    n_head_right: int = 0
    scale_at_edge: bool = False
    """The chosen k is the smallest or largest of the grid (the best k may lie outside it)."""
    n_failures: int = 0
    n_overshoot: int = 0
    reason: str | None = None
    numbers_20_29: float | None = None
    """Success on the report cases whose input is a number 20..29 (the paper's 0.89)."""
    overshoot_null: list[float] | None = None
    """The overshoot fraction with the failures' predictions permuted among the failures of the
    same task variant, `OVERSHOOT_DRAWS` times (`overshoot_null`): its null."""

    def summary(self) -> dict:
        return {"overall": self.overall, "per_task": self.success, "scale_k": self.scale, "scale_at_grid_edge": self.scale_at_edge,
                "n_cases": self.n_cases, "hits": self.hits, "n": self.n, "head_ceiling": self.ceiling,
                "success_when_head_right": self.conditional, "n_head_right": self.n_head_right,
                "failure_overshoot_fraction": self.overshoot, "overshoot_chance": self.overshoot_chance,
                "n_failures": self.n_failures, "n_overshoot": self.n_overshoot, "numbers_20_29": self.numbers_20_29, "reason": self.reason,
                "overshoot_null_mean": sum(self.overshoot_null) / len(self.overshoot_null) if self.overshoot_null else None,
                "overshoot_null_draws": len(self.overshoot_null or [])}


def _nearest_rows(table: ItemTable, in_task: Tensor, target: int) -> dict[int, int]:
    """Token -> the row of the task with that token nearest the target by index."""
    rows = in_task.nonzero().flatten()
    dist = (table.indices[rows] - table.indices[target]).abs()
    out: dict[int, int] = {}
    for r in rows[dist.argsort(stable=True)].tolist():
        out.setdefault(int(table.tokens[r]), r)
    return out


def _after(table: ItemTable, target: int, others: Tensor) -> Tensor:
    """Whether each of `others` lies after `target` in its task (offsets wrapped for cyclic tasks)."""
    return table.offsets(torch.tensor([target]), others)[0] > 0


@torch.no_grad()
def vector_arithmetic(
    circuit: OVCircuit, acts_ND: Tensor, table: ItemTable, directions: dict[int, Tensor], seed: int = 0,
    split: bool | None = None, with_null: bool = False,
) -> ArithmeticResult:
    """`split`: None for every case; False for the cases whose input is not split into tokens (its
    class is not written in the token it is read at); True for split items only. `with_null`: the
    overshoot's null (`overshoot_null`) too."""
    cases = [c for c in _cases(table) if c[1] in directions and int(table.residues[c[0]]) in directions]
    if split is not None:
        is_split = table.split
        cases = [c for c in cases if bool(is_split[c[0]]) == split]
    if len(cases) < 2:
        why = f"{len(cases)} arithmetic cases: the features cover {len(directions)} residue classes"
        return ArithmeticResult({}, None, None, {}, None, None, [], reason=why)
    a, j, b, target = (torch.tensor(col) for col in zip(*cases))
    F_CD = torch.stack([directions.get(c, torch.zeros_like(next(iter(directions.values())))) for c in range(10)])
    own = table.residues
    unit = (acts_ND[a] * F_CD[own[a]]).sum(-1).abs().mean().clamp_min(1e-6)
    perm = torch.randperm(len(cases), generator=torch.Generator().manual_seed(seed))
    choose, report = perm[: len(cases) // 2], perm[len(cases) // 2 :]
    same_task_NM = same_task(table.tasks)
    tokens = table.tokens

    def top(x: Tensor, rows: Tensor) -> Tensor:
        return circuit.logits(x.float()).masked_fill(~same_task_NM[rows], float("-inf")).argmax(-1)

    def predict(k: float | Tensor, idx: Tensor) -> Tensor:
        return top(acts_ND[a[idx]] - k * F_CD[own[a[idx]]] + k * F_CD[j[idx]], a[idx])

    right = lambda pred, idx: tokens[pred] == tokens[target[idx]]  # noqa: E731  (split numbers share last digits)
    rates = [right(predict(s * unit, choose), choose).float().mean().item() for s in SCALES]
    best_i = max(range(len(SCALES)), key=lambda i: (rates[i], -i))
    k = SCALES[best_i] * unit
    pred = predict(k, report)
    hit = right(pred, report)
    head_right = tokens[top(acts_ND[b[report]], b[report])] == tokens[target[report]]
    tasks = [table.tasks[int(x)] for x in a[report]]
    success, counts = {}, {}
    for t in dict.fromkeys(tasks):
        mask = torch.tensor([x == t for x in tasks])
        success[t] = hit[mask].float().mean().item()
        counts[t] = int(mask.sum())
    miss = ~hit
    n_fail = int(miss.sum())
    overs: list[bool] = []
    chance: list[float] = []
    by_target: dict[int, tuple[dict[int, int], float | None]] = {}  # what depends on the target alone, once per target
    for t_row, p_row in zip(target[report][miss].tolist(), pred[miss].tolist()):
        if t_row not in by_target:
            # split numbers share last digits: a predicted token stands for its item nearest the target
            near = _nearest_rows(table, same_task_NM[t_row], t_row)
            others = torch.tensor([r for tok, r in near.items() if tok != int(tokens[t_row])])
            by_target[t_row] = near, (_after(table, t_row, others).float().mean().item() if len(others) else None)
        near, after_chance = by_target[t_row]
        overs.append(bool(_after(table, t_row, torch.tensor([near[int(tokens[p_row])]]))))
        if after_chance is not None:
            chance.append(after_chance)
    over = torch.tensor(overs, dtype=torch.bool)
    failed = [(t, int(tokens[p]), table.tasks[t]) for t, p in zip(target[report][miss].tolist(), pred[miss].tolist())]
    over_null = overshoot_null(table, failed, seed) if with_null else None
    preds = [(tasks[i], table.texts[int(a[report][i])], int(j[report][i]), table.texts[int(target[report][i])], table.texts[int(pred[i])])
             for i in range(len(report))]
    n_right = int(head_right.sum())
    twenties = torch.tensor([bool(table.is_number[int(x)]) and 20 <= int(table.indices[x]) <= 29 for x in a[report]])
    return ArithmeticResult(
        success, hit.float().mean().item(), float(k), counts,
        over.float().mean().item() if n_fail else None, sum(chance) / len(chance) if chance else None, preds,
        hits=int(hit.sum()), n=len(report), ceiling=head_right.float().mean().item(),
        conditional=hit[head_right].float().mean().item() if n_right else None, n_head_right=n_right,
        scale_at_edge=best_i in (0, len(SCALES) - 1), n_failures=n_fail, n_overshoot=int(over.sum()),
        numbers_20_29=hit[twenties].float().mean().item() if twenties.any() else None, overshoot_null=over_null,
    )


OVERSHOOT_DRAWS = 999
"""Draws of the overshoot's null."""


def overshoot_null(table: ItemTable, failed: list[tuple[int, int, str]], seed: int = 0, draws: int = OVERSHOOT_DRAWS) -> list[float]:
    """The overshoot fraction of failures (target row, predicted token, task variant) with the
    predictions permuted among the failures of the same task variant: what the predictions' own
    distribution gives (a head that always says "December" overshoots most targets), with their tie
    to the target broken. A predicted token stands for the task's row nearest the target with that
    token (split numbers share last digits); a pair whose permuted prediction is the target's own
    token is left out."""
    if len(failed) < 2:
        return []
    gen = torch.Generator().manual_seed(seed + 17)
    after_sum, counted = torch.zeros(draws), torch.zeros(draws)
    for task in dict.fromkeys(t for _, _, t in failed):
        group = [(t, p) for t, p, k in failed if k == task]
        g = len(group)
        targets = torch.tensor([t for t, _ in group])
        rows = torch.tensor([t == task for t in table.tasks]).nonzero().flatten()
        offsets = table.offsets(targets, rows)  # [g, rows of the task]
        tokens = table.tokens[rows]
        vocab, column = torch.unique(tokens, return_inverse=True)
        # after[i, u]: the task's row with token u nearest target i lies after it
        distance = offsets.abs().float() + torch.arange(len(rows)) * 1e-6  # ties: the first row, as _nearest_rows
        nearest = torch.stack([torch.where(column == u, distance, float("inf")).argmin(-1) for u in range(len(vocab))], 1)
        after = offsets.gather(1, nearest) > 0
        predicted = torch.searchsorted(vocab, torch.tensor([p for _, p in group]))
        own = torch.searchsorted(vocab, table.tokens[targets])
        perm = torch.rand(draws, g, generator=gen).argsort(-1)
        u = predicted[perm]  # [draws, g]: the permuted prediction of each target
        valid = u != own[None, :]
        after_sum += (after.float()[torch.arange(g)[None, :], u] * valid).sum(-1)
        counted += valid.sum(-1)
    return (after_sum / counted.clamp_min(1)).tolist()


def random_directions(like: dict[int, Tensor], seed: int = 0) -> dict[int, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    d = next(iter(like.values())).shape[0]
    out = {}
    for c in sorted(like):
        v = torch.randn(d, generator=gen)
        out[c] = v / v.norm()
    return out


@torch.no_grad()
def offset_profile(circuit: OVCircuit, acts_ND: Tensor, table: ItemTable, max_offset: int = 10) -> dict[str, dict[int, float]]:
    """Mean (row-centred) OV logit of a candidate by its signed index offset from the input, per task.

    A successor head peaks at +1; a greater-than bias shows as larger logits for all positive
    offsets. Offsets of cyclic tasks wrap (Sunday -> Monday is +1).
    """
    logits = circuit.logits(acts_ND.float())
    same = same_task(table.tasks)
    offsets = table.offsets()
    centred = logits - (logits * same).sum(-1, keepdim=True) / same.sum(-1, keepdim=True)
    profile: dict[str, dict[int, float]] = {}
    for task in dict.fromkeys(table.tasks + ["all"]):
        rows = torch.tensor([t == task or task == "all" for t in table.tasks]) & ~table.held_out
        mask = same & rows[:, None]
        profile[task] = {
            o: centred[mask & (offsets == o)].mean().item()
            for o in range(-max_offset, max_offset + 1)
            if (mask & (offsets == o)).any()
        }
    return profile
