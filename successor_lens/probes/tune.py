"""`tune`: an automated search for a local edit that moves in-context succession, confirmed on a
held-out split it never saw (an A/B test against the unedited model).

Candidates come from the run's evidence (`Evidence`): the top heads by in-context DLA and by OV
succession score, and the mined mod-10 features at the analysed head's input. For each head: zero
and mean ablation, and its scale factor searched by golden-section over `SCALE_RANGE`; for each
feature class: one probe at half the residual norm, then the two best classes' signed scale searched
by golden-section over [-norm, +norm]; then greedy pairs: the best single edit with each of the next
best singles on another component, the second's parameter searched again with the first fixed.

Objective (search split only): the goal's direction times the change in the answer's mean log-prob
(continuous, where accuracy is a step function of the scale), less `PENALTY` times any excess of the
KL or corpus-loss rise over their budgets. The recommended edit is the feasible one (within both
budgets on the search split) with the largest target gain (succession accuracy in the goal's
direction), then the largest objective. It is then measured once on the held-out split.

Null: the same search over as many random heads (drawn by the seed from the heads that are not in
the evidence) and random unit directions (the features' own norm) at the same head; its chosen
edit's held-out gain is the null gain. Every evaluation is a content-keyed record (model weights,
split contents, edit), so a killed search resumes from the candidates it evaluated.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformer_lens import HookedTransformer
from transformer_lens.utilities import get_act_name

from successor_lens.errors import ConfigError
from successor_lens.io import digest, read_json, write_json
from successor_lens.nulls import paired_ab
from successor_lens.probes.edits import Edit, EditSet
from successor_lens.probes.head_id import head_name
from successor_lens.probes.tune_config import PAIRS, PENALTY, SCALE_RANGE, SIGNIFICANCE, TuneConfig
from successor_lens.probes.tune_data import Baseline, SplitData, evaluate, kpis


@dataclass
class Evidence:
    """What the run found: the heads to search and the analysed head with its feature directions."""

    heads: list[tuple[int, int]]
    analysed: tuple[int, int]
    directions: dict[int, torch.Tensor] = field(default_factory=dict)
    random_directions: bool = False
    """The null's: its `directions` are random, named by the class whose norm they copy."""

    def null(self, model: HookedTransformer, seed: int) -> Evidence:
        """As many random heads from outside the evidence, and random unit directions per class."""
        others = [(l, h) for l in range(model.cfg.n_layers) for h in range(model.cfg.n_heads) if (l, h) not in self.heads]
        heads = sorted(random.Random(f"{seed}:null-heads").sample(others, min(len(self.heads), len(others))))
        g = torch.Generator().manual_seed(seed)
        dirs = {c: (v := torch.randn(model.cfg.d_model, generator=g)) / v.norm() * d.norm() for c, d in sorted(self.directions.items())}
        return Evidence(heads, self.analysed, dirs, random_directions=True)


def spec_of(edits: list[dict]) -> dict:
    return {"edits": edits}


def describe(edits: list[dict], feature: str = "mod-10 feature") -> str:
    def one(e: dict) -> str:
        where = head_name(e["layer"], e["head"])
        if e["kind"] == "scale_head":
            return f"scale {where} by {e['factor']:.3g}"
        if e["kind"] == "ablate_head":
            return f"{e.get('mode', 'zero')}-ablate {where}"
        return f"add {e['scale']:.3g} x {feature} {e['feature']} at {where}'s input"
    return " + ".join(one(e) for e in edits) or "no edit"


