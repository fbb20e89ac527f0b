"""What a head does on natural text (paper section 4) and in-context succession prompts.

Direct effect of a head at a position: its output there is replaced by its mean output (over the
first `mean_contexts` windows), and only the direct path to the logits changes: the change goes
through the final norm with the clean run's scale held fixed, then W_U. The loss change at the
position (ablated minus clean; > 0 means the head helps) is exact, at every position for the
chosen heads, and for every head at `rank_positions` seeded random positions (the head ranking)
and at the succession cases (which head wins). A first-order (attribution-patching) shortcut was
tried and rejected: with a confident head the softmax saturates and it gets even the sign wrong.

Categories of the positions where the chosen head helps most, first rule that matches, with y
the token being predicted and A the `attend_top` tokens the head attends to most there:
- succession: y is the next item after some a in A in one of the ordinal tasks (numbers,
  number words, ordinals, days, months, letters, ...; days and months wrap);
- acronym: y is 1-4 capital letters and some a in A is a capitalised word starting with y's letter;
- copying: y equals some a in A (ignoring case and surrounding spaces);
- greater-than: y is a later item than some a in A of the same task (but not the next one);
- other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import torch
from torch import Tensor
from transformer_lens import HookedTransformer
from transformer_lens.utilities import get_act_name

from successor_lens.errors import UserError
from successor_lens.paper import WILD
from successor_lens.probes.circuit import FINAL_SCALE, as_written, direct_logits, head_outputs, post_scale_names, post_scales, written
from successor_lens.probes.head_id import head_name
from successor_lens.probes.probe_configs import WildConfig
from successor_lens.progress import bar as progress_bar
from successor_lens.progress import honours_progress
from successor_lens.tasks import Task, standard_tasks

CATEGORIES = ("succession", "acronym", "copying", "greater-than", "other")


class Ordinals:
    """Every ordinal-task item by its stripped text: (task, index, task length, cyclic)."""

    def __init__(self, tasks: list[Task] | None = None):
        self.entries: dict[str, list[tuple[str, int, int, bool]]] = {}
        for task in tasks or standard_tasks(range(0, 501)):
            for text, index in zip(task.items, task.indices):
                self.entries.setdefault(text.strip(), []).append((task.name, index, len(task.items), task.cyclic))

    def relation(self, a: str, y: str) -> str | None:
        """"succession" if y follows a in some task, "greater-than" if y comes later, else None."""
        found = None
        for task, i, n, cyclic in self.entries.get(a.strip(), []):
            for task_y, j, _, _ in self.entries.get(y.strip(), []):
                if task_y != task:
                    continue
                if j == i + 1 or (cyclic and i == n and j == 1):
                    return "succession"
                if j > i + 1:
                    found = "greater-than"
        return found


def classify(target: str, attended: list[str], ordinals: Ordinals) -> str:
    relations = {ordinals.relation(a, target) for a in attended}
    if "succession" in relations:
        return "succession"
    y = target.strip()
    if 1 <= len(y) <= 4 and y.isalpha() and y.isupper() and any(len(a.strip()) > 1 and a.strip()[0] == y[0] and a.strip()[1:].islower() for a in attended):
        return "acronym"
    if y and any(a.strip().lower() == y.lower() for a in attended):
        return "copying"
    if "greater-than" in relations:
        return "greater-than"
    return "other"


def _run(model: HookedTransformer, ids: Tensor, pattern_layers: set[int]):
    names = {get_act_name("z", l) for l in range(model.cfg.n_layers)} | {FINAL_SCALE} | set(post_scale_names(model))
    names |= {get_act_name("pattern", l) for l in pattern_layers}
    logits, cache = model.run_with_cache(ids.to(model.W_E.device), names_filter=lambda n: n in names)
    z = torch.stack([cache[get_act_name("z", l)] for l in range(model.cfg.n_layers)], 2)  # [B, P, L, H, E]
    return logits, z, cache.cache_dict.get(FINAL_SCALE), cache


@dataclass
class WildResult:
    head: str
    mean_delta_loss: float
    top: list[dict]
    shares: dict[str, float]
    head_ranking: list[tuple[str, float]]
    """Every head by its mean exact direct effect on the loss at the sampled positions (helps most first)."""
    wins: dict[str, int]
    """On the succession cases: how often each head has the largest exact direct effect."""
    n_cases: int
    cases: list[dict] = field(default_factory=list)

    def summary(self) -> dict:
        return {"head": self.head, "mean_delta_loss": self.mean_delta_loss, "category_shares": self.shares,
                "top_positions": self.top, "head_ranking": self.head_ranking[:20], "succession_case_wins": self.wins,
                "n_succession_cases": self.n_cases, "head_wins": f"{self.wins.get(self.head, 0)}/{self.n_cases}",
                "cases": self.cases[:20], "paper": WILD}


@torch.no_grad()
@honours_progress
def wild_analysis(model: HookedTransformer, windows: Tensor, heads: list[tuple[int, int]], cfg: WildConfig | None = None,
                  tasks: list[Task] | None = None, progress: bool = True) -> list[WildResult]:
    """One pass over the windows for all `heads`: their exact direct effects, categories and wins."""
    cfg = cfg or WildConfig()
    L, H = model.cfg.n_layers, model.cfg.n_heads
    W_O = model.W_O  # [L, H, E, D]
    ordinals = Ordinals(tasks)
    tokenizer = model.tokenizer
    if tokenizer is None:
        raise UserError(f"{model.cfg.model_name} has no tokenizer: the categories read tokens as text")
    decode = lambda t: str(tokenizer.decode([int(t)]))  # noqa: E731
    z_mean = torch.stack([_run(model, windows[s : s + cfg.batch], set())[1].flatten(0, 1).mean(0)
                          for s in range(0, min(cfg.mean_contexts, len(windows)), cfg.batch)]).mean(0)  # [L, H, E]
    out_mean = head_outputs(model, z_mean, raw=True)  # each position's post-norm scale is applied to the change

    positions: dict[tuple[int, int], list] = {h: [] for h in heads}
    n_targets = windows.shape[1] - 1
    sample = set(torch.randperm(len(windows) * n_targets, generator=torch.Generator().manual_seed(cfg.seed))[: cfg.rank_positions].tolist())
    ranked, cases = torch.zeros(L * H), cast(list[dict[str, Any]], [])
    for start in progress_bar(range(0, len(windows), cfg.batch), desc="in-the-wild", leave=False, disable=not progress):
        ids = windows[start : start + cfg.batch].to(model.W_E.device)
        logits, z, scale, cache = _run(model, ids, {l for l, _ in heads})
        target = ids[:, 1:]
        clean = -logits[:, :-1].log_softmax(-1).gather(-1, target[..., None])[..., 0]
        zc = z[:, :-1]  # [B, P, L, H, E]
        sc = scale[:, :-1] if scale is not None else None
        post = post_scales(model, cache)
        pc = post[:, :-1] if post is not None else None  # [B, P, L, 1]

        def all_heads(b: int, p: int, zc=zc, sc=sc, pc=pc, logits=logits, target=target, clean=clean) -> Tensor:
            """Exact direct effect of mean-ablating each head at one position: [L * H]."""
            d_pos = as_written(model, out_mean - head_outputs(model, zc[b, p], raw=True), pc[b, p] if pc is not None else None).flatten(0, 1)
            d_all = direct_logits(model, d_pos, sc[b, p] if sc is not None else None)
            return (-(logits[b, p] + d_all).log_softmax(-1)[:, target[b, p]] - clean[b, p]).cpu()

        for layer, index in heads:
            delta = written(model, layer, out_mean[layer, index] - zc[:, :, layer, index] @ W_O[layer, index],
                            pc[:, :, layer] if pc is not None else None)
            dlogits = direct_logits(model, delta, sc)
            ablated = -(logits[:, :-1] + dlogits).log_softmax(-1).gather(-1, target[..., None])[..., 0]
            gain = (ablated - clean).cpu()
            pattern = cache[get_act_name("pattern", layer)][:, index, :-1].cpu()  # [B, Q, K]
            positions[(layer, index)] += [(float(gain[b, p]), start + b, p, pattern[b, p]) for b in range(len(ids)) for p in range(target.shape[1])]
        for b in range(len(ids)):
            for p in range(target.shape[1]):
                if (start + b) * n_targets + p in sample:
                    ranked += all_heads(b, p)
                if len(cases) < cfg.succession_cases:
                    y = decode(target[b, p])
                    prev = [decode(t) for t in ids[b, max(0, p + 1 - cfg.lookback) : p + 1]]
                    if any(ordinals.relation(a, y) == "succession" for a in prev):
                        winner = int(all_heads(b, p).argmax())
                        cases.append({"context": start + b, "position": p, "target": y, "winner": head_name(*divmod(winner, H))})

    mean_effect = (ranked / max(1, len(sample))).view(L, H)
    ranking = sorted(((head_name(l, h), float(mean_effect[l, h])) for l in range(L) for h in range(H)), key=lambda r: -r[1])
    wins: dict[str, int] = {}
    for case in cases:
        wins[case["winner"]] = wins.get(case["winner"], 0) + 1
    wins = dict(sorted(wins.items(), key=lambda kv: -kv[1]))
    results = []
    for head in heads:
        top = _top_positions(positions[head], windows, cfg, ordinals, decode)
        shares = {c: (sum(r["category"] == c for r in top) / len(top) if top else 0.0) for c in CATEGORIES}
        mean_gain = sum(r[0] for r in positions[head]) / max(1, len(positions[head]))
        results.append(WildResult(head_name(*head), mean_gain, top, shares, ranking, wins, len(cases), cases))
    return results


def _top_positions(rows: list, windows: Tensor, cfg: WildConfig, ordinals: Ordinals, decode) -> list[dict]:
    top = []
    for gain, ctx, p, weights in sorted(rows, key=lambda r: -r[0])[: cfg.top_positions]:
        if gain <= 0:
            break
        k = weights[: p + 1].topk(min(cfg.attend_top, p + 1))
        row = windows[ctx]
        attended = [decode(row[int(i)]) for i in k.indices]
        target = decode(row[p + 1])
        top.append({"context": ctx, "position": p, "token": decode(row[p]), "target": target, "delta_loss": gain,
                    "attended": attended, "attention": k.values.tolist(), "category": classify(target, attended, ordinals)})
    return top
