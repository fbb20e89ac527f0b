"""The per-class mining test: its statistic against a loop, its nulls keep what they must, its
vectorised untrained dictionaries equal the dictionary's own encode, and it has power on a
digit-splitting tokenizer where the relabelling null had none."""

import copy

import pytest
import torch
from sae_lens.saes.jumprelu_sae import JumpReLUSAE, JumpReLUSAEConfig
from sae_lens.saes.standard_sae import StandardSAE, StandardSAEConfig
from sae_lens.saes.topk_sae import TopKSAE, TopKSAEConfig
from scipy import stats

from successor_lens.features.class_test import class_statistic, unsplit_rows, untrained_codes, within_task_residues
from successor_lens.features.matrix import base_task, latent_matrix
from successor_lens.features.mine_run import class_tests, item_acts, item_table
from successor_lens.models.loading import load_model
from successor_lens.models.planted import build_control
from successor_lens.nulls import benjamini_hochberg, draws_for, holm
from successor_lens.sae_train.dictionary import rotated_like, untrained_parameters


def test_class_statistic_equals_a_loop_over_latents_and_classes():
    gen = torch.Generator().manual_seed(0)
    acts = torch.rand(7, 40, generator=gen).double() * (torch.rand(7, 40, generator=gen) < 0.3)
    labels = torch.randint(0, 4, (3, 40), generator=gen)
    got, latent = class_statistic(acts, labels, 4)
    for d in range(3):
        for c in range(4):
            inside, outside = acts[:, labels[d] == c], acts[:, labels[d] != c]
            effect = [float((inside[f].mean() - outside[f].mean()) / ((inside[f].var(unbiased=False) + outside[f].var(unbiased=False)) / 2).sqrt())
                      for f in range(7)]
            assert got[d, c] == pytest.approx(max(effect), rel=1e-4)
            assert effect[int(latent[d, c])] == pytest.approx(max(effect), rel=1e-4)


def test_within_task_permutation_keeps_each_tasks_indices_and_moves_variants_together():
    model = load_model("planted-digits")
    table = item_table(model)
    rows = unsplit_rows(table)
    assert not table.split[rows].any() and not table.held_out[rows].any()
    residues = within_task_residues(table, rows, 50, torch.Generator().manual_seed(1))
    tasks = [base_task(table.tasks[int(r)]) for r in rows]
    for task in set(tasks):
        cols = torch.tensor([t == task for t in tasks])
        assert all(sorted(residues[d, cols].tolist()) == sorted((table.indices[rows][cols] % 10).tolist()) for d in range(50))
    # " May" and "May" (one index, two variants) keep one label in every draw
    by_index: dict[tuple[str, int], list[int]] = {}
    for col, r in enumerate(rows.tolist()):
        by_index.setdefault((tasks[col], int(table.indices[r])), []).append(col)
    pairs = [cols for cols in by_index.values() if len(cols) == 2]
    assert pairs and all(torch.equal(residues[:, a], residues[:, b]) for a, b in pairs)
    assert not all(torch.equal(residues[0], residues[d]) for d in range(1, 50))  # the draws differ


@pytest.mark.parametrize("make", [lambda: TopKSAE(TopKSAEConfig(d_in=32, d_sae=48, k=4)),
                                  lambda: StandardSAE(StandardSAEConfig(d_in=32, d_sae=48)),
                                  lambda: JumpReLUSAE(JumpReLUSAEConfig(d_in=32, d_sae=48))])
def test_vectorised_untrained_dictionaries_equal_each_copys_own_encode(make):
    sae = make()
    if hasattr(sae, "threshold"):
        sae.threshold.data.fill_(0.2)
    x = torch.randn(30, 32, generator=torch.Generator().manual_seed(2)) + 1
    got = untrained_codes(sae, x, 5, x.mean(0))(20)
    params = untrained_parameters(sae, 20, torch.Generator().manual_seed(5), x.mean(0))
    for r in (0, 9, 19):
        copy_ = copy.deepcopy(sae)
        for name, value in params.items():
            getattr(copy_, name).data = value[r].contiguous()
        assert torch.allclose(got[r], latent_matrix(copy_, x), atol=1e-5)


