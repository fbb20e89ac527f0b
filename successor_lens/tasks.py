"""Succession tasks (docs/method.md section 1): ordered token sets, filtered to single tokens.

A *task* is an ordered list of items (numbers, days, months, ...). Each task comes in a
leading-space variant (" Monday") and a no-space variant ("Monday"), which are separate token
sets. Only items that are one token for the tokenizer take part; the others are kept in
`TokenSet.dropped` with the reason, never silently lost.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

import torch

from successor_lens.errors import UserError

NUMBER_WORDS = (
    "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty"
).split()
ORDINALS = (
    "first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth thirteenth "
    "fourteenth fifteenth sixteenth seventeenth eighteenth nineteenth twentieth"
).split()
DAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
DAY_PREFIXES = "Mon Tue Wed Thu Fri Sat Sun".split()
MONTHS = (
    "January February March April May June July August September October November December"
).split()
MONTH_PREFIXES = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()
LETTERS = [chr(c) for c in range(ord("A"), ord("Z") + 1)]
ROMAN = "I II III IV V VI VII VIII IX X".split()


@dataclass(frozen=True)
class Task:
    """An ordered set of items; `indices[i]` is the item's ordinal (1 for "Monday", 7 for " 7")."""

    name: str
    items: tuple[str, ...]
    indices: tuple[int, ...]
    cyclic: bool = False
    """Whether the last item's successor is the first (days, months)."""
    held_out: bool = False
    """Out-of-distribution test set (Roman numerals), kept out of training and probes."""
    multi_token: bool = False
    """Keep items that split into several tokens; they are read at their last token in context
    (the SAE-data analogue of numbers 0..500 for digit-splitting tokenizers, docs/method.md)."""


def standard_tasks(numbers: range = range(1, 201), multi_token_numbers: bool = False) -> list[Task]:
    """The paper's tasks. `numbers` is 1..200 for the succession score, 0..500 for SAE data."""

    def ordered(name, items, cyclic=False, held_out=False, start=1):
        return Task(name, tuple(items), tuple(range(start, start + len(items))), cyclic, held_out)

    return [
        Task("numbers", tuple(str(n) for n in numbers), tuple(numbers), multi_token=multi_token_numbers),
        ordered("number_words", NUMBER_WORDS),
        ordered("ordinals", ORDINALS),
        ordered("days", DAYS, cyclic=True),
        ordered("day_prefixes", DAY_PREFIXES, cyclic=True),
        ordered("months", MONTHS, cyclic=True),
        ordered("month_prefixes", MONTH_PREFIXES, cyclic=True),
        ordered("letters", LETTERS),
        ordered("roman", ROMAN, held_out=True),
    ]


def sae_tasks() -> list[Task]:
    """The SAE data, mining and probe items: numbers 0..500 (single tokens where the tokenizer has
    them, else read at their last digit in context) and the other tasks (docs/method.md section 3)."""
    return standard_tasks(range(0, 501), multi_token_numbers=True)


def same_task(tasks: Sequence[str]) -> torch.Tensor:
    """[n, n] bool: whether two items belong to the same task variant. Every comparison "among the
    task's own items" (the scan, arithmetic, the offset profile, the atlas's OV maps) uses this."""
    ids = {name: i for i, name in enumerate(dict.fromkeys(tasks))}
    task_id = torch.tensor([ids[t] for t in tasks])
    return task_id[:, None] == task_id[None, :]


@runtime_checkable
class Tokenizer(Protocol):
    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...


@dataclass(frozen=True)
class Item:
    task: str
    """Task variant name: "days" (leading space) or "days:nospace"."""
    index: int
    text: str
    token: int
    """The item's (last) token: the one whose activation is read and whose logit is scored."""
    ids: tuple[int, ...] = ()
    """All of the item's tokens when it splits (multi-token tasks only); empty for one token."""


@dataclass(frozen=True)
class Dropped:
    task: str
    text: str
    reason: str


