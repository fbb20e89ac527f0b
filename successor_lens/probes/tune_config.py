"""`tune`'s goals, defaults and configuration, checked before any model loads (no torch here: the
command's help and argument errors answer without importing it)."""

from __future__ import annotations

from dataclasses import dataclass

from successor_lens.errors import ConfigError, check_float, check_int

GOALS = {"improve-succession": 1, "remove-succession": -1}
DEFAULT_MAX_KL = 0.1
"""Side-effect budget: mean KL(unedited || edited) per corpus token, nats."""
DEFAULT_MAX_LOSS_INCREASE = 0.1
"""Side-effect budget: rise of the corpus next-token loss, nats."""
DEFAULT_BUDGET = 6
"""Golden-section evaluations per continuous parameter."""
BUDGET_RANGE = (2, 30)
SCALE_RANGE = (-1.0, 3.0)
"""Head scale factors searched (1 is the unedited head, 0 its zero ablation, -1 its output reversed)."""
PENALTY = 10.0
PAIRS = 2
"""Greedy pairs tried: the best single edit with each of the next PAIRS best singles."""


@dataclass(frozen=True)
class TuneConfig:
    goal: str
    budget: int = DEFAULT_BUDGET
    max_kl: float = DEFAULT_MAX_KL
    max_loss_increase: float = DEFAULT_MAX_LOSS_INCREASE
    heads: int = 4
    seed: int = 0

    def __post_init__(self):
        if self.goal not in GOALS:
            raise ConfigError(f"--goal {self.goal!r} is not a goal: use {' or '.join(GOALS)}")
        fix = f"use {BUDGET_RANGE[0]}..{BUDGET_RANGE[1]} evaluations per scale (default {DEFAULT_BUDGET})"
        check_int("--budget", self.budget, *BUDGET_RANGE, fix)
        check_float("--max-kl", self.max_kl, 0.0, 100.0, "a KL budget in nats per token, e.g. 0.1")
        check_float("--max-loss-increase", self.max_loss_increase, 0.0, 100.0, "a loss budget in nats, e.g. 0.1")
        check_int("--heads", self.heads, 1, 16, "the number of top heads to search, 1..16")

    @property
    def sign(self) -> int:
        return GOALS[self.goal]


SIGNIFICANCE = 0.05
"""A held-out change counts when its bootstrap interval excludes 0 and its sign-flip permutation p is below this."""
