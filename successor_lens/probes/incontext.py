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

from successor_lens.probes.heads import head_name
from successor_lens.probes.wild import final_norm_delta
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
        answers = [_single(tokenizer, space + item) for item in task.items]
        candidates = [t for t in answers if t is not None]
        for start in range(len(task.items) - shown):
            if answers[start + shown] is None:
                continue
            pieces = []
            for n, item in enumerate(task.items[start : start + shown]):
                pieces += [(space if n else "") + item, sep]
            prompts.append(Prompt(task.name, "".join(pieces), _ids(tokenizer, pieces), answers[start + shown], candidates))
    numbers = [_single(tokenizer, f" {n}") for n in range(1, chapters + 2)]
    for n in range(1, chapters + 1):
        if numbers[n] is not None:
            pieces = ["Chapter", f" {n}", ".", " It was a quiet morning in the village.", "\n\n", "Chapter"]
            prompts.append(Prompt("chapters", "".join(pieces), _ids(tokenizer, pieces), numbers[n], [t for t in numbers if t is not None]))
    return prompts


def encode_prompt(model: HookedTransformer, prompt: Prompt) -> torch.Tensor:
    ids = list(prompt.ids)
    if model.cfg.default_prepend_bos and getattr(model.tokenizer, "bos_token_id", None) is not None:
        ids = [model.tokenizer.bos_token_id] + ids
    return torch.tensor(ids)[None]


@dataclass
class InContext:
    accuracy: dict[str, float]
    """Per task: top-1 over the whole vocabulary is the answer."""
    dla: torch.Tensor
    """[layers, heads] mean DLA on the answer (vs the task's other candidates) over all prompts."""
    dla_per_task: dict[str, torch.Tensor]
    n_prompts: dict[str, int]

    def ranking(self, k: int = 10) -> list[tuple[str, float]]:
        n_heads = self.dla.shape[1]
        order = self.dla.flatten().argsort(descending=True)[:k].tolist()
        return [(head_name(*divmod(i, n_heads)), float(self.dla.flatten()[i])) for i in order]

    def summary(self, ov_scores: dict[str, float] | None = None) -> dict:
        return {"accuracy": self.accuracy, "n_prompts": self.n_prompts,
                "ranking": [{"head": h, "dla": v, "ov_succession": (ov_scores or {}).get(h)} for h, v in self.ranking(10)]}


@torch.no_grad()
def in_context_dla(model: HookedTransformer, prompts: list[Prompt]) -> InContext:
    L, H = model.cfg.n_layers, model.cfg.n_heads
    names = {f"blocks.{l}.attn.hook_z" for l in range(L)} | {"ln_final.hook_scale"}
    sums: dict[str, torch.Tensor] = {}
    hits: dict[str, list[bool]] = {}
    for prompt in prompts:
        ids = encode_prompt(model, prompt).to(model.W_E.device)
        logits, cache = model.run_with_cache(ids, names_filter=lambda n: n in names)
        z = torch.stack([cache[f"blocks.{l}.attn.hook_z"][0, -1] for l in range(L)])  # [L, H, E]
        out = torch.einsum("lhe,lhed->lhd", z, model.W_O)
        scale = cache.cache_dict.get("ln_final.hook_scale")
        normed = final_norm_delta(model, out, scale[0, -1] if scale is not None else None)
        others = [c for c in prompt.candidates if c != prompt.answer] or [prompt.answer]
        direction = model.W_U[:, prompt.answer] - model.W_U[:, others].mean(-1)
        dla = (normed @ direction).cpu()
        sums[prompt.task] = sums.get(prompt.task, torch.zeros(L, H)) + dla
        hits.setdefault(prompt.task, []).append(int(logits[0, -1].argmax()) == prompt.answer)
    counts = {t: len(v) for t, v in hits.items()}
    per_task = {t: sums[t] / counts[t] for t in sums}
    total = sum(sums.values()) / max(1, sum(counts.values()))
    return InContext({t: sum(v) / len(v) for t, v in hits.items()}, total, per_task, counts)