class Search:
    """Evaluations of edits on one split, each remembered as a content-keyed record in `records`."""

    def __init__(self, model: HookedTransformer, data: SplitData, evidence: Evidence, cfg: TuneConfig, records: Path | None,
                 items: torch.Tensor | None, key: dict, log: Callable[[str], None] = print, label: str = "search",
                 baseline_of: Search | None = None):
        self.model, self.data, self.evidence, self.cfg, self.records, self.items, self.log = model, data, evidence, cfg, records, items, log
        self.key = digest({**key, "split": data.key(), "directions": {c: d.tolist() for c, d in evidence.directions.items()}})
        self.label = label
        self.base: Baseline
        self.base_units: dict[str, list[float]]
        if baseline_of is not None and baseline_of.data is data:  # the unedited model on the same split: measured once
            self.base, self.base_units = baseline_of.base, baseline_of.base_units
        else:
            self.base_units = self._units([], fill=True)
        self.evaluated: list[dict] = []
        self.fresh = 0

    def _units(self, edits: list[dict], fill: bool = False) -> dict[str, list[float]]:
        path = self.records / f"{digest({'data': self.key, 'edits': edits})}.json" if self.records else None
        if fill:
            self.base = Baseline()
            return evaluate(self.model, self.data, None, self.base)
        if path is not None and path.is_file():
            units = self._recorded(path)
            if units is not None:
                return units
            self.log(f"  note: {path.name} is not a whole tune record of this split (edited, or of another version): measured again")
        edit_set = EditSet(self.model, [Edit(**e) for e in edits], self.evidence.directions, self.items)
        edit_set.mean_z = self.base.mean_z  # the unedited model's, over the split's first windows
        units = evaluate(self.model, self.data, edit_set, self.base)
        self.fresh += 1
        if path is not None:
            write_json(path, {"edits": edits, "units": units})
        return units

    def _recorded(self, path: Path) -> dict[str, list[float]] | None:
        """A remembered evaluation, if it has this split's shape: the baseline's units, each a list of
        as many finite numbers (None otherwise: the cache is rebuilt, as docs/commands.md says)."""
        try:
            units = read_json(path, "tune record", dict, ConfigError).get("units")
        except ConfigError:
            return None
        if not isinstance(units, dict) or set(units) != set(self.base_units):
            return None
        for name, values in units.items():
            if not (isinstance(values, list) and len(values) == len(self.base_units[name])
                    and all(type(v) in (int, float) and math.isfinite(v) for v in values)):
                return None
        return units

    def score(self, edits: list[dict]) -> dict:
        """Evaluate `edits` (remembered), with its KPIs, objective and feasibility on this split."""
        for done in self.evaluated:
            if done["edits"] == edits:
                return done
        table = kpis(self._units(edits), self.base_units, self.cfg.sign, self.cfg.seed)
        kl, rise = table["kl"]["after"], table["corpus_loss"]["delta"]
        feasible = kl <= self.cfg.max_kl and rise <= self.cfg.max_loss_increase
        objective = self.cfg.sign * table["answer_logprob"]["delta"] - PENALTY * (max(0.0, kl - self.cfg.max_kl) + max(0.0, rise - self.cfg.max_loss_increase))
        record = {"edits": edits, "description": describe(edits, "random direction" if self.evidence.random_directions else "mod-10 feature"), "kpis": table, "objective": objective, "feasible": feasible,
                  "gain": table["gain"]["delta"]}
        self.evaluated.append(record)
        self.log(f"  [{self.label} {len(self.evaluated)}] {record['description']}: gain {record['gain']:+.3f}, KL {kl:.3f}, "
                 f"loss {rise:+.3f}{'' if feasible else ' (over budget)'}")
        return record


def golden(f: Callable[[float], float], lo: float, hi: float, n: int) -> float:
    """Golden-section search for the maximum of f on [lo, hi] with n evaluations; the best point evaluated."""
    r = (math.sqrt(5) - 1) / 2
    a, b = lo, hi
    c, d = b - r * (b - a), a + r * (b - a)
    fc, fd = f(c), f(d)
    seen = {c: fc, d: fd}
    for _ in range(max(0, n - 2)):
        if fc >= fd:
            b, d, fd = d, c, fc
            c = b - r * (b - a)
            fc = seen[c] = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + r * (b - a)
            fd = seen[d] = f(d)
    return max(seen, key=lambda x: seen[x])


def _scale_edit(layer: int, head: int) -> Callable[[float], dict]:
    return lambda v: {"kind": "scale_head", "layer": layer, "head": head, "factor": round(v, 4)}


def _rank(records: list[dict]) -> list[dict]:
    return sorted(records, key=lambda r: (not r["feasible"], -r["gain"], -r["objective"]))


def resid_norm(model: HookedTransformer, windows: torch.Tensor, layer: int) -> float:
    """Median norm of the residual stream entering `layer` over the windows' positions after the
    first (the feature scales' unit; the first position's norm is often an outlier many times the rest)."""
    name = get_act_name("resid_pre", layer)
    _, cache = model.run_with_cache(windows[:4].to(model.W_E.device), names_filter=lambda n: n == name)
    return float(cache[name][:, 1:].norm(dim=-1).median())


