"""Behavioural succession in context: prompts such as "Monday, Tuesday, Wednesday," -> " Thursday"
or "Chapter 3. ... Chapter" -> " 4", and the direct logit attribution of every head on the answer.

DLA of a head: its output at the last position, through the final norm with the clean scale held
fixed, dotted with W_U[:, answer] minus the mean W_U column of the task's other candidates
(so a head that boosts every number equally scores 0). This finds heads that increment in
context even where their OV-only succession score is low.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformer_lens import HookedTransformer
from transformer_lens.utilities import get_act_name
from transformer_lens.utilities.activation_functions import apply_softcap

from successor_lens.models.provenance import prepended_bos
from successor_lens.probes.circuit import FINAL_SCALE, final_norm_delta, head_outputs, post_scale_names, post_scales
from successor_lens.probes.head_id import head_name
from successor_lens.tasks import Task, standard_tasks

LIST_TASKS = ("numbers", "number_words", "ordinals", "days", "months", "letters")


@dataclass
class Prompt:
    task: str
    text: str
    ids: list[int]
    """The prompt's tokens (no BOS), each piece encoded on its own as the text splits into words."""
    answer: int
    candidates: list[int]
    """Token ids of the task's items (the answer among them)."""


def _single(tokenizer, text: str) -> int | None:
    ids = tokenizer.encode(text, add_special_tokens=False)
    return ids[0] if len(ids) == 1 else None


def _ids(tokenizer, pieces: list[str]) -> list[int]:
    return [t for piece in pieces if piece for t in tokenizer.encode(piece, add_special_tokens=False)]


def succession_prompts(tokenizer, tasks: list[Task] | None = None, shown: int = 3, chapters: int = 12,
                       sep: str = ",", space: str = " ") -> list[Prompt]:
    """Lists of `shown` consecutive items ("Monday, Tuesday, Wednesday," -> " Thursday") per
    ordinal task, plus "Chapter n. ... Chapter" -> " n+1" prompts; answers that are not one token
    are skipped. `sep` and `space` set the separator and the space before each later item."""
    tasks = tasks or [t for t in standard_tasks(range(1, 41)) if t.name in LIST_TASKS]
    prompts = []
    for task in tasks:
        answers, split = _answers(tokenizer, list(task.items), space)
        candidates = [t for t in answers if t is not None]
        for start in range(len(task.items) - shown):
            answer = answers[start + shown]
            if answer is None:
                continue
            pieces = []
            for n, item in enumerate(task.items[start : start + shown]):
                pieces += [(space if n else "") + item, sep]
            pieces += [space] if split else []
            prompts.append(Prompt(task.name, "".join(pieces), _ids(tokenizer, pieces), answer, candidates))
    numbers, split = _answers(tokenizer, [str(n) for n in range(1, chapters + 2)], " ")
    for n in range(1, chapters + 1):
        number = numbers[n]
        if number is not None:
            pieces = ["Chapter", f" {n}", ".", " It was a quiet morning in the village.", "\n\n", "Chapter"] + ([" "] if split else [])
            prompts.append(Prompt("chapters", "".join(pieces), _ids(tokenizer, pieces), number, [t for t in numbers if t is not None]))
    return prompts


def _answers(tokenizer, items: list[str], space: str) -> tuple[list[int | None], bool]:
    """Answer token per item: the spaced form when it is one token; otherwise, when the tokenizer
    splits the space off (digits in SmolLM2: " 4" -> " ", "4"), the bare item after a space that
    ends the prompt (split = True)."""
    spaced = [_single(tokenizer, space + item) for item in items]
    if not space or sum(t is not None for t in spaced) >= sum(_single(tokenizer, i) is not None for i in items):
        return spaced, False
    space_alone = _single(tokenizer, space) is not None
    bare = [_single(tokenizer, item) for item in items]
    return (bare, True) if space_alone else (spaced, False)


def fitting(model: HookedTransformer, prompts: list[Prompt]) -> list[Prompt]:
    """The prompts that fit the model's context (BOS included)."""
    extra = 1 if prepended_bos(model) is not None else 0
    return [p for p in prompts if len(p.ids) + extra <= model.cfg.n_ctx]


def encode_prompt(model: HookedTransformer, prompt: Prompt) -> torch.Tensor:
    bos = prepended_bos(model)
    return torch.tensor(([bos] if bos is not None else []) + list(prompt.ids))[None]


