"""Which head the downstream analyses (arithmetic, logit effects) go through, chosen from evidence.

The OV succession score alone ties on small models (two heads at 0.125 on SmolLM2, one of which
does nothing in context), so the choice uses two independent measurements: the head's OV
succession score and its direct logit attribution on the answer of in-context succession prompts
(`incontext.py`). Each is divided by its best value over all heads (DLA clipped at 0) and
the head with the largest product wins: a head must both map items to successors and raise the
answer in context. When no head raises the answer in context, the OV score decides alone; a
user's `--head` overrides both. The choice and its reason are recorded in `heads_choice.json`.

The DLA that chooses is measured on half the prompts (drawn per task by the seed); the other half
is held out for the ablation that confirms the head (`edits.ablation_effect`). Choosing the head
with the largest effect on the same prompts it is then tested on would make even a random-weight
model's chosen head "hurt succession more than other heads": its noise is what chose it.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable

from transformer_lens import HookedTransformer

from successor_lens.probes.head_id import parse_head_name
from successor_lens.probes.incontext import LIST_TASKS, InContext, Prompt, fitting, in_context_dla, succession_prompts
from successor_lens.probes.scan import scan_heads
from successor_lens.tasks import Task, build_token_set


@dataclass(frozen=True)
class HeadChoice:
    head: str
    reason: str
    candidates: list[dict]
    """The top heads by the combined evidence: head, ov, dla, combined."""

    def to_json(self) -> dict:
        return asdict(self)


def choose_head(ov_scores: dict[str, float], dla: dict[str, float] | None, override: str | None = None, top: int = 8,
                dla_on: str = "") -> HeadChoice:
    """Pick the analysis head from OV succession scores and in-context DLA (both keyed by head name);
    `dla_on` says in the reason which prompts the DLA was measured on."""
    dla = dla or {}
    best_ov = max(ov_scores.values(), default=0.0)
    best_dla = max([max(v, 0.0) for v in dla.values()], default=0.0)
    rows: list[dict[str, Any]] = []
    for name, ov in ov_scores.items():
        d = dla.get(name)
        combined = (ov / best_ov if best_ov > 0 else 0.0) * (max(d, 0.0) / best_dla if best_dla > 0 and d is not None else 0.0)
        rows.append({"head": name, "ov": ov, "dla": d, "combined": combined})
    by_ov = sorted(rows, key=lambda r: (-r["ov"], -(r["dla"] or 0.0), parse_head_name(r["head"])))
    if override:
        ranked = sorted(rows, key=lambda r: (-r["combined"], -r["ov"]))
        return HeadChoice(override, "given with --head", ranked[:top])
    if best_dla <= 0 or best_ov <= 0:
        why = "no head raises the answer in context" if best_dla <= 0 else "no head has a positive OV succession score"
        return HeadChoice(by_ov[0]["head"], f"highest OV succession score ({why}; ties: higher in-context DLA)", by_ov[:top])
    ranked = sorted(rows, key=lambda r: (-r["combined"], -r["ov"], parse_head_name(r["head"])))
    best = ranked[0]
    reason = (f"largest product of OV succession score ({best['ov']:.3f}, {best['ov'] / best_ov:.2f} of the best) and in-context DLA "
              f"on the answer{dla_on} ({best['dla']:.3f}, {max(best['dla'], 0) / best_dla:.2f} of the best)")
    return HeadChoice(best["head"], reason, ranked[:top])


@dataclass
class InContextChoice:
    """In-context DLA on the succession prompts (None when no prompt fits the model) and the head it chose."""

    result: InContext | None
    """Over every prompt (what the run reports)."""
    n_prompts: int
    choice: HeadChoice
    held_out: list[Prompt]
    """The prompts the choice did not see, for the ablation that confirms it."""


@runtime_checkable
class _Tasked(Protocol):
    task: str


T = TypeVar("T", bound=_Tasked)


def split_prompts(prompts: list[T], seed: int = 0, salt: str = "") -> tuple[list[T], list[T]]:
    """(choosing, held out): each task's prompts shuffled by the seed and halved; an odd count gives
    the choosing half the extra prompt. Any items with a `task` split so (tune's side prompts too,
    with a `salt` of their own)."""
    by_task: dict[str, list[T]] = {}
    for p in prompts:
        by_task.setdefault(p.task, []).append(p)
    choosing: list[T] = []
    held_out: list[T] = []
    for task, group in by_task.items():
        order = random.Random(f"{seed}:{task}{salt}").sample(range(len(group)), len(group))
        half = (len(group) + 1) // 2
        choosing += [group[i] for i in sorted(order[:half])]
        held_out += [group[i] for i in sorted(order[half:])]
    return choosing, held_out


def incontext_choice(model: HookedTransformer, ov_scores: dict[str, float], scan_tasks: list[Task] | None = None,
                     override: str | None = None, seed: int = 0) -> InContextChoice:
    """Measure in-context DLA on the prompts that fit the model (reported over all of them), then
    choose the analysis head by the DLA on the choosing half (`split_prompts`)."""
    prompts = fitting(model, succession_prompts(model.tokenizer, incontext_tasks(scan_tasks)))
    if not prompts:
        return InContextChoice(None, 0, choose_head(ov_scores, None, override), [])
    choosing, held_out = split_prompts(prompts, seed)
    result = in_context_dla(model, prompts)
    choice = choose_head(ov_scores, in_context_dla(model, choosing).per_head(), override, dla_on=", choosing half of the prompts")
    return InContextChoice(result, len(prompts), choice, held_out)


def analysis_head(model: HookedTransformer, scan_tasks: list[Task] | None = None, override: str | None = None,
                  seed: int = 0) -> HeadChoice:
    """Scan every head, then choose from the OV scores and in-context DLA (for `probe` without a run folder)."""
    scan = scan_heads(model, build_token_set(model.tokenizer, scan_tasks)).to_json()
    return incontext_choice(model, {h: v["succession"] for h, v in scan["heads"].items()}, scan_tasks, override, seed).choice


def incontext_tasks(scan_tasks: list[Task] | None) -> list[Task] | None:
    """The list tasks of the in-context prompts, from the scan's tasks when they were given."""
    return [t for t in scan_tasks if t.name in LIST_TASKS] if scan_tasks else None
