"""Probes on a real model: leave-one-task-out probes, probe/feature cosine, arithmetic, offset profile."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformer_lens import HookedTransformer

from successor_lens.features.pipeline import item_table
from successor_lens.probes.arithmetic import ArithmeticResult, OVCircuit, offset_profile, random_directions, vector_arithmetic
from successor_lens.probes.heads import parse_head_name, scan_heads
from successor_lens.probes.linear import CosineReport, ProbeResult, leave_one_task_out, probe_feature_cosine
from successor_lens.sites import token_activations
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

    def to_json(self) -> dict:
        return {
            "head": self.head,
            "probe_mlp0": self.probe.summary(), "probe_embed": self.probe_embed.summary(),
            "probe_feature_cosine": self.cosine.summary(),
            "arithmetic": {name: r.summary() for name, r in self.arithmetic.items()},
            "arithmetic_examples": self.arithmetic["SAE features"].predictions[:40],
            "offset_profile": self.profile,
            "paper": PAPER,
        }


def probe_model(
    model: HookedTransformer, directions: dict[int, torch.Tensor], head: str | None = None, seed: int = 0,
    tasks: list[Task] | None = None, scan_tasks: list[Task] | None = None,
) -> ProbeRun:
    """Everything `successor-lens probe` measures, for the head `head` (default: the scan's best)."""
    table, tokens = item_table(model, tasks)
    mlp0 = token_activations(model, tokens, "mlp0").cpu()
    embed = token_activations(model, tokens, "embed").cpu()
    probe = leave_one_task_out(mlp0, table, seed)
    probe_embed = leave_one_task_out(embed, table, seed)
    cosine = probe_feature_cosine(probe, directions, seed)

    layer, index = parse_head_name(head) if head else scan_heads(model, build_token_set(model.tokenizer, scan_tasks)).best()
    circuit = OVCircuit.from_model(model, layer, index, tokens)
    probe_dirs = {c: probe.directions[i] for i, c in enumerate(probe.classes) if c in directions}
    arith = {
        "SAE features": vector_arithmetic(circuit, mlp0, table, directions, seed),
        "random directions": vector_arithmetic(circuit, mlp0, table, random_directions(directions, seed), seed),
        "probe directions": vector_arithmetic(circuit, mlp0, table, probe_dirs, seed),
    }
    return ProbeRun(probe, probe_embed, cosine, arith, offset_profile(circuit, mlp0, table), circuit.name)