def test_rotated_inputs_draw_the_rotated_dictionary_null():
    sae = TopKSAE(TopKSAEConfig(d_in=24, d_sae=64, k=4))
    sae.b_dec.data.normal_(generator=torch.Generator().manual_seed(3))
    x = torch.randn(40, 24, generator=torch.Generator().manual_seed(4)) + 2
    labels = torch.randint(0, 10, (1, 40), generator=torch.Generator().manual_seed(5))
    fast = untrained_codes(sae, x, 7, None)(400)
    slow = torch.stack([latent_matrix(rotated_like(sae, 100 + i), x) for i in range(400)])
    for c in range(10):
        a = torch.stack([class_statistic(f, labels)[0][0, c] for f in fast]).nan_to_num(0)
        b = torch.stack([class_statistic(f, labels)[0][0, c] for f in slow]).nan_to_num(0)
        assert stats.ks_2samp(a.numpy(), b.numpy()).pvalue > 1e-3


def test_holm_and_benjamini_hochberg_against_their_definitions():
    p = [0.0001, 0.004, 0.0045, 0.02, 0.5]
    assert holm(p, 0.01) == [True, False, False, False, False]  # 0.004 > 0.01 / 4
    assert holm([0.001, 0.002, 0.003], 0.01) == [True, True, True]  # 0.001<=0.01/3, 0.002<=0.01/2, 0.003<=0.01
    assert benjamini_hochberg(p, 0.01) == [True, True, True, False, False]  # 0.0045 <= 3/5 * 0.01
    assert draws_for(1) == 199 and draws_for(10) == 1999 and 1 / (draws_for(30) + 1) <= 0.01 / 30 / 2


@pytest.fixture(scope="module")
def digit_items():
    """A weak-but-real plant on a digit-splitting tokenizer (class amplitude x0.5 among item noise
    of norm 1) and its random twin (same architecture and tokenizer, random weights)."""
    planted = build_control("planted-digits", plant=True, digits=True, strength=0.5, noise=1.0)
    random = load_model("random-digits")
    table = item_table(planted)
    assert table.split.sum() > 900  # 10..500 and every " N" are split: the class of most numbers is in their last token
    return table, item_acts(planted, table, "mlp0"), item_acts(random, table, "mlp0")


def _train(acts, seed=0):
    from successor_lens.sae_train.batches import ShuffledBatches
    from successor_lens.sae_train.train_config import TrainConfig
    from successor_lens.sae_train.trainer import make_sae, train

    cfg = TrainConfig(steps=300, seed=seed)
    sae = make_sae(cfg, acts.shape[1])
    train(cfg, sae, ShuffledBatches(acts, cfg.batch_size, cfg.seed), progress=False)
    return sae


def test_the_per_class_test_finds_a_digit_tokenizers_classes_and_not_its_random_twins(digit_items):
    """On a tokenizer that splits numbers into digits, the relabelling null is a permutation of ten
    digits: it held the true labels one draw in ten and the per-class count came out 0-2 whatever the
    data said. The per-class test reads only items whose class is not in their token."""
    table, planted, random = digit_items
    # the wrong null: relabelling the numbers keeping their read-at token is a permutation of ten digits here,
    # and gives class 3's numbers their true residue about one draw in ten (no class could pass it at 0.01)
    gen = torch.Generator().manual_seed(0)
    threes = table.is_number & ~table.held_out & (table.residues == 3)
    truth = sum(bool((table.relabelled(gen).residues[threes] == 3).all()) for _ in range(300))
    assert 15 <= truth <= 50
    found = class_tests([_train(planted)], [True], planted, table)[0]
    null = class_tests([_train(random)], [True], random, table)[0]
    assert sum(holm(found.p)) == 10
    assert sum(holm(null.p)) == 0 and sum(benjamini_hochberg(null.p)) == 0
    assert found.draws >= draws_for(10) and found.untrained_draws == found.draws
