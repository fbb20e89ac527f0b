"""Planted controls that a wrong convention fails (tests/planted_shapes.py).

On the Llama- and Gemma-shaped planted models the scan finds the planted successor head at 1.0
and the copying head at 1.0; each plausible wrong reading loses the plant: no ln1 before W_V, no
post-norms (Gemma), top-1 over the whole vocabulary instead of the task's items, and layer-0
attention included in the effective embedding. `planted-gpt2` cannot tell these apart: its norm
gains are 1 and its MLP0 is linear.
"""

from __future__ import annotations

import pytest
import torch
from planted_shapes import TASKS, build, heads
from transformer_lens.utilities import get_act_name

from successor_lens.probes.circuit import OVCircuit, effective_embeddings, head_inputs, ov_logits
from successor_lens.probes.probe_configs import ScanConfig
from successor_lens.probes.scan import scan_heads
from successor_lens.tasks import build_token_set, same_task


@pytest.fixture(scope="module", params=["llama", "gemma"])
def planted(request):
    model = build(request.param)
    return request.param, model, build_token_set(model.tokenizer, TASKS)


def succession_rate(logits_NM: torch.Tensor, token_set, restrict: bool = True) -> float:
    """Share of successor pairs whose top-1 (among the task's items, or the whole row) is the successor."""
    if restrict:
        logits_NM = logits_NM.masked_fill(~same_task([i.task for i in token_set.items]), float("-inf"))
    top = logits_NM.argmax(-1)
    pairs = token_set.successor_pairs()
    return sum(int(top[a]) == b for a, b in pairs) / len(pairs)


def test_the_right_reading_recovers_the_plant_and_the_copying_control(planted):
    shape, model, token_set = planted
    assert "10" in {d.text for d in token_set.dropped}  # a digit-splitting tokenizer: 10..29 are not single tokens
    result = scan_heads(model, token_set)
    (sl, sh), (cl, ch) = heads(shape)
    assert result.best() == (sl, sh) and result.scores[sl, sh] == 1.0
    assert result.copying[cl, ch] == 1.0


def test_leaving_out_ln1_loses_the_plant(planted):
    shape, model, token_set = planted
    (sl, sh), _ = heads(shape)
    assert scan_heads(model, token_set, ScanConfig(input_norm=False)).scores[sl, sh] < 0.2


def test_leaving_out_the_post_norms_loses_the_plant(planted):
    shape, model, token_set = planted
    (sl, sh), _ = heads(shape)
    wrong = scan_heads(model, token_set, ScanConfig(post_norms=False)).scores[sl, sh]
    if shape == "gemma":
        assert wrong < 0.2
    else:  # nothing to leave out: a Llama has no post-norms
        assert wrong == 1.0


def test_top_1_over_the_whole_vocabulary_loses_the_plant(planted):
    shape, model, token_set = planted
    (sl, sh), _ = heads(shape)
    x = effective_embeddings(model, token_set.tokens)[0]
    whole = OVCircuit.from_model(model, sl, sh).logits(x)  # [items, vocabulary]
    restricted = whole[:, token_set.tokens]
    assert succession_rate(restricted, token_set) == 1.0
    columns = token_set.tokens.tolist()
    pairs_hit = sum(int(whole[a].argmax()) == columns[b] for a, b in token_set.successor_pairs())
    assert pairs_hit / len(token_set.successor_pairs()) < 0.2  # the frequent tokens win the whole-vocabulary top-1


def test_including_layer_0_attention_loses_the_plant(planted):
    shape, model, token_set = planted
    (sl, sh), _ = heads(shape)
    _, cache = model.run_with_cache(token_set.tokens[:, None], names_filter=get_act_name("mlp_out", 0), stop_at_layer=1)
    with_attention = cache[get_act_name("mlp_out", 0)][:, 0]
    logits = ov_logits(model, head_inputs(model, with_attention[None]), token_set.tokens)[sl, sh]
    assert succession_rate(logits, token_set) < 0.2
    paper_form = ov_logits(model, head_inputs(model, effective_embeddings(model, token_set.tokens)), token_set.tokens)[sl, sh]
    assert succession_rate(paper_form, token_set) == 1.0