@dataclass
class InContext:
    accuracy: dict[str, float]
    """Per task: top-1 over the whole vocabulary is the answer."""
    accuracy_in_task: dict[str, float]
    """Per task: top-1 among the task's items is the answer."""
    dla: torch.Tensor
    """[layers, heads] mean DLA on the answer (vs the task's other candidates) over all prompts."""
    dla_per_task: dict[str, torch.Tensor]
    n_prompts: dict[str, int]

    def per_head(self) -> dict[str, float]:
        n_heads = self.dla.shape[1]
        return {head_name(*divmod(i, n_heads)): float(v) for i, v in enumerate(self.dla.flatten().tolist())}

    def ranking(self, k: int = 10) -> list[tuple[str, float]]:
        n_heads = self.dla.shape[1]
        order = self.dla.flatten().argsort(descending=True)[:k].tolist()
        return [(head_name(*divmod(i, n_heads)), float(self.dla.flatten()[i])) for i in order]

    def summary(self, ov_scores: dict[str, float] | None = None) -> dict:
        return {"accuracy": self.accuracy, "accuracy_in_task": self.accuracy_in_task, "n_prompts": self.n_prompts, "dla": self.dla.tolist(),
                "ranking": [{"head": h, "dla": v, "ov_succession": (ov_scores or {}).get(h)} for h, v in self.ranking(10)]}


def by_length(model: HookedTransformer, prompts: list[Prompt]):
    """Prompts grouped by token length, as (prompts, ids [n, length]): one forward per group,
    since every TransformerLens forward re-lays-out the weights (a fixed cost per call)."""
    groups: dict[int, list[Prompt]] = {}
    for prompt in prompts:
        groups.setdefault(encode_prompt(model, prompt).shape[1], []).append(prompt)
    for group in groups.values():
        yield group, torch.cat([encode_prompt(model, p) for p in group]).to(model.W_E.device)


def logits_from(model: HookedTransformer, resid: torch.Tensor, start: int, last: bool) -> torch.Tensor:
    """The model's logits from the residual stream entering layer `start` (hooks in place apply), at
    every position or only the last: TransformerLens's own final norm, W_U, b_U and logit soft-cap,
    with the unembedding as one matmul (its forward copies W_U transposed on every call: 670 MB at
    Gemma's 262k vocabulary) and, for prompts, at the one position read."""
    x = model(resid, start_at_layer=start, stop_at_layer=model.cfg.n_layers)
    if last:
        x = x[:, -1:]
    if model.cfg.normalization_type is not None:
        x = model.ln_final(x)
    return apply_softcap(x @ model.W_U + model.b_U, model.cfg.output_logits_soft_cap)


@torch.no_grad()
def in_context_dla(model: HookedTransformer, prompts: list[Prompt]) -> InContext:
    L, H = model.cfg.n_layers, model.cfg.n_heads
    names = {get_act_name("z", l) for l in range(L)} | {FINAL_SCALE} | set(post_scale_names(model))
    sums: dict[str, torch.Tensor] = {}
    hits: dict[str, list[bool]] = {}
    in_task: dict[str, list[bool]] = {}
    for group, ids in by_length(model, prompts):
        logits, cache = model.run_with_cache(ids, names_filter=lambda n: n in names)
        assert isinstance(logits, torch.Tensor)
        z = torch.stack([cache[get_act_name("z", l)][:, -1] for l in range(L)], 1)  # [N, L, H, E]
        post = post_scales(model, cache)
        out = head_outputs(model, z, post[:, -1] if post is not None else None)
        scale = cache.cache_dict.get(FINAL_SCALE)
        normed = final_norm_delta(model, out, scale[:, -1, None, None] if scale is not None else None)
        for n, prompt in enumerate(group):
            others = [c for c in prompt.candidates if c != prompt.answer] or [prompt.answer]
            direction = model.W_U[:, prompt.answer] - model.W_U[:, others].mean(-1)
            sums[prompt.task] = sums.get(prompt.task, torch.zeros(L, H)) + (normed[n] @ direction).cpu()
            hits.setdefault(prompt.task, []).append(int(logits[n, -1].argmax()) == prompt.answer)
            in_task.setdefault(prompt.task, []).append(prompt.candidates[int(logits[n, -1, prompt.candidates].argmax())] == prompt.answer)
    counts = {t: len(v) for t, v in hits.items()}
    per_task = {t: sums[t] / counts[t] for t in sums}
    total = torch.zeros(L, H)
    for task_sum in sums.values():  # in task order, as the sum was always taken
        total = total + task_sum
    total = total / max(1, sum(counts.values()))
    share = lambda d: {t: sum(v) / len(v) for t, v in d.items()}  # noqa: E731
    return InContext(share(hits), share(in_task), total, per_task, counts)
