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

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformer_lens import HookedTransformer
from transformer_lens.utilities import get_act_name

from successor_lens.errors import ConfigError, check_float, check_int
from successor_lens.io import read_json, safe_component
from successor_lens.probes.incontext import Prompt, by_length, logits_from
from successor_lens.progress import bar

KINDS = ("ablate_head", "scale_head", "add_feature", "subtract_feature")


class EditSpecError(ConfigError):
    pass


MAX_FACTOR = 1e4
"""Bound on |factor| and |scale|: beyond it the edited activations overflow fp16 and swamp every other signal."""
_FIELDS = {"ablate_head": {"mode"}, "scale_head": {"factor"}, "add_feature": {"feature", "scale", "positions"},
           "subtract_feature": {"feature", "scale", "positions"}}


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


def parse_spec(spec, shape, source: str = "spec") -> list[Edit]:
    """The edits of a spec, every field checked (types, ranges against the model's shape `shape`:
    a `ModelShape` or a loaded model, finite numbers) before any work."""
    cfg = getattr(shape, "cfg", shape)
    if not isinstance(spec, dict) or not isinstance(spec.get("edits"), list) or not spec["edits"]:
        raise EditSpecError(f'{source}: expected {{"edits": [...]}} with at least one edit, e.g. {{"edits": [{{"kind": "ablate_head", "layer": 0, "head": 0}}]}}')
    unknown = set(spec) - {"name", "edits", "description"}
    if unknown:
        raise EditSpecError(f"{source}: unknown top-level field {sorted(unknown)[0]!r}: a spec has name, description and edits")
    edits = []
    for n, raw in enumerate(spec["edits"]):
        where = f"{source}: edit {n}"
        if not isinstance(raw, dict) or raw.get("kind") not in KINDS:
            raise EditSpecError(f"{where}: kind must be one of {', '.join(KINDS)}")
        kind = raw["kind"]
        unknown = set(raw) - {"kind", "layer", "head"} - _FIELDS[kind]
        if unknown:
            raise EditSpecError(f"{where}: field {sorted(unknown)[0]!r} does not apply to {kind} (it takes layer, head"
                                f"{''.join(', ' + f for f in sorted(_FIELDS[kind]))}): see `successor-lens edit --help`")
        if "layer" not in raw or "head" not in raw:
            raise EditSpecError(f"{where}: needs integer layer and head")
        fix = f"{cfg.n_layers} layers x {cfg.n_heads} heads"
        try:
            edit = Edit(kind, check_int(f"{where}: layer", raw["layer"], 0, cfg.n_layers - 1, fix),
                        check_int(f"{where}: head", raw["head"], 0, cfg.n_heads - 1, fix))
            if "mode" in raw:
                edit.mode = _choice(f"{where}: mode", raw["mode"], ("zero", "mean"))
            if "positions" in raw:
                edit.positions = _choice(f"{where}: positions", raw["positions"], ("all", "items"))
            if "factor" in raw:
                edit.factor = check_float(f"{where}: factor", raw["factor"], -MAX_FACTOR, MAX_FACTOR)
            if "scale" in raw:
                edit.scale = check_float(f"{where}: scale", raw["scale"], -MAX_FACTOR, MAX_FACTOR)
            if kind.endswith("feature"):
                edit.feature = check_int(f"{where}: feature", raw.get("feature"), 0, 9, f"{kind} needs a feature class 0..9")
        except ConfigError as err:
            raise EditSpecError(str(err)) from None
        edits.append(edit)
    return edits


