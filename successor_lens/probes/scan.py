"""Successor-head scan: the succession score of every head, per task and overall.

Score of a head = fraction of (task, token) pairs whose top-1 logit, among that task's own
tokens, is the successor (docs/method.md section 2). The copying score (top-1 is the token itself)
is computed from the same logits as a control for the OV path.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from successor_lens.display import html_card
from successor_lens.errors import ConfigError, UserError
from successor_lens.models.lean import LeanCheckpoint
from successor_lens.paper import SUCCESSOR_BAR
from successor_lens.probes.circuit import effective_embeddings, head_inputs, ov_logits
from successor_lens.probes.head_id import head_name, parse_head_name
from successor_lens.probes.probe_configs import ScanConfig
from successor_lens.progress import bar as progress_bar
from successor_lens.tasks import TokenSet, build_token_set, same_task


@dataclass
class SuccessionScores:
    """Result of a scan. Tensors are [layer, head]."""

    scores: Float[Tensor, "layers heads"]
    """Succession score over all (task, token) pairs of the non-held-out tasks."""
    copying: Float[Tensor, "layers heads"]
    """Copying score (top-1 is the token itself) over the same pairs: the OV-path control."""
    per_task: dict[str, Tensor]
    """Task variant -> succession score [layer, head]; held-out tasks included here."""
    chance: dict[str, float]
    """Task variant -> chance level (1 / number of the task's tokens)."""
    n_pairs: dict[str, int]
    config: ScanConfig
    dropped: list[dict] = field(default_factory=list)
    held_out: list[str] = field(default_factory=list)
    offsets: dict[str, dict[str, float]] = field(default_factory=dict)
    """Task variant -> the best head's top-1 rate at each offset ("-2", "-1", "0" copying, "+1"
    succession, "+2"): its succession rate beside the offset null (a head that ranks by index, or
    copies, scores at its neighbours too)."""

    def top_heads(self, k: int = 10) -> list[tuple[str, float, float]]:
        """The k best heads by succession score: (name, score, copying score)."""
        n_heads = self.scores.shape[1]
        order = self.scores.flatten().argsort(descending=True, stable=True)[:k].tolist()  # ties: lower layer first
        return [
            (head_name(i // n_heads, i % n_heads), self.scores.flatten()[i].item(), self.copying.flatten()[i].item())
            for i in order
        ]

    def top(self, n: int = 10) -> list[tuple[str, float, float]]:
        """The n best heads by succession score: (name, score, copying score); `top_heads`."""
        return self.top_heads(n)

    @property
    def best_head(self) -> str:
        """The name of the head with the best succession score ("L3H1")."""
        return self.top_heads(1)[0][0]

    def __len__(self) -> int:
        return self.scores.numel()

    def __iter__(self):
        """Every head as (name, succession, copying), best first."""
        return iter(self.top_heads(len(self)))

    def __getitem__(self, key: int | str) -> tuple[str, float, float]:
        """A head by rank (0 is the best) or by name ("L3H1"): (name, succession, copying)."""
        if isinstance(key, str):
            layer, head = parse_head_name(key)
            n_layers, n_heads = self.scores.shape
            if not (0 <= layer < n_layers and 0 <= head < n_heads):
                raise KeyError(f"{key}: this scan has {n_layers} layers x {n_heads} heads")
            return key, self.scores[layer, head].item(), self.copying[layer, head].item()
        ranked = self.top_heads(len(self))
        return ranked[key]

    def __repr__(self) -> str:
        name, score, copying = self.top_heads(1)[0]
        n_layers, n_heads = self.scores.shape
        bar = "passes" if score > SUCCESSOR_BAR else "does NOT pass"
        return (f"SuccessionScores(best {name}: succession {score:.3f}, copying {copying:.3f}; {bar} the paper's bar {SUCCESSOR_BAR}; "
                f"chance {min(self.chance.values(), default=float('nan')):.3f}-{max(self.chance.values(), default=float('nan')):.3f}; "
                f"{n_layers} layers x {n_heads} heads)")

    def _repr_html_(self) -> str:
        name, score, _ = self.top_heads(1)[0]
        note = (f"the paper's successor-head bar is > {SUCCESSOR_BAR}: {name} " + ("passes it" if score > SUCCESSOR_BAR else "does NOT pass it")
                + f"; chance per task {min(self.chance.values(), default=float('nan')):.3f}-{max(self.chance.values(), default=float('nan')):.3f}")
        return html_card("Succession scan (OV circuit)", ["head", "succession", "copying (control)"], self.top_heads(5), [note])

    def best(self) -> tuple[int, int]:
        """The top head (the first of `top_heads`)."""
        i = int(self.scores.flatten().argsort(descending=True, stable=True)[0])
        return divmod(i, self.scores.shape[1])

    def to_json(self) -> dict:
        n_layers, n_heads = self.scores.shape
        layer, head = self.best()
        return {
            "config": asdict(self.config),
            "successor_bar": SUCCESSOR_BAR,
            "best_head": head_name(layer, head),
            "best_score": self.scores[layer, head].item(),
            "passes_bar": bool(self.scores.max() > SUCCESSOR_BAR),
            "top_heads": [{"head": h, "succession": s, "copying": c} for h, s, c in self.top_heads(10)],
            "heads": {
                head_name(l, h): {
                    "succession": self.scores[l, h].item(),
                    "copying": self.copying[l, h].item(),
                    "per_task": {t: v[l, h].item() for t, v in self.per_task.items()},
                }
                for l in range(n_layers)
                for h in range(n_heads)
            },
            "chance": self.chance,
            "n_pairs": self.n_pairs,
            "copying_best": self.copying.max().item(),
            "readout_validated": readout_validated(self.copying.max().item(), self.scores.max().item()),
            "readout_bar": READOUT_BAR,
            "best_head_offsets": self.offsets,
            "held_out_tasks": self.held_out,
            "dropped_tokens": self.dropped,
        }


READOUT_BAR = 0.5
"""Below this best copying score (and best succession score) the OV readout finds no map at all in
the model: its succession scores say nothing, and the scan says "readout not validated" (docs/method.md)."""


def readout_validated(copying_best: float, succession_best: float) -> bool:
    """The readout works when it finds some head's map: copying, or succession itself (a planted
    successor head with no copying head validates its own readout)."""
    return copying_best >= READOUT_BAR or succession_best >= READOUT_BAR
OFFSETS = (-2, -1, 0, 1, 2)


@torch.no_grad()
def top_in_task(model: HookedTransformer, token_set: TokenSet, config: ScanConfig | None = None) -> Int[Tensor, "layers heads n"]:
    """For every head and item: the row of the item of the same task with the highest OV logit."""
    config = config or ScanConfig()
    tokens = token_set.tokens.to(model.W_E.device)
    x = effective_embeddings(model, tokens, config.embedding, config.mlp0_norm, config.post_norms)
    logits_LHNM = ov_logits(model, head_inputs(model, x, config.input_norm), tokens, config.post_norms)
    same_task_NM = same_task([item.task for item in token_set.items]).to(logits_LHNM.device)  # each item competes only with its own task's
    return logits_LHNM.masked_fill(~same_task_NM, float("-inf")).argmax(-1)


@torch.no_grad()
def chance_null(heads_json: Mapping[str, Any]) -> float | None:
    """The scan score's null: the rate a head that picks a random in-task token scores (each scored
    task's chance, weighted by its pairs; held-out tasks are not in the score), from
    `SuccessionScores.to_json()`. The one null of the score: the summary's verdict, the heatmaps and
    the atlas all read it here."""
    held_out = set(heads_json.get("held_out_tasks") or ())
    chance, pairs = heads_json.get("chance") or {}, heads_json.get("n_pairs") or {}
    scored = {t: c for t, c in chance.items() if t not in held_out}
    total = sum(pairs.get(t, 0) for t in scored)
    return sum(c * pairs.get(t, 0) for t, c in scored.items()) / total if total else None


LEAN_EMBEDDINGS = ("mlp0", "embed+mlp0")
"""The effective embeddings the lean scan computes exactly from layer 0 alone ("residual" needs every
layer before the one read, so the whole model)."""


def check_lean_embedding(embedding: str) -> None:
    """One line when the lean path cannot compute `embedding` (checked before any work)."""
    if embedding not in LEAN_EMBEDDINGS:
        raise ConfigError(f"--embedding {embedding} reads every layer before the head, so the whole model: --lean computes "
                          f"{' and '.join(LEAN_EMBEDDINGS)}; leave --lean out for it")


def scan_lean(lean: LeanCheckpoint, token_set: TokenSet, config: ScanConfig | None = None) -> SuccessionScores:
    """`scan_heads` of a checkpoint read one layer at a time (`lean_top_in_task`), with a bar over the layers."""
    with progress_bar(total=lean.cfg.n_layers, desc="lean scan", unit="layer") as bar:
        top = lean_top_in_task(lean, token_set, config, lambda _: bar.update())
    return scan_heads(None, token_set, config, top_LHN=top)


@torch.no_grad()
def lean_top_in_task(lean: LeanCheckpoint, token_set: TokenSet, config: ScanConfig | None = None,
                     progress: Callable[[int], None] = lambda layer: None) -> Int[Tensor, "layers heads n"]:
    """`top_in_task` from a checkpoint read one layer at a time (`models.lean`): the effective
    embeddings from layer 0, then each layer's heads on them, the layer dropped before the next."""
    config = config or ScanConfig()
    check_lean_embedding(config.embedding)
    tokens = token_set.tokens
    first: HookedTransformer | None = lean.layer(0)
    assert first is not None
    x = effective_embeddings(first, tokens, config.embedding, config.mlp0_norm, config.post_norms)
    same_task_NM = same_task([item.task for item in token_set.items])
    out = []
    for layer in range(lean.cfg.n_layers):
        block = first if first is not None else lean.layer(layer)
        logits_HNM = ov_logits(block, head_inputs(block, x, config.input_norm), tokens, config.post_norms)[0]
        out.append(logits_HNM.float().masked_fill(~same_task_NM, float("-inf")).argmax(-1))
        del block
        first = None
        progress(layer)
    return torch.stack(out)


def scan_heads(model: HookedTransformer | None, token_set: TokenSet | None = None, config: ScanConfig | None = None,
               top_LHN: Tensor | None = None) -> SuccessionScores:
    """Score every head of every layer in one batched pass (`token_set`: the standard tasks' items
    in the model's tokenizer unless given, `build_token_set`). `top_LHN`: the lean scan's
    `lean_top_in_task`, for a checkpoint not loaded whole (`model` None)."""
    config = config or ScanConfig()
    if token_set is None:
        assert model is not None, "a lean scan passes its token set"
        token_set = build_token_set(model.tokenizer)
    pairs = token_set.successor_pairs()
    if not pairs:
        raise UserError("no (token, successor) pairs: every task lost its items to tokenization")
    if top_LHN is None:
        assert model is not None
        top_LHN = top_in_task(model, token_set, config)
    device = top_LHN.device
    task_of = [item.task for item in token_set.items]
    names = token_set.task_names
    task_id = torch.tensor([names.index(t) for t in task_of], device=device)

    rows = torch.tensor([p for p, _ in pairs], device=device)
    succ = torch.tensor([s for _, s in pairs], device=device)
    hit_LHP = (top_LHN[:, :, rows] == succ).float()
    copy_LHP = (top_LHN[:, :, rows] == rows).float()
    pair_task = task_id[rows]

    held = [t for t in names if token_set.tasks[t].held_out]
    scored = torch.tensor([names[i] not in held for i in pair_task.tolist()], device=device)
    per_task, chance, n_pairs = {}, {}, {}
    for t, name in enumerate(names):
        mask = pair_task == t
        if mask.any():
            per_task[name] = hit_LHP[:, :, mask].mean(-1).cpu()
            n_pairs[name] = int(mask.sum())
            chance[name] = 1.0 / int((task_id == t).sum())
    scores = hit_LHP[:, :, scored].mean(-1).cpu()
    best = divmod(int(scores.flatten().argsort(descending=True, stable=True)[0]), scores.shape[1])
    top_N = top_LHN[best].cpu()
    hits: dict[str, dict[str, list[float]]] = {}
    for k in OFFSETS:
        for row, target in token_set.offset_pairs(k):
            hits.setdefault(token_set.items[row].task, {}).setdefault(f"{k:+d}" if k else "0", []).append(float(top_N[row] == target))
    offsets = {t: {k: sum(v) / len(v) for k, v in by_k.items()} for t, by_k in hits.items()}
    return SuccessionScores(
        scores=scores,
        copying=copy_LHP[:, :, scored].mean(-1).cpu(),
        per_task=per_task,
        chance=chance,
        n_pairs=n_pairs,
        config=config,
        dropped=[d.__dict__ for d in token_set.dropped],
        held_out=held,
        offsets=offsets,
    )
