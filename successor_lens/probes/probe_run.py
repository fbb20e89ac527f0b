"""Probes on a real model: leave-one-task-out probes, probe/feature cosine, arithmetic, offset profile,
each beside its null (docs/method.md, "Nulls")."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from transformer_lens import HookedTransformer

from successor_lens.display import html_card
from successor_lens.features.mine_run import item_acts, item_table
from successor_lens.nulls import Verdict, missing, rate_vs_rate, value_vs_draws
from successor_lens.paper import ARITHMETIC, FIGURES
from successor_lens.probes.arithmetic import ArithmeticResult, offset_profile, random_directions, vector_arithmetic
from successor_lens.probes.circuit import OVCircuit
from successor_lens.probes.head_choice import analysis_head
from successor_lens.probes.head_id import check_head, parse_head_name
from successor_lens.probes.linear import CosineReport, ProbeResult, class_mean_directions, leave_one_task_out, probe_feature_cosine
from successor_lens.progress import bar, honours_progress
from successor_lens.tasks import Task


def _verdict_line(name: str, v: Verdict) -> str:
    value = "n/a" if v.value is None else f"{v.value:.3f}"
    null = "n/a" if v.null is None else f"{v.null:.3f}"
    return f"{name} {value} vs null {null}" + ("" if v.above else " (NOT above its null)")


OVERSHOOT_MIN_EFFECT = 0.05
"""The smallest excess of the failures' overshoot over its null's mean that counts as a bias."""


@dataclass
class ProbeRun:
    probe: ProbeResult
    probe_embed: ProbeResult
    cosine: CosineReport
    """The probe fit on non-number items against the SAE features: the headline cosine."""
    arithmetic: dict[str, ArithmeticResult]
    """"SAE features", and the controls "random directions" and "probe directions", on the cases
    whose input's class is not written in its last token; "... (all cases)" and "... (split
    numbers)" for every case and for the split numbers alone (docs/method.md, "Nulls")."""
    profile: dict[str, dict[int, float]]
    head: str
    cosine_all: CosineReport | None = None
    """The probe fit on every item (numbers included) against the SAE features."""

    def __repr__(self) -> str:
        return f"ProbeRun(through {self.head}: " + "; ".join(_verdict_line(k, v) for k, v in self.verdicts().items()) + ")"

    def _repr_html_(self) -> str:
        rows = [[k, v.value, v.null, "yes" if v.above else "NOT above", v.test] for k, v in self.verdicts().items()]
        return html_card(f"Probes and arithmetic through {self.head}", ["figure", "value", "null", "above its null", "test"], rows,
                         [f"paper: {k} {FIGURES[k]}" for k in ("probe_accuracy", "probe_feature_cosine") if k in FIGURES])

    def verdicts(self) -> dict[str, Verdict]:
        feats, rand = self.arithmetic["SAE features"], self.arithmetic["random directions"]
        arith = rate_vs_rate(feats.hits, feats.n, rand.hits, rand.n) if feats.n and rand.n else missing(feats.reason or rand.reason or "no cases")
        over = (missing("the arithmetic is not above its null, so its failures are no evidence") if not arith.above
                else value_vs_draws(feats.overshoot, feats.overshoot_null or [], "overshoot with the predictions permuted among "
                                    "failures of the same task", OVERSHOOT_MIN_EFFECT))
        return {"probe_accuracy": self.probe.verdict(), "probe_feature_cosine": self.cosine.verdict, "arithmetic": arith, "overshoot": over}

    def to_json(self) -> dict:
        return {
            "head": self.head,
            "probe_mlp0": self.probe.summary(), "probe_embed": self.probe_embed.summary(),
            "probe_feature_cosine": self.cosine.summary(),
            "probe_feature_cosine_all_items": self.cosine_all.summary() if self.cosine_all else None,
            "arithmetic": {name: r.summary() for name, r in self.arithmetic.items()},
            "arithmetic_examples": self.arithmetic["SAE features"].predictions[:40],
            "offset_profile": self.profile,
            "verdicts": {k: v.to_json() for k, v in self.verdicts().items()},
            "paper": {**FIGURES, "arithmetic_by_task": ARITHMETIC},
        }


@honours_progress
def probe_model(
    model: HookedTransformer, directions: dict[int, torch.Tensor], head: str | None = None, seed: int = 0,
    tasks: list[Task] | None = None, scan_tasks: list[Task] | None = None, run_folder: Path | None = None, progress: bool = True,
) -> ProbeRun:
    """Everything `successor-lens probe` measures, through `head` (default: chosen by `analysis_head`);
    the item activations come from `run_folder`'s activations stage when it cached them. A head
    name the model lacks is one line (`UserError`) before any work."""
    if head is not None:
        head = check_head(head, model)
    steps = bar(total=5, desc="probes", unit="step", leave=False)
    table = item_table(model, tasks)
    mlp0 = item_acts(model, table, "mlp0", run_folder, tasks)
    embed = item_acts(model, table, "embed", run_folder, tasks)
    steps.update()
    probe = leave_one_task_out(mlp0, table, seed)
    probe_embed = leave_one_task_out(embed, table, seed)
    steps.update()
    means = class_mean_directions(mlp0, table)
    cosine = probe_feature_cosine(probe, directions, seed, means, non_numbers=True)
    cosine_all = probe_feature_cosine(probe, directions, seed, means)
    steps.update()

    head = head or analysis_head(model, scan_tasks, seed=seed).head
    layer, index = parse_head_name(head)
    circuit = OVCircuit.from_model(model, layer, index, table.tokens)
    probe_dirs = {c: probe.directions[i] for i, c in enumerate(probe.classes) if c in directions}
    rand = random_directions(directions, seed) if directions else {}
    arith = {
        "SAE features": vector_arithmetic(circuit, mlp0, table, directions, seed, split=False, with_null=True),
        "random directions": vector_arithmetic(circuit, mlp0, table, rand, seed, split=False),
        "probe directions": vector_arithmetic(circuit, mlp0, table, probe_dirs, seed, split=False),
        "SAE features (all cases)": vector_arithmetic(circuit, mlp0, table, directions, seed),
        "random directions (all cases)": vector_arithmetic(circuit, mlp0, table, rand, seed),
    }
    if table.split.any():
        arith["SAE features (split numbers)"] = vector_arithmetic(circuit, mlp0, table, directions, seed, split=True)
        arith["random directions (split numbers)"] = vector_arithmetic(circuit, mlp0, table, rand, seed, split=True)
    steps.update()
    profile = offset_profile(circuit, mlp0, table)
    steps.update()
    steps.close()
    return ProbeRun(probe, probe_embed, cosine, arith, profile, circuit.name, cosine_all)