@torch.no_grad()
def search(s: Search) -> dict | None:
    """Run the search on `s`'s split; the recommended record (None: no feasible edit gains)."""
    cfg, ev = s.cfg, s.evidence
    singles: list[tuple[str, dict]] = []  # (component, best record of that family)

    def scale_of(edit: Callable[[float], dict], prefix: list[dict] | None = None, lo: float = SCALE_RANGE[0], hi: float = SCALE_RANGE[1]) -> dict:
        x = golden(lambda v: s.score([*(prefix or []), edit(v)])["objective"], lo, hi, cfg.budget)
        return s.score([*(prefix or []), edit(x)])

    head_edit: dict[str, Callable[[float], dict]] = {}
    norm = resid_norm(s.model, s.data.windows, ev.analysed[0]) if ev.directions else 1.0
    for layer, head in ev.heads:
        name = head_name(layer, head)
        head_edit[name] = _scale_edit(layer, head)
        for mode in ("zero", "mean"):
            singles.append((name, s.score([{"kind": "ablate_head", "layer": layer, "head": head, "mode": mode}])))
        singles.append((name, scale_of(head_edit[name])))
    if ev.directions:
        layer, head = ev.analysed

        def feature_edit(c: int) -> Callable[[float], dict]:
            return lambda v: {"kind": "add_feature", "layer": layer, "head": head, "feature": c, "scale": round(v, 4), "positions": "all"}
        probes = sorted(ev.directions, key=lambda c: -s.score([feature_edit(c)(norm / 2)])["objective"])
        for c in probes[:2]:
            singles.append((f"feature {c}", scale_of(feature_edit(c), lo=-norm, hi=norm)))
            head_edit[f"feature {c}"] = feature_edit(c)
    ranked = sorted(singles, key=lambda t: (not t[1]["feasible"], -t[1]["objective"]))
    if ranked:
        first_component, first = ranked[0]
        tried: set[str] = {first_component}
        for component, other in ranked[1:]:
            if len(tried) > PAIRS or component in tried:
                continue
            tried.add(component)
            if other["edits"][0]["kind"] == "ablate_head" or component not in head_edit:
                s.score([*first["edits"], *other["edits"]])
            else:
                lo, hi = (SCALE_RANGE if other["edits"][0]["kind"] == "scale_head" else (-norm, norm))
                scale_of(head_edit[component], first["edits"], lo, hi)
    best = [r for r in _rank(s.evaluated) if r["feasible"] and r["gain"] > 0 or (r["feasible"] and r["gain"] == 0 and r["objective"] > 0)]
    return best[0] if best else None


def held_out_check(held: Search, held_null: Search, chosen: dict | None, null_chosen: dict | None) -> dict:
    """The chosen edit (on `held`) and the null's (on `held_null`: the same held-out split, the
    null's random directions) measured once on the held-out split, and the chosen's target gain over
    the null's as a paired A/B on the held-out prompts (no edit counts as the unedited model)."""
    sign = held.cfg.sign
    chosen_h = held.score(chosen["edits"]) if chosen else None
    null_h = held_null.score(null_chosen["edits"]) if null_chosen else None

    def target(s: Search, rec: dict | None) -> list[float]:
        return [sign * x for x in (s._units(rec["edits"]) if rec else s.base_units)["hit"]]
    vs_null = paired_ab(target(held, chosen_h), target(held_null, null_h), held.cfg.seed)
    better = bool(chosen_h and vs_null["excludes_zero"] and (vs_null["delta"] or 0) > 0 and vs_null["p"] is not None and vs_null["p"] < SIGNIFICANCE)
    return {"chosen": chosen_h, "null": null_h, "vs_null": vs_null, "better_than_null": better}


def tune(model: HookedTransformer, search_data: SplitData, held_data: SplitData, evidence: Evidence, cfg: TuneConfig,
         items: torch.Tensor | None, records: Path | None, key: dict, log: Callable[[str], None] = print) -> dict:
    """The whole procedure: search on `search_data`, the null search (`Evidence.null`) on it too,
    then the two chosen edits measured on `held_data`, which nothing before that step reads."""
    found = Search(model, search_data, evidence, cfg, records, items, key, log, "search")
    chosen = search(found)
    null_evidence = evidence.null(model, cfg.seed)
    null = Search(model, search_data, null_evidence, cfg, records, items, key, log, "null", baseline_of=found)
    null_chosen = search(null)
    log("  measuring the chosen edits once on the held-out split")
    held = Search(model, held_data, evidence, cfg, records, items, key, log, "held-out")
    held_null = Search(model, held_data, null_evidence, cfg, records, items, key, log, "held-out null", baseline_of=held)
    check = held_out_check(held, held_null, chosen, null_chosen)
    return {"goal": cfg.goal, "config": cfg.__dict__,
            "evidence": {"heads": [head_name(*h) for h in evidence.heads], "analysed": head_name(*evidence.analysed),
                         "features": sorted(evidence.directions)},
            "null_evidence": {"heads": [head_name(*h) for h in null_evidence.heads], "directions": "random, the features' norm"},
            "splits": {"search": _size(search_data), "held_out": _size(held_data)},
            "candidates": found.evaluated, "pareto": pareto(found.evaluated), "chosen": chosen,
            "null_candidates": null.evaluated, "null_chosen": null_chosen, "held_out": check,
            "evaluations": {"new": sum(s.fresh for s in (found, null, held, held_null)),
                            "total": sum(len(s.evaluated) for s in (found, null, held, held_null))}}


def _size(data: SplitData) -> dict:
    return {"prompts": len(data.prompts), "windows": len(data.windows), "side_prompts": len(data.side)}


def pareto(records: list[dict]) -> list[int]:
    """Indexes of the records no other beats on both target gain (higher) and KL (lower)."""
    pts = [(r["gain"], r["kpis"]["kl"]["after"]) for r in records]
    return [i for i, (g, k) in enumerate(pts)
            if not any((g2 >= g and k2 <= k) and (g2 > g or k2 < k) for g2, k2 in pts)]
