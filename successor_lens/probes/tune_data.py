"""The data and the measurements of `tune` (probes/tune.py): a search split and a held-out split,
one evaluation of an edit on a split, and its KPIs as A/B tests against the unedited model.

A split holds succession prompts (halved per task by the seed, `head_choice.split_prompts`), corpus
windows (halved by the seed) and side-task prompts the edits do not target (copying a list seen
before, and greater-than: "The number 12 is less than the number" -> any later number). Every
measurement is kept per unit (prompt or window), so each KPI's change is a paired A/B test
(`nulls.paired_ab`): the same units without and with the edit.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch
from torch import Tensor
from transformer_lens import HookedTransformer
from transformer_lens.utilities import get_act_name

from successor_lens.nulls import paired_ab
from successor_lens.probes.edits import EditSet
from successor_lens.probes.head_choice import split_prompts
from successor_lens.probes.incontext import Prompt, _answers, _ids, _single, by_length, logits_from

COPY_WORDS = ("apple", "river", "stone", "cloud", "table", "garden", "window", "bottle", "forest", "candle", "mirror", "pocket",
              "ticket", "hammer", "rabbit", "silver", "jacket", "planet", "carpet", "pencil")
"""Non-ordinal words for the copying side task (those that are one token with a leading space are used)."""


@dataclass
class SidePrompt:
    """A prompt of a task the edits do not target: correct when the top-1 among `candidates` is in `correct`."""

    task: str
    ids: list[int]
    candidates: list[int]
    correct: list[int]


def side_prompts(tokenizer, seed: int = 0, copies: int = 24) -> list[SidePrompt]:
    """Copying ("List: apple river stone cloud table garden apple river" -> " stone") and
    greater-than ("The number 12 is less than the number" -> a number above 12, among 1..40)."""
    rng = random.Random(f"{seed}:side")
    out: list[SidePrompt] = []
    words = [(w, t) for w in COPY_WORDS if (t := _single(tokenizer, " " + w)) is not None]
    if len(words) >= 6:
        for _ in range(copies):
            seq = rng.sample(words, 6)
            k = rng.randint(1, 4)
            pieces = ["List:"] + [" " + w for w, _ in seq] + [" " + w for w, _ in seq[:k]]
            out.append(SidePrompt("copying", _ids(tokenizer, pieces), [t for _, t in seq], [seq[k][1]]))
    numbers, split = _answers(tokenizer, [str(n) for n in range(1, 41)], " ")
    candidates = [t for t in numbers if t is not None]
    for n in range(2, 31):
        later = [t for i, t in enumerate(numbers) if t is not None and i + 1 > n]
        if numbers[n - 1] is not None and later:
            pieces = ["The number", f" {n}", " is less than the number"] + ([" "] if split else [])
            out.append(SidePrompt("greater-than", _ids(tokenizer, pieces), candidates, later))
    return out


@dataclass
class SplitData:
    prompts: list[Prompt]
    windows: Tensor
    side: list[SidePrompt]

    def key(self) -> dict:
        """What the split holds, for content-keyed records."""
        return {"prompts": [[p.task, p.ids, p.answer] for p in self.prompts], "windows": self.windows.tolist(),
                "side": [[s.task, s.ids, s.correct] for s in self.side]}


def make_splits(prompts: list[Prompt], windows: Tensor, side: list[SidePrompt], seed: int = 0) -> tuple[SplitData, SplitData]:
    """(search, held out): prompts halved per task, windows and side prompts halved, all by the seed."""
    search_p, held_p = split_prompts(prompts, seed)
    order = torch.randperm(len(windows), generator=torch.Generator().manual_seed(seed))
    half = len(windows) // 2
    search_s, held_s = split_prompts(side, seed, salt=":side")
    return (SplitData(search_p, windows[order[:half].sort().values], search_s),
            SplitData(held_p, windows[order[half:].sort().values], held_s))


@dataclass
class Baseline:
    """The unedited model on a split: its corpus predictions (fp16 log-probs per window batch), for
    KL and top-1 changes, and every batch's residual stream entering each layer, so an edit whose
    earliest layer is L runs only layers L.. (`start_at_layer`; the layers before it are unchanged
    by the edit). `mean_z`: every head's mean z over the first corpus windows (mean ablation)."""

    logp: list[Tensor] = field(default_factory=list)
    top1: list[Tensor] = field(default_factory=list)
    resid: list[Tensor] = field(default_factory=list)
    """Per batch: [n_layers, batch, pos, d_model]."""
    mean_z: dict[tuple[int, int], Tensor] = field(default_factory=dict)


UNITS = ("hit", "in_task", "logp", "loss", "kl", "changed", "side")
"""Per-unit measurements of one evaluation: per succession prompt (top-1 over the vocabulary is the
answer, top-1 among the task's items is, log-prob of the answer), per corpus window (next-token loss,
KL(unedited || edited), share of positions whose top-1 changes), per side prompt (correct)."""


def batches(model: HookedTransformer, data: SplitData, batch: int = 4) -> list[tuple[str, list, Tensor]]:
    """The forward passes of one evaluation: prompts by length, side prompts by length, window batches."""
    out: list[tuple[str, list, Tensor]] = [("prompts", g, ids) for g, ids in by_length(model, data.prompts)]
    out += [("side", g, ids) for g, ids in by_length(model, data.side)]  # type: ignore[arg-type]
    out += [("windows", [], data.windows[s : s + batch].to(model.W_E.device)) for s in range(0, len(data.windows), batch)]
    return out


