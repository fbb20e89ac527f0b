"""Probes on a real model: leave-one-task-out probes, probe/feature cosine, arithmetic, offset profile,
each beside its null (docs/method.md, "Nulls")."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformer_lens import HookedTransformer

from successor_lens.features.pipeline import item_acts, item_table
from successor_lens.nulls import Verdict, missing, rate_vs_chance, rate_vs_rate
from successor_lens.probes.arithmetic import ArithmeticResult, OVCircuit, offset_profile, random_directions, vector_arithmetic
from successor_lens.probes.choice import HeadChoice, choose_head
from successor_lens.probes.heads import parse_head_name, scan_heads
from successor_lens.probes.incontext import InContext, fitting, in_context_dla, succession_prompts
from successor_lens.probes.linear import CosineReport, ProbeResult, class_mean_directions, leave_one_task_out, probe_feature_cosine
from successor_lens.tasks import Task, build_token_set

PAPER = {
    "probe_feature_cosine": 0.71,
    "heldout_probe": "94/102 non-number examples",
    "arithmetic": {"numbers 20-29": 0.89, "months": 0.53, "days": "fails", "letters": "fails"},
}


@dataclass
class ProbeRun:
    probe: ProbeResult
    probe_embed: ProbeResult
    cosine: CosineReport
    arithmetic: dict[str, ArithmeticResult]
    """"SAE features", and the controls "random directions" and "probe directions"."""
    profile: dict[str, dict[int, float]]
    head: str

    def verdicts(self) -> dict[str, Verdict]:
        feats, rand = self.arithmetic["SAE features"], self.arithmetic["random directions"]
        arith = rate_vs_rate(feats.hits, feats.n, rand.hits, rand.n) if feats.n and rand.n else missing(feats.reason or rand.reason or "no cases")
        over = (rate_vs_chance(feats.n_overshoot, feats.n_failures, feats.overshoot_chance)
                if feats.n_failures and feats.overshoot_chance is not None else missing("no failures"))
        return {"probe_accuracy": self.probe.verdict(), "probe_feature_cosine": self.cosine.verdict, "arithmetic": arith, "overshoot": over}

    def to_json(self) -> dict:
        return {
            "head": self.head,
            "probe_mlp0": self.probe.summary(), "probe_embed": self.probe_embed.summary(),
            "probe_feature_cosine": self.cosine.summary(),
            "arithmetic": {name: r.summary() for name, r in self.arithmetic.items()},
            "arithmetic_examples": self.arithmetic["SAE features"].predictions[:40],
            "offset_profile": self.profile,
            "verdicts": {k: v.to_json() for k, v in self.verdicts().items()},
            "paper": PAPER,
        }


@dataclass
class InContextChoice:
    """In-context DLA on the succession prompts (None when no prompt fits the model) and the head it chose."""

    result: InContext | None
    n_prompts: int
    choice: HeadChoice


def incontext_choice(model: HookedTransformer, ov_scores: dict[str, float], scan_tasks: list[Task] | None = None,
                     override: str | None = None) -> InContextChoice:
    """Measure in-context DLA on the prompts that fit the model, then choose the analysis head (`probes/choice.py`)."""
    prompts = fitting(model, succession_prompts(model.tokenizer, incontext_tasks(scan_tasks)))
    result = in_context_dla(model, prompts) if prompts else None
    return InContextChoice(result, len(prompts), choose_head(ov_scores, result.per_head() if result else None, override))


def analysis_head(model: HookedTransformer, scan_tasks: list[Task] | None = None, override: str | None = None) -> HeadChoice:
    """Scan every head, then choose from the OV scores and in-context DLA (for `probe` without a run folder)."""
    scan = scan_heads(model, build_token_set(model.tokenizer, scan_tasks)).to_json()
    return incontext_choice(model, {h: v["succession"] for h, v in scan["heads"].items()}, scan_tasks, override).choice


def incontext_tasks(scan_tasks: list[Task] | None) -> list[Task] | None:
    """The list tasks of the in-context prompts, from the scan's tasks when they were given."""
    from successor_lens.probes.incontext import LIST_TASKS

    return [t for t in scan_tasks if t.name in LIST_TASKS] if scan_tasks else None


def probe_model(
    model: HookedTransformer, directions: dict[int, torch.Tensor], head: str | None = None, seed: int = 0,
    tasks: list[Task] | None = None, scan_tasks: list[Task] | None = None,
) -> ProbeRun:
    """Everything `successor-lens probe` measures, through `head` (default: chosen by `analysis_head`)."""
    table = item_table(model, tasks)
    mlp0 = item_acts(model, table, "mlp0")
    embed = item_acts(model, table, "embed")
    probe = leave_one_task_out(mlp0, table, seed)
    probe_embed = leave_one_task_out(embed, table, seed)
    cosine = probe_feature_cosine(probe, directions, seed, class_mean_directions(mlp0, table))

    head = head or analysis_head(model, scan_tasks).head
    layer, index = parse_head_name(head)
    circuit = OVCircuit.from_model(model, layer, index, table.tokens)
    probe_dirs = {c: probe.directions[i] for i, c in enumerate(probe.classes) if c in directions}
    arith = {
        "SAE features": vector_arithmetic(circuit, mlp0, table, directions, seed),
        "random directions": vector_arithmetic(circuit, mlp0, table, random_directions(directions, seed) if directions else {}, seed),
        "probe directions": vector_arithmetic(circuit, mlp0, table, probe_dirs, seed),
    }
    return ProbeRun(probe, probe_embed, cosine, arith, offset_profile(circuit, mlp0, table), circuit.name)
