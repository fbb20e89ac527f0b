import pytest
import torch
from conftest import TINY_TASKS, make_planted

from successor_lens.probes.probe_configs import ScanConfig
from successor_lens.probes.scan import scan_heads
from successor_lens.tasks import build_token_set


@pytest.mark.parametrize("n_kv_heads", [None, 2], ids=["mha", "gqa"])
def test_scan_ranks_planted_head_first(tiny_tokenizer, n_kv_heads):
    model = make_planted(n_kv_heads, layer=1, head=2)
    token_set = build_token_set(tiny_tokenizer, TINY_TASKS, variants="both")
    result = scan_heads(model, token_set)

    assert result.top_heads(1)[0][0] == "L1H2"
    assert result.scores[1, 2].item() == 1.0
    for task, scores in result.per_task.items():
        assert scores[1, 2].item() == 1.0, task
    others = torch.cat([result.scores.flatten()[:6], result.scores.flatten()[7:]])
    assert others.max() < 0.5
    assert others.mean() < 0.3  # chance is 1/10 (digits) and 1/7 (days)


def test_gqa_head_sharing_the_planted_value_matrix_is_not_a_successor(tiny_tokenizer):
    # L1H3 shares L1H2's W_V (same KV group) but has its own W_O: it must not score 1.0.
    model = make_planted(2, layer=1, head=2)
    result = scan_heads(model, build_token_set(tiny_tokenizer, TINY_TASKS))
    assert result.scores[1, 3].item() < 0.5


@pytest.mark.parametrize("embedding", ["mlp0", "embed+mlp0", "residual"])
def test_every_embedding_option_scores_all_heads(tiny_tokenizer, embedding):
    model = make_planted(None)
    result = scan_heads(model, build_token_set(tiny_tokenizer, TINY_TASKS), ScanConfig(embedding=embedding))
    assert result.scores.shape == (2, 4)
    assert ((result.scores >= 0) & (result.scores <= 1)).all()
    assert result.config.embedding == embedding


def test_copying_score_finds_a_planted_copy_head(tiny_tokenizer):
    from conftest import plant_successor_head, tiny_config
    from transformer_lens import HookedTransformer

    model = HookedTransformer(tiny_config()).eval()
    ids = list(range(17))
    plant_successor_head(model, 0, 1, ids, {t: t for t in ids})  # identity: a copying head
    result = scan_heads(model, build_token_set(tiny_tokenizer, TINY_TASKS))
    assert result.copying[0, 1].item() == 1.0
    assert result.scores[0, 1].item() == 0.0


def test_unknown_embedding_is_rejected():
    with pytest.raises(ValueError, match="unknown embedding"):
        ScanConfig(embedding="mlp1")


def test_heads_json_names_heads(tiny_tokenizer):
    model = make_planted(None)
    data = scan_heads(model, build_token_set(tiny_tokenizer, TINY_TASKS)).to_json()
    assert data["best_head"] == "L1H2"
    assert set(data["heads"]) == {f"L{l}H{h}" for l in range(2) for h in range(4)}
    assert data["passes_bar"] is True
