"""The latent x token activation matrix over the succession items, and per-latent selectivity.

Each item (task variant, index, token) is known, so each latent's activations can be averaged
per residue class (index mod 10) and per task.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
from jaxtyping import Float
from torch import Tensor

from successor_lens.sae_train.dictionary import as_sae
from successor_lens.tasks import TokenSet


def base_task(name: str) -> str:
    """"days:nospace" -> "days": both variants of a task count as one task."""
    return name.split(":")[0]


@dataclass
class ItemTable:
    """The succession items as arrays: what every miner and probe needs to know about a row."""

    texts: list[str]
    tasks: list[str]
    """Task variant of each row."""
    indices: Tensor
    held_out: Tensor
    """[N] bool: row belongs to a held-out task (Roman numerals)."""
    successor: Tensor
    """[N] row of each item's successor in its task variant, -1 where there is none."""
    tokens: Tensor
    """[N] each item's (last) token: the logit a head's OV circuit is scored on."""
    ids: list[tuple[int, ...]]
    """Each item's token ids (one token for most; a split number's digits)."""
    period: Tensor
    """[N] the number of items of the task when it is cyclic (days: 7, months: 12), else 0."""

    def __repr__(self) -> str:
        tasks = list(dict.fromkeys(self.tasks))
        split = sum(len(i) > 1 for i in self.ids)
        return (f"ItemTable({len(self.texts)} items in {len(tasks)} task variants ({', '.join(tasks[:4])}{', ...' if len(tasks) > 4 else ''}); "
                f"{int(self.held_out.sum())} held out; {split} split into several tokens)")

    @property
    def residues(self) -> Tensor:
        return self.indices % 10

    @cached_property
    def base_tasks(self) -> list[str]:
        """Each row's task, both variants as one (computed once: miners and probes ask per draw)."""
        return [base_task(t) for t in self.tasks]

    @cached_property
    def is_number(self) -> Tensor:
        """[N] bool: the item belongs to the numbers task (either variant)."""
        return torch.tensor([b == "numbers" for b in self.base_tasks])

    @property
    def split(self) -> Tensor:
        """[N] bool: the item splits into several tokens (a number for a digit-splitting tokenizer),
        so it is read at its last token and its class is visible in that token."""
        return torch.tensor([len(ids) > 1 for ids in self.ids], dtype=torch.bool)

    def offsets(self, rows: Tensor | None = None, cols: Tensor | None = None) -> Tensor:
        """Signed index offset of each column item from each row item ([rows, cols]; all items by
        default), wrapped for cyclic tasks (Sunday -> Monday is +1, not -6)."""
        rows = torch.arange(len(self.indices)) if rows is None else rows
        cols = torch.arange(len(self.indices)) if cols is None else cols
        off = self.indices[cols][None, :] - self.indices[rows][:, None]
        period = self.period[rows][:, None].expand_as(off)
        wrapped = torch.remainder(off + period // 2, period.clamp_min(1)) - period // 2
        return torch.where(period > 0, wrapped, off)

    def permuted(self, generator: torch.Generator) -> ItemTable:
        """The same items with their indices permuted among the non-held-out rows: the
        index-permutation null (any structure the miner finds in it is chance)."""
        indices = self.indices.clone()
        rows = (~self.held_out).nonzero().flatten()
        indices[rows] = indices[rows[torch.randperm(len(rows), generator=generator)]]
        return ItemTable(self.texts, self.tasks, indices, self.held_out, self.successor, self.tokens, self.ids, self.period)

    def relabelled(self, generator: torch.Generator) -> ItemTable:
        """The tokenizer-aware relabelling null: number items relabelled only in ways that keep the
        token each is read at. Numbers sharing a last token (all "...3" for a digit-splitting
        tokenizer) share one scrambled residue; the groups' residues are a balanced random
        assignment; every other task keeps its indices. What the read-at token already says (the
        last digit) survives; what ties the numbers' classes to the other tasks' does not."""
        indices = self.indices.clone()
        rows = (self.is_number & ~self.held_out).nonzero().flatten()
        groups = sorted({int(self.tokens[r]) for r in rows})
        order = torch.randperm(len(groups), generator=generator).tolist()
        offset = int(torch.randint(10, (1,), generator=generator))
        residue_of = {token: (order[g] + offset) % 10 for g, token in enumerate(groups)}
        for r in rows.tolist():
            indices[r] = indices[r] - indices[r] % 10 + residue_of[int(self.tokens[r])]
        return ItemTable(self.texts, self.tasks, indices, self.held_out, self.successor, self.tokens, self.ids, self.period)

    @staticmethod
    def from_token_set(token_set: TokenSet) -> ItemTable:
        items = token_set.items
        successor = torch.full((len(items),), -1, dtype=torch.long)
        for row, succ in token_set.successor_pairs():
            successor[row] = succ
        specs = token_set.tasks
        return ItemTable(
            texts=[i.text for i in items],
            tasks=[i.task for i in items],
            indices=torch.tensor([i.index for i in items]),
            held_out=torch.tensor([specs[i.task].held_out for i in items]),
            successor=successor,
            tokens=torch.tensor([i.token for i in items], dtype=torch.long),
            ids=[i.ids or (i.token,) for i in items],
            period=torch.tensor([len(specs[i.task].indices) if specs[i.task].cyclic else 0 for i in items]),
        )


@torch.no_grad()
def latent_matrix(sae, acts_ND: Float[Tensor, "n d"], batch: int = 4096) -> Float[Tensor, "d_sae n"]:
    """Activation of every latent on every item (sae-lens `encode`; `sae`: an SAE or a `Dictionary`)."""
    sae = as_sae(sae)
    device = next(sae.parameters()).device
    out = [sae.encode(acts_ND[s : s + batch].to(device).float()).cpu() for s in range(0, len(acts_ND), batch)]
    return torch.cat(out).T.contiguous()


def class_profiles(acts_FN: Tensor, residues: Tensor, n_classes: int = 10) -> Float[Tensor, "d_sae classes"]:
    """Mean activation of each latent over the items of each residue class."""
    onehot_NC = torch.nn.functional.one_hot(residues, n_classes).float()
    return acts_FN @ onehot_NC / onehot_NC.sum(0).clamp_min(1)


def task_profiles(acts_FN: Tensor, tasks: list[str]) -> tuple[Tensor, list[str]]:
    names = list(dict.fromkeys(tasks))
    onehot = torch.tensor([[t == n for n in names] for t in tasks], dtype=torch.float32)
    return acts_FN @ onehot / onehot.sum(0).clamp_min(1), names


def selectivity(profile_FC: Tensor) -> tuple[Tensor, Tensor]:
    """Share of a latent's class-averaged activation that falls on its best class (1/C = none)."""
    total = profile_FC.sum(-1).clamp_min(1e-12)
    best, cls = profile_FC.max(-1)
    return best / total, cls
