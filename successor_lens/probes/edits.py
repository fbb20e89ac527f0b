"""Declarative edits applied through TransformerLens hooks, and their KPIs before and after.

A spec is JSON: `{"edits": [EDIT, ...]}` (optionally `"name"`), each EDIT one of
- `{"kind": "ablate_head", "layer": L, "head": H, "mode": "zero" | "mean"}` (default zero; mean =
  the head's mean z over the first corpus windows of the measurement),
- `{"kind": "scale_head", "layer": L, "head": H, "factor": F}`,
- `{"kind": "add_feature" | "subtract_feature", "layer": L, "head": H, "feature": C, "scale": S,
  "positions": "all" | "items"}`: S times the mod-10 feature direction f_C (unit norm, from
  `features.safetensors`) added to (or taken from) the residual stream *as it enters that head's
  values only*: the head's value input becomes ln1(x + S f_C) at the chosen positions (every
  position, or those whose token is a succession item), its attention pattern is left as it was,
  and no other head or later layer sees the change except through this head's output. Exact for
  grouped-query heads too (the edit is applied to z, not to the shared value vectors).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformer_lens import HookedTransformer

from successor_lens.probes.incontext import Prompt, by_length

KINDS = ("ablate_head", "scale_head", "add_feature", "subtract_feature")


class EditSpecError(ValueError):
    pass


@dataclass
class Edit:
    kind: str
    layer: int
    head: int
    mode: str = "zero"
    factor: float = 1.0
    feature: int | None = None
    scale: float = 0.0
    positions: str = "all"


def parse_spec(spec: dict, model: HookedTransformer, source: str = "spec") -> list[Edit]:
    if not isinstance(spec, dict) or not isinstance(spec.get("edits"), list) or not spec["edits"]:
        raise EditSpecError(f'{source}: expected {{"edits": [...]}} with at least one edit, e.g. {{"edits": [{{"kind": "ablate_head", "layer": 0, "head": 0}}]}}')
    edits = []
    for n, raw in enumerate(spec["edits"]):
        where = f"{source}: edit {n}"
        if not isinstance(raw, dict) or raw.get("kind") not in KINDS:
            raise EditSpecError(f"{where}: kind must be one of {', '.join(KINDS)}")
        unknown = set(raw) - {"kind", "layer", "head", "mode", "factor", "feature", "scale", "positions"}
        if unknown:
            raise EditSpecError(f"{where}: unknown field {sorted(unknown)[0]!r}: see the spec format in `successor-lens edit --help`")
        try:
            edit = Edit(**raw)
        except TypeError:
            raise EditSpecError(f"{where}: needs integer layer and head") from None
        if not (isinstance(edit.layer, int) and 0 <= edit.layer < model.cfg.n_layers and isinstance(edit.head, int) and 0 <= edit.head < model.cfg.n_heads):
            raise EditSpecError(f"{where}: head L{edit.layer}H{edit.head} does not exist ({model.cfg.n_layers} layers x {model.cfg.n_heads} heads)")
        if edit.mode not in ("zero", "mean") or edit.positions not in ("all", "items"):
            raise EditSpecError(f"{where}: mode must be zero or mean, positions all or items")
        if edit.kind.endswith("feature") and not (isinstance(edit.feature, int) and 0 <= edit.feature <= 9):
            raise EditSpecError(f"{where}: {edit.kind} needs a feature class 0..9")
        edits.append(edit)
    return edits


def load_spec(path: str | os.PathLike, model: HookedTransformer) -> tuple[str, list[Edit]]:
    path = Path(path)
    try:
        spec = json.loads(path.read_text())
    except FileNotFoundError:
        raise EditSpecError(f"{path}: no such spec file: write one such as {{\"edits\": [{{\"kind\": \"ablate_head\", \"layer\": 0, \"head\": 0}}]}}") from None
    except json.JSONDecodeError as err:
        raise EditSpecError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
    return str(spec.get("name") or path.stem) if isinstance(spec, dict) else path.stem, parse_spec(spec, model, str(path))


@dataclass
class EditSet:
    """The hooks of a list of edits. `tokens` must hold the batch being run (for positions=items)."""

    model: HookedTransformer
    edits: list[Edit]
    directions: dict[int, torch.Tensor] = field(default_factory=dict)
    item_tokens: torch.Tensor | None = None
    mean_z: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)
    tokens: torch.Tensor | None = None

    def __post_init__(self):
        missing = {e.feature for e in self.edits if e.kind.endswith("feature")} - set(self.directions)
        if missing:
            raise EditSpecError(f"feature class {sorted(missing)[0]} is not in the mined features: run `successor-lens mine` (or run) first, or pick another class")

    @torch.no_grad()
    def prepare(self, windows: torch.Tensor) -> None:
        """Mean z of the heads ablated with mode=mean, over `windows`."""
        wanted = {(e.layer, e.head) for e in self.edits if e.kind == "ablate_head" and e.mode == "mean"}
        names = {f"blocks.{l}.attn.hook_z" for l, _ in wanted}
        if wanted:
            _, cache = self.model.run_with_cache(windows.to(self.model.W_E.device), names_filter=lambda n: n in names)
            self.mean_z = {(l, h): cache[f"blocks.{l}.attn.hook_z"][:, :, h].flatten(0, 1).mean(0) for l, h in wanted}

    def hooks(self) -> list[tuple[str, object]]:
        out = []
        for e in self.edits:
            if e.kind in ("ablate_head", "scale_head"):
                out.append((f"blocks.{e.layer}.attn.hook_z", self._head_hook(e)))
            else:
                store: dict = {}
                out += [(f"blocks.{e.layer}.hook_resid_pre", _keep(store, "x")),
                        (f"blocks.{e.layer}.attn.hook_pattern", _keep(store, "pattern")),
                        (f"blocks.{e.layer}.attn.hook_z", self._feature_hook(e, store))]
        return out

    def _head_hook(self, e: Edit):
        def hook(z, hook):
            z = z.clone()
            if e.kind == "scale_head":
                z[:, :, e.head] = z[:, :, e.head] * e.factor
            elif e.mode == "mean":
                z[:, :, e.head] = self.mean_z[(e.layer, e.head)]
            else:
                z[:, :, e.head] = 0.0
            return z
        return hook

    def _feature_hook(self, e: Edit, store: dict):
        sign = 1.0 if e.kind == "add_feature" else -1.0
        block = self.model.blocks[e.layer]

        def hook(z, hook):
            x = store["x"]
            f = self.directions[e.feature].to(x.device, x.dtype)
            mask = torch.ones(x.shape[:2], device=x.device, dtype=x.dtype)
            if e.positions == "items" and self.tokens is not None and self.item_tokens is not None:
                mask = torch.isin(self.tokens.to(x.device), self.item_tokens.to(x.device)).to(x.dtype)
            shifted = x + sign * e.scale * mask[..., None] * f
            W_V = block.attn.W_V[e.head]
            dv = (block.ln1(shifted) - block.ln1(x)) @ W_V  # [B, K, E]
            z = z.clone()
            z[:, :, e.head] = z[:, :, e.head] + torch.einsum("bqk,bke->bqe", store["pattern"][:, e.head], dv)
            return z
        return hook


def _keep(store: dict, key: str):
    def hook(act, hook):
        store[key] = act
    return hook


# --- KPIs ---------------------------------------------------------------------------------------


@dataclass
class Measures:
    succession_accuracy: float
    in_task_accuracy: float
    succession_loss: float
    corpus_loss: float
    top1: torch.Tensor


@torch.no_grad()
def measure(model: HookedTransformer, prompts: list[Prompt], windows: torch.Tensor, edits: EditSet | None = None, batch: int = 8) -> Measures:
    hooks = edits.hooks() if edits else []
    hits, in_task, losses, corpus, top1 = [], [], [], [], []
    with model.hooks(fwd_hooks=hooks):
        for group, ids in by_length(model, prompts):
            if edits:
                edits.tokens = ids
            logp = model(ids)[:, -1].log_softmax(-1)
            answers = torch.tensor([p.answer for p in group], device=logp.device)
            hits += (logp.argmax(-1) == answers).float().tolist()
            in_task += [float(p.candidates[int(logp[n, p.candidates].argmax())] == p.answer) for n, p in enumerate(group)]
            losses += (-logp.gather(-1, answers[:, None])[:, 0]).tolist()
        for start in range(0, len(windows), batch):
            ids = windows[start : start + batch].to(model.W_E.device)
            if edits:
                edits.tokens = ids
            logits = model(ids)[:, :-1]
            corpus.append(torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten(), reduction="none").cpu())
            top1.append(logits.argmax(-1).cpu())
    mean = lambda v: sum(v) / len(v) if v else float("nan")  # noqa: E731
    return Measures(mean(hits), mean(in_task), mean(losses), float(torch.cat(corpus).mean()), torch.cat(top1))


def kpi_table(before: Measures, after: Measures) -> list[dict]:
    changed = int((before.top1 != after.top1).sum())
    rows = [("succession accuracy (task prompts, top-1 of vocabulary)", before.succession_accuracy, after.succession_accuracy),
            ("succession accuracy (task prompts, top-1 among the task's items)", before.in_task_accuracy, after.in_task_accuracy),
            ("succession loss (task prompts, nats)", before.succession_loss, after.succession_loss),
            ("corpus next-token loss (nats)", before.corpus_loss, after.corpus_loss),
            ("corpus positions whose top-1 changes", 0.0, float(changed))]
    table = [{"metric": m, "before": b, "after": a, "delta": a - b} for m, b, a in rows]
    table.append({"metric": "share of corpus positions changed", "before": 0.0, "after": changed / before.top1.numel(),
                  "delta": changed / before.top1.numel()})
    return table