@torch.no_grad()
def fill_baseline(model: HookedTransformer, data: SplitData, base: Baseline, batch: int = 4, mean_windows: int = 8) -> None:
    names = [get_act_name("resid_pre", l) for l in range(model.cfg.n_layers)]
    for _, _, ids in batches(model, data, batch):
        _, cache = model.run_with_cache(ids, names_filter=lambda n: n in names, stop_at_layer=model.cfg.n_layers)
        base.resid.append(torch.stack([cache[n] for n in names]))
    z_names = [get_act_name("z", l) for l in range(model.cfg.n_layers)]
    _, cache = model.run_with_cache(data.windows[:mean_windows].to(model.W_E.device), names_filter=lambda n: n in z_names,
                                    stop_at_layer=model.cfg.n_layers)
    base.mean_z = {(l, h): cache[z_names[l]][:, :, h].flatten(0, 1).mean(0) for l in range(model.cfg.n_layers) for h in range(model.cfg.n_heads)}


@torch.no_grad()
def evaluate(model: HookedTransformer, data: SplitData, edits: EditSet | None, base: Baseline, batch: int = 4) -> dict[str, list[float]]:
    """One evaluation: the per-unit measurements (`UNITS`) of `edits` (None: the unedited model,
    which then fills `base`: call it first)."""
    out: dict[str, list[float]] = {k: [] for k in UNITS}
    if edits is None:
        fill_baseline(model, data, base, batch)
    start = min((e.layer for e in edits.edits), default=0) if edits else 0
    hooks = edits.hooks() if edits else []
    window = 0
    with model.hooks(fwd_hooks=hooks):
        for n, (kind, group, ids) in enumerate(batches(model, data, batch)):
            if edits:
                edits.tokens = ids
            logits = logits_from(model, base.resid[n][start], start, last=kind != "windows")
            if kind == "prompts":
                logp = logits[:, -1].log_softmax(-1)
                answers = torch.tensor([p.answer for p in group], device=logp.device)
                out["hit"] += (logp.argmax(-1) == answers).float().tolist()
                out["in_task"] += [float(p.candidates[int(logp[i, p.candidates].argmax())] == p.answer) for i, p in enumerate(group)]
                out["logp"] += logp.gather(-1, answers[:, None])[:, 0].tolist()
            elif kind == "side":
                last = logits[:, -1]
                out["side"] += [float(s.candidates[int(last[i, s.candidates].argmax())] in s.correct) for i, s in enumerate(group)]
            else:
                logp = logits[:, :-1].log_softmax(-1)
                out["loss"] += (-logp.gather(-1, ids[:, 1:, None])[..., 0]).mean(1).tolist()
                if edits is None:
                    base.logp.append(logp.half().cpu())
                    base.top1.append(logp.argmax(-1).cpu())
                ref = base.logp[window].to(logp.device).float()
                out["kl"] += (ref.exp() * (ref - logp)).sum(-1).clamp_min(0).mean(1).tolist() if edits else [0.0] * len(ids)
                out["changed"] += (logp.argmax(-1) != base.top1[window].to(logp.device)).float().mean(1).tolist() if edits else [0.0] * len(ids)
                window += 1
    return out


def _mean(v: list[float]) -> float | None:
    return sum(v) / len(v) if v else None


def kpis(after: dict[str, list[float]], before: dict[str, list[float]], goal_sign: int, seed: int = 0) -> dict:
    """Every KPI of an evaluation against the unedited model's on the same split: before, after, and
    the paired A/B (`nulls.paired_ab`: delta, bootstrap 95% interval, p). `gain` is the target
    accuracy's change in the goal's direction (goal_sign +1 raises succession, -1 lowers it)."""
    def ab(key: str, name: str, transform=lambda v: v) -> dict:
        a, b = [transform(x) for x in after[key]], [transform(x) for x in before[key]]
        return {"metric": name, "before": _mean(b), "after": _mean(a), **paired_ab(a, b, seed)}

    zeros = {"kl": [0.0] * len(after["kl"]), "changed": [0.0] * len(after["changed"])}
    table = {
        "accuracy": ab("hit", "succession accuracy (top-1 over the vocabulary)"),
        "accuracy_in_task": ab("in_task", "succession accuracy (top-1 among the task's items)"),
        "error_rate": ab("hit", "succession error rate (top-1 over the vocabulary)", lambda v: 1.0 - v),
        "answer_logprob": ab("logp", "log-prob of the answer (nats)"),
        "corpus_loss": ab("loss", "corpus next-token loss (nats)"),
        "kl": {"metric": "KL(unedited || edited) per corpus token (nats)", "before": 0.0, "after": _mean(after["kl"]),
               **paired_ab(after["kl"], zeros["kl"], seed)},
        "top1_changed": {"metric": "share of corpus positions whose top-1 changes", "before": 0.0, "after": _mean(after["changed"]),
                         **paired_ab(after["changed"], zeros["changed"], seed)},
        "side_accuracy": ab("side", "accuracy on the untargeted tasks (copying, greater-than)"),
    }
    table["gain"] = {"metric": "target gain (succession accuracy, in the goal's direction)",
                     **paired_ab([goal_sign * x for x in after["hit"]], [goal_sign * x for x in before["hit"]], seed)}
    return table
