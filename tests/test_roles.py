"""Head roles and activation patching (probes/roles.py): the planted heads get their roles, and the
batched patching (every head of a layer in one forward) equals patching one head at a time."""

from __future__ import annotations

import pytest
import torch
from planted_shapes import DAYS, MONTHS, TASKS, WORDS, build, heads
from transformer_lens.utilities import get_act_name

from successor_lens.probes.incontext import Prompt
from successor_lens.probes.roles import attention_roles, corrupted_pairs, describe, head_roles, ov_roles, patch_heads
from successor_lens.tasks import build_token_set


@pytest.fixture(scope="module")
def llama():
    return build("llama")


def list_prompts() -> list[Prompt]:
    comma = WORDS.index(",")
    out = []
    for task, items in (("days", DAYS), ("months", MONTHS)):
        ids = [WORDS.index(w) for w in items]
        for start in range(len(items) - 3):
            shown = ids[start : start + 3]
            out.append(Prompt(task, ", ".join(items[start : start + 3]) + ",", [t for s in shown for t in (s, comma)], ids[start + 3], ids))
    return out


def test_the_planted_heads_get_their_ov_roles(llama):
    token_set = build_token_set(llama.tokenizer, TASKS)
    roles = ov_roles(llama, token_set, embedding="mlp0")
    (sl, sh), (cl, ch) = heads("llama")
    succ, copy = roles[f"L{sl}H{sh}"], roles[f"L{cl}H{ch}"]
    assert succ["successor"]["above"] and succ["successor"]["rate"] == 1.0 and not succ["copying"]["above"]
    assert copy["copying"]["above"] and not copy["successor"]["above"]
    assert not any(v["above"] for v in roles["L0H2"].values())  # a head with no OV circuit has no role
    words = describe(f"L{sl}H{sh}", succ, {}, None)
    assert "successor 1.00" in words and "copying" not in words


def test_batched_patching_equals_patching_one_head_at_a_time(llama):
    pairs = corrupted_pairs(llama, list_prompts())
    assert pairs and all(c.task == k.task and c.answer != k.answer for c, k in pairs)
    result = patch_heads(llama, pairs)
    clean = torch.tensor([c.ids for c, _ in pairs])
    corrupt = torch.tensor([k.ids for _, k in pairs])
    a, b = torch.tensor([c.answer for c, _ in pairs]), torch.tensor([k.answer for _, k in pairs])
    rows = torch.arange(len(pairs))
    diff = lambda logits: logits[rows, -1, a] - logits[rows, -1, b]  # noqa: E731
    _, cache = llama.run_with_cache(corrupt)
    total = (diff(llama(clean)) - diff(llama(corrupt))).mean()
    for layer in range(llama.cfg.n_layers):
        for head in range(llama.cfg.n_heads):
            def patch(z, hook, layer=layer, head=head):
                z[:, -1, head] = cache[get_act_name("z", layer)][:, -1, head]
                return z
            patched = llama.run_with_hooks(clean, fwd_hooks=[(get_act_name("z", layer), patch)])
            expected = (diff(llama(clean)) - diff(patched)).mean() / total
            assert torch.allclose(result.effect[layer, head], expected, atol=1e-4), (layer, head)


def test_attention_roles_measure_against_uniform_attention(llama):
    roles = attention_roles(llama)
    some = next(iter(roles.values()))
    for name in ("previous-token", "induction"):
        assert 0 < some[name]["uniform"] < 0.5  # what uniform causal attention puts on those positions
        assert all(0 <= r[name]["score"] <= 1 for r in roles.values())


def test_head_roles_writes_every_head_in_words(llama):
    token_set = build_token_set(llama.tokenizer, TASKS)
    doc = head_roles(llama, list_prompts(), token_set)
    assert len(doc["heads"]) == llama.cfg.n_layers * llama.cfg.n_heads
    assert all(h["words"].startswith(name + ": ") for name, h in doc["heads"].items())
    assert doc["patching"]["n_pairs"] > 0 and len(doc["carriers"]) == 3
