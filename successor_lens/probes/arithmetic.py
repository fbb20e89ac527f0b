"""Causal checks through one head's OV circuit: vector arithmetic and the greater-than profile.

Vector arithmetic (METHOD.md section 3): x' = x_a - k f_{a mod 10} + k f_j, passed through the
head's OV circuit; success when the top-1 among the task's own tokens is the successor of the
item b in a's decade with index = j (mod 10) ("fifth" - f5 + f7 -> "eighth"). The scale k is
chosen on a random half of the cases and success is reported on the other half. Controls:
random directions (same unit norm, own best k) and the probe's directions instead of SAE features.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor
from transformer_lens import HookedTransformer

from successor_lens.features.matrix import ItemTable
from successor_lens.sites import per_token

SCALES = (0.5, 1.0, 2.0, 4.0, 8.0)
"""Candidate k, in units of the mean projection of an item's activation on its own class feature."""


@dataclass
class OVCircuit:
    """One head's OV path to the unembedding of a fixed candidate set: (norm(x) W_V + b_V) W_O W_U."""

    W_V: Tensor
    b_V: Tensor
    W_O: Tensor
    W_U: Tensor
    """[d_model, candidates]"""
    norm: Callable[[Tensor], Tensor]
    name: str

    def logits(self, x_ND: Tensor) -> Tensor:
        return ((self.norm(x_ND) @ self.W_V + self.b_V) @ self.W_O) @ self.W_U

    @staticmethod
    @torch.no_grad()
    def from_model(model: HookedTransformer, layer: int, head: int, candidates: Tensor) -> "OVCircuit":
        attn, ln1 = model.blocks[layer].attn, model.blocks[layer].ln1
        return OVCircuit(
            attn.W_V[head].detach().cpu(), attn.b_V[head].detach().cpu(), attn.W_O[head].detach().cpu(),
            model.W_U[:, candidates.to(model.W_U.device)].detach().cpu(),
            lambda x: per_token(ln1, x.to(model.W_E.device)).cpu(), f"L{layer}H{head}",
        )


def _task_mask(table: ItemTable) -> Tensor:
    tasks = table.tasks
    return torch.tensor([[a == b for b in tasks] for a in tasks])


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
    overall: float
    scale: float
    n_cases: dict[str, int]
    overshoot: float
    """Fraction of failures whose prediction has a larger index than the target."""
    predictions: list[tuple[str, str, int, str, str]]
    """(task, input text, class j, target text, predicted text) on the report half."""

    def summary(self) -> dict:
        return {"overall": self.overall, "per_task": self.success, "scale_k": self.scale, "n_cases": self.n_cases,
                "failure_overshoot_fraction": self.overshoot}


@torch.no_grad()
def vector_arithmetic(
    circuit: OVCircuit, acts_ND: Tensor, table: ItemTable, directions: dict[int, Tensor], seed: int = 0
) -> ArithmeticResult:
    cases = [c for c in _cases(table) if c[1] in directions and int(table.residues[c[0]]) in directions]
    if not cases:
        raise ValueError("no arithmetic cases: the features cover too few residue classes for this token set")
    a, j, b, target = (torch.tensor(col) for col in zip(*cases))
    F_CD = torch.stack([directions.get(c, torch.zeros_like(next(iter(directions.values())))) for c in range(10)])
    own = table.residues
    unit = (acts_ND[a] * F_CD[own[a]]).sum(-1).abs().mean().clamp_min(1e-6)
    perm = torch.randperm(len(cases), generator=torch.Generator().manual_seed(seed))
    choose, report = perm[: len(cases) // 2], perm[len(cases) // 2 :]
    same_task = _task_mask(table)

    def predict(k: float, idx: Tensor) -> Tensor:
        x = acts_ND[a[idx]] - k * F_CD[own[a[idx]]] + k * F_CD[j[idx]]
        logits = circuit.logits(x.float())
        return logits.masked_fill(~same_task[a[idx]], float("-inf")).argmax(-1)

    best = max(SCALES, key=lambda s: (predict(s * unit, choose) == target[choose]).float().mean().item())
    k = best * unit
    pred = predict(k, report)
    hit = pred == target[report]
    tasks = [table.tasks[int(x)] for x in a[report]]
    success, counts = {}, {}
    for t in dict.fromkeys(tasks):
        mask = torch.tensor([x == t for x in tasks])
        success[t] = hit[mask].float().mean().item()
        counts[t] = int(mask.sum())
    miss = ~hit
    over = (table.indices[pred[miss]] > table.indices[target[report][miss]]).float().mean().item() if miss.any() else 0.0
    preds = [(tasks[i], table.texts[int(a[report][i])], int(j[report][i]), table.texts[int(target[report][i])], table.texts[int(pred[i])])
             for i in range(len(report))]
    return ArithmeticResult(success, hit.float().mean().item(), float(k), counts, over, preds)


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

    A successor head peaks at +1; a greater-than bias shows as larger logits for all positive offsets.
    """
    logits = circuit.logits(acts_ND.float())
    same = _task_mask(table)
    offsets = table.indices[None, :] - table.indices[:, None]
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