@dataclass
class TokenSet:
    """The single-token items of a set of tasks, in task order, each with its index."""

    items: list[Item]
    dropped: list[Dropped]
    tasks: dict[str, Task] = field(default_factory=dict)
    """Task variant name -> its task definition (cyclicity, held-out flag)."""

    @property
    def task_names(self) -> list[str]:
        return list(dict.fromkeys(item.task for item in self.items))

    @property
    def tokens(self) -> torch.Tensor:
        return torch.tensor([item.token for item in self.items], dtype=torch.long)

    @property
    def indices(self) -> torch.Tensor:
        return torch.tensor([item.index for item in self.items], dtype=torch.long)

    def of_task(self, task: str) -> list[Item]:
        return [item for item in self.items if item.task == task]

    def successor_pairs(self) -> list[tuple[int, int]]:
        """(position of item, position of its successor) for every item whose successor is present.

        Linear tasks have no successor for their last item; an item whose successor was dropped
        (not a single token) has none either; cyclic tasks wrap from the last item to the first.
        """
        return self.offset_pairs(1)

    def offset_pairs(self, offset: int) -> list[tuple[int, int]]:
        """(position of item, position of the item `offset` places on) where that item is present;
        cyclic tasks wrap (offset 1 from Sunday is Monday, -1 from Monday is Sunday)."""
        pairs = []
        for task in self.task_names:
            positions = [i for i, item in enumerate(self.items) if item.task == task]
            by_index = {self.items[i].index: i for i in positions}
            spec = self.tasks[task]
            lo, hi = min(spec.indices), max(spec.indices)
            for i in positions:
                nxt = self.items[i].index + offset
                if spec.cyclic:
                    nxt = lo + (nxt - lo) % (hi - lo + 1)
                if nxt in by_index:
                    pairs.append((i, by_index[nxt]))
        return pairs

    def __repr__(self) -> str:
        per = ", ".join(f"{t} {len(self.of_task(t))}" for t in self.task_names[:6])
        return f"TokenSet({len(self.items)} items: {per}{', ...' if len(self.task_names) > 6 else ''}; {len(self.dropped)} dropped)"

    def summary(self) -> dict:
        return {
            "n_items": len(self.items),
            "per_task": {t: len(self.of_task(t)) for t in self.task_names},
            "dropped": [d.__dict__ for d in self.dropped],
        }


Variant = Literal["space", "nospace", "both"]


def build_token_set(
    tokenizer: Tokenizer | None,
    tasks: Sequence[Task] | None = None,
    variants: Variant = "both",
    include_held_out: bool = True,
) -> TokenSet:
    """Tokenize every item of every task variant and keep those that are a single token."""
    if tokenizer is None:
        raise UserError("the model has no tokenizer: successor-lens needs one to find the task items")
    tasks = standard_tasks() if tasks is None else tasks
    prefixes = {"space": [" "], "nospace": [""], "both": [" ", ""]}[variants]
    unk = getattr(tokenizer, "unk_token_id", None)
    items, dropped, specs = [], [], {}
    for task in tasks:
        if task.held_out and not include_held_out:
            continue
        for prefix in prefixes:
            name = task.name if prefix else f"{task.name}:nospace"
            specs[name] = task
            for text, index in zip(task.items, task.indices):
                ids = tokenizer.encode(prefix + text, add_special_tokens=False)
                if not ids or (len(ids) != 1 and not task.multi_token):
                    dropped.append(Dropped(name, prefix + text, f"splits into {len(ids)} tokens"))
                elif unk is not None and unk in ids:
                    dropped.append(Dropped(name, prefix + text, "unknown token"))
                else:
                    items.append(Item(name, index, prefix + text, ids[-1], tuple(ids) if len(ids) > 1 else ()))
    present = {item.task for item in items}
    return TokenSet(items, dropped, {k: v for k, v in specs.items() if k in present})