def _choice(name: str, value, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise EditSpecError(f"{name} is {value!r}: use {' or '.join(allowed)}")
    return value


def check_name(name, source: str = "spec") -> str:
    """An edit's name: its file is edits/NAME.json, so the name is the file name (no two names share one)."""
    return safe_component(name, f"{source}: name", "rename it (it names the file edits/NAME.json)")


MAX_SPEC_BYTES = 1 << 20
"""A spec lists a few edits; a larger file is not one."""


def load_spec(path: str | os.PathLike, shape) -> tuple[str, list[Edit]]:
    """Read and check a spec file: (name, edits). The name is the spec's `name`, else the file's stem."""
    path = Path(path)
    example = '{"edits": [{"kind": "ablate_head", "layer": 0, "head": 0}]}'
    if path.is_dir():
        raise EditSpecError(f"{path} is a folder: pass a JSON spec file such as {example}")
    spec = read_json(path, "spec", dict, EditSpecError, f"pass a JSON spec such as {example}", max_bytes=MAX_SPEC_BYTES)
    edits = parse_spec(spec, shape, str(path))
    if "name" in spec:
        return check_name(spec["name"], str(path)), edits
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", path.stem).strip("._")[:64] or "edit", edits


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
        names = {get_act_name("z", l) for l, _ in wanted}
        if wanted:
            _, cache = self.model.run_with_cache(windows.to(self.model.W_E.device), names_filter=lambda n: n in names)
            self.mean_z = {(l, h): cache[get_act_name("z", l)][:, :, h].flatten(0, 1).mean(0) for l, h in wanted}

    def hooks(self) -> list[tuple[str | Callable[..., Any], Callable[..., Any]]]:
        out: list[tuple[str | Callable[..., Any], Callable[..., Any]]] = []
        for e in self.edits:
            if e.kind in ("ablate_head", "scale_head"):
                out.append((get_act_name("z", e.layer), self._head_hook(e)))
            else:
                store: dict = {}
                out += [(get_act_name("resid_pre", e.layer), _keep(store, "x")),
                        (get_act_name("pattern", e.layer), _keep(store, "pattern")),
                        (get_act_name("z", e.layer), self._feature_hook(e, store))]
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
def measure(model: HookedTransformer, prompts: list[Prompt], windows: torch.Tensor | None, edits: EditSet | None = None, batch: int = 8) -> Measures:
    """The KPIs on the task prompts and the corpus windows (None: prompts only, corpus loss NaN)."""
    windows = windows if windows is not None else torch.zeros(0, 1, dtype=torch.long)
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
    corpus_loss = float(torch.cat(corpus).mean()) if corpus else float("nan")
    return Measures(mean(hits), mean(in_task), mean(losses), corpus_loss, torch.cat(top1) if top1 else torch.zeros(0, dtype=torch.long))


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


ABLATION_NULL_HEADS = 99
"""Other heads whose ablation is the found head's null: all of them when there are at most this
many, else this many drawn by the seed. 99 is the fewest with which the permutation p can reach
`nulls.ALPHA` (1/100); a model with fewer heads gets a verdict that says it cannot."""
COPIES_PER_PASS = 16
"""Ablation variants run as copies of the prompts in one forward pass (memory: copies x prompts)."""


@torch.no_grad()
def ablation_effect(model: HookedTransformer, prompts: list[Prompt], head: str, seed: int = 0) -> dict[str, Any]:
    """In-context succession with `head`'s output zeroed (an `ablate_head` edit, mode zero), against
    the same ablation of other heads (`ABLATION_NULL_HEADS`): a head the behaviour relies on costs
    more than they do, by a permutation test at `nulls.ALPHA`. The figure is the rise of the
    answer's loss (mean -log p over the prompts, nats): continuous, so it does not saturate as
    top-1 accuracy near 1 does; the accuracy (top-1 over the vocabulary) before and after is
    reported beside it. Variants run as copies of the prompts, `COPIES_PER_PASS` to a forward pass,
    in layer order, each pass from the clean residual stream entering its first head's layer, and
    only the last position unembedded (the one read)."""
    import random

    from successor_lens.nulls import value_vs_draws
    from successor_lens.probes.head_id import head_name, parse_head_name

    found = parse_head_name(head)
    others = [(l, k) for l in range(model.cfg.n_layers) for k in range(model.cfg.n_heads) if (l, k) != found]
    if len(others) > ABLATION_NULL_HEADS:
        others = sorted(random.Random(seed).sample(others, ABLATION_NULL_HEADS))
    heads = [found, *others]  # variant 0 is the clean model, variant 1 + i ablates heads[i]
    hits: list[list[float]] = [[] for _ in range(1 + len(heads))]
    losses: list[list[float]] = [[] for _ in range(1 + len(heads))]
    in_layer_order = sorted(range(len(heads)), key=heads.__getitem__)
    chunks = [in_layer_order[s : s + COPIES_PER_PASS] for s in range(0, len(heads), COPIES_PER_PASS)]
    L = model.cfg.n_layers
    starts = {heads[chunk[0]][0] for chunk in chunks}  # each pass starts at its first head's layer (the layers before are clean)
    names = {get_act_name("resid_pre", l) for l in starts} | {get_act_name("resid_post", L - 1)}
    groups = list(by_length(model, prompts))
    passes = bar(total=len(groups) * (1 + len(chunks)), desc="ablations", unit="pass", leave=False)

    def score(v: int, logp: torch.Tensor, answers: torch.Tensor) -> None:
        hits[v] += (logp.argmax(-1) == answers).float().tolist()
        losses[v] += (-logp.gather(-1, answers[:, None])[:, 0]).tolist()

    for group, ids in groups:
        n = len(group)
        answers = torch.tensor([p.answer for p in group], device=ids.device)
        _, cache = model.run_with_cache(ids, names_filter=lambda name: name in names, stop_at_layer=L)
        passes.update()
        score(0, logits_from(model, cache[get_act_name("resid_post", L - 1)], L, last=True)[:, -1].log_softmax(-1), answers)
        for chunk in chunks:
            passes.update()
            start = heads[chunk[0]][0]
            hooks = [(get_act_name("z", l), _zero_per_copy([(c, heads[i][1]) for c, i in enumerate(chunk) if heads[i][0] == l], n))
                     for l in sorted({heads[i][0] for i in chunk})]
            with model.hooks(fwd_hooks=hooks):
                resid = cache[get_act_name("resid_pre", start)].repeat(len(chunk), 1, 1)
                logp = logits_from(model, resid, start, last=True)[:, -1].log_softmax(-1)
            for c, i in enumerate(chunk):
                score(1 + i, logp[c * n : (c + 1) * n], answers)
    passes.close()
    acc = [sum(h) / len(h) for h in hits]
    loss = [sum(x) / len(x) for x in losses]
    rises = {head_name(*t): loss[2 + i] - loss[0] for i, t in enumerate(others)}
    verdict = value_vs_draws(loss[1] - loss[0], list(rises.values()), f"same ablation of {len(rises)} other heads")
    return {"head": head, "mode": "zero", "n_prompts": len(prompts), "figure": "rise of the answer's loss (nats)",
            "clean": {"accuracy": acc[0], "loss": loss[0]}, "ablated": {"accuracy": acc[1], "loss": loss[1]},
            "loss_rise": loss[1] - loss[0], "accuracy_drop": acc[0] - acc[1], "verdict": verdict.to_json(),
            "null_heads": {name: {"loss_rise": r, "accuracy_drop": acc[0] - acc[v + 2]} for v, (name, r) in enumerate(rises.items())}}


def _zero_per_copy(targets: list[tuple[int, int]], n: int):
    """A z hook that zeroes head h in copy v (rows v*n .. (v+1)*n) for each (v, h)."""
    def hook(z, hook):
        z = z.clone()
        for v, h in targets:
            z[v * n : (v + 1) * n, :, h] = 0.0
        return z
    return hook
