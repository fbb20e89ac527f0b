"""Nulls that keep what the data already gives away (docs/method.md, "Nulls").

A digit-splitting tokenizer reads every number at its last digit, so index mod 10 is written in
the token: a model that learned nothing still clusters the numbers by residue. The tokenizer-aware
relabelling null keeps that and nothing more; the rotated-dictionary null keeps the tested
dictionary's own architecture and weights' statistics. Each test also shows the plausible wrong
null (index permutation, our own initialisation) being fooled.
"""

from __future__ import annotations

import torch
from sae_lens import StandardSAE, StandardSAEConfig

from successor_lens.features.matrix import ItemTable
from successor_lens.features.mine_run import MineRun, class_tests
from successor_lens.features.mining import mine, mining_null, recurrence
from successor_lens.nulls import value_vs_draws
from successor_lens.sae_train.dictionary import rotated_like, untrained_like

DIGIT_TOKEN = 100  # token of digit d: 100 + d
N_OTHER = 60


def digit_split_table() -> ItemTable:
    """Numbers 0..199 read at their last digit (split beyond 9), and a 60-item other task."""
    texts = [str(n) for n in range(200)] + [f"w{i}" for i in range(N_OTHER)]
    tasks = ["numbers"] * 200 + ["words"] * N_OTHER
    indices = torch.tensor(list(range(200)) + list(range(N_OTHER)))
    ids = [tuple(DIGIT_TOKEN + int(c) for c in str(n)) for n in range(200)] + [(1000 + i,) for i in range(N_OTHER)]
    tokens = torch.tensor([i[-1] for i in ids])
    successor = torch.tensor([n + 1 if n < 199 else -1 for n in range(200)] + [200 + i + 1 if i < N_OTHER - 1 else -1 for i in range(N_OTHER)])
    return ItemTable(texts, tasks, indices, torch.zeros(len(texts), dtype=torch.bool), successor, tokens, ids,
                     torch.zeros(len(texts), dtype=torch.long))


def tokenizer_only_acts(table: ItemTable, d: int = 48, seed: int = 0) -> torch.Tensor:
    """What a model that learned nothing gives: each number is its last digit's random vector (plus
    noise), every other item a random vector."""
    gen = torch.Generator().manual_seed(seed)
    digit = torch.randn(10, d, generator=gen) * 3
    acts = torch.randn(len(table.texts), d, generator=gen) * 4
    for r, ids in enumerate(table.ids):
        if table.tasks[r] == "numbers":
            acts[r] = digit[ids[-1] - DIGIT_TOKEN] + 0.1 * torch.randn(d, generator=gen)
    return acts


def test_relabelling_keeps_the_read_at_token_and_scrambles_the_rest():
    table = digit_split_table()
    maps = set()
    for seed in range(5):
        null = table.relabelled(torch.Generator().manual_seed(seed))
        numbers = table.is_number
        residue_of = {}
        for r in numbers.nonzero().flatten().tolist():  # one residue per read-at token
            assert residue_of.setdefault(int(table.tokens[r]), int(null.residues[r])) == int(null.residues[r])
        assert sorted(residue_of.values()) == list(range(10))  # balanced: a permutation of the residues
        assert torch.equal(null.indices[numbers] // 10, table.indices[numbers] // 10)  # decades kept
        assert torch.equal(null.indices[~numbers], table.indices[~numbers])  # other tasks keep theirs
        maps.add(tuple(sorted(residue_of.items())))
    assert len(maps) > 1


def digit_dictionary(acts: torch.Tensor, table: ItemTable, extra: int = 22, seed: int = 0) -> StandardSAE:
    """A dictionary with one latent per digit cluster (what training on such data finds) plus random latents."""
    d = acts.shape[1]
    sae = StandardSAE(StandardSAEConfig(d_in=d, d_sae=10 + extra))
    gen = torch.Generator().manual_seed(seed)
    centres = torch.stack([acts[[r for r, ids in enumerate(table.ids) if table.tasks[r] == "numbers" and ids[-1] == DIGIT_TOKEN + c]].mean(0)
                           for c in range(10)])
    rows = torch.cat([centres, torch.randn(extra, d, generator=gen)])
    rows = rows / rows.norm(dim=-1, keepdim=True)
    with torch.no_grad():
        sae.W_dec.copy_(rows)
        sae.W_enc.copy_(rows.T)
        sae.b_dec.zero_()
        sae.b_enc.copy_(-0.3 * (acts @ rows.T).max(0).values)  # fires on its cluster and a few stray items
    return sae


def figures_for(sae, acts, table, untrained) -> dict:
    """The run's mining figures of one dictionary: 99 draws of each null (p can reach 0.01) and the
    per-class test (its untrained null: the dictionary rotated)."""
    mined = [mine(sae, acts, table)]
    nulls = [mining_null(sae, acts, table, untrained, draws=99, seed=0)]
    return MineRun(mined, recurrence(mined), mined[0].directions, ["test"], nulls, class_tests=class_tests([sae], [False], acts, table)).figures()


def test_a_tokenizer_that_writes_the_digit_is_not_a_finding():
    table = digit_split_table()
    acts = tokenizer_only_acts(table)
    sae = digit_dictionary(acts, table)
    mined = mine(sae, acts, table)
    assert len(mined.classes_found) >= 8  # the digit clusters do look like mod-10 features
    figures = figures_for(sae, acts, table, [rotated_like(sae, 1000 + r) for r in range(99)])
    for name in ("classes_found", "classes_found_raw", "modal_coverage"):
        assert not figures[name]["above"], (name, figures[name])
    # the wrong null, index permutation alone, is fooled by the tokenizer
    assert figures["classes_found_raw"]["null_permuted"] < 5
    assert value_vs_draws(figures["classes_found_raw"]["value"], figures["classes_found_raw"]["permuted"], "index permutation").above
    assert figures["classes_found"]["value"] == 0  # the per-class test reads no item whose digit is in its token


def test_an_untrained_foreign_dictionary_is_judged_against_itself():
    """A never-trained sae-lens StandardSAE (zero b_dec, its own init) is its own null once
    rotated; our initialisation (b_dec at the data mean) is a different dictionary and is fooled."""
    table = digit_split_table()
    acts = tokenizer_only_acts(table) + 5.0  # a large shared mean, as real activations have
    torch.manual_seed(0)
    foreign = StandardSAE(StandardSAEConfig(d_in=acts.shape[1], d_sae=64))
    ours = [untrained_like(foreign, 1000 + r, acts.mean(0)) for r in range(99)]
    own = [rotated_like(foreign, 1000 + r) for r in range(99)]
    fig = figures_for(foreign, acts, table, own)
    assert not any(fig[name]["above"] for name in ("classes_found", "classes_found_raw", "class_latents", "modal_coverage")), fig
    wrong = [mine(u, acts, table) for u in ours]
    value = len(mine(foreign, acts, table).latent_class)
    assert value_vs_draws(value, [len(m.latent_class) for m in wrong], "our init").above != fig["class_latents"]["above"]


def test_the_rotated_dictionary_keeps_norms_biases_and_geometry():
    torch.manual_seed(0)
    sae = StandardSAE(StandardSAEConfig(d_in=24, d_sae=40))
    with torch.no_grad():
        sae.b_enc.normal_()
        sae.b_dec.normal_()
    rot = rotated_like(sae, 3)
    assert torch.allclose(rot.W_dec.norm(dim=-1), sae.W_dec.norm(dim=-1), atol=1e-5)
    assert torch.allclose(rot.W_enc.norm(dim=0), sae.W_enc.norm(dim=0), atol=1e-5)
    assert torch.allclose(rot.W_dec @ rot.W_dec.T, sae.W_dec @ sae.W_dec.T, atol=1e-4)
    assert torch.equal(rot.b_enc, sae.b_enc) and torch.equal(rot.b_dec, sae.b_dec)
    assert (rot.W_dec * sae.W_dec).sum(-1).abs().mean() < 0.5  # the directions themselves moved
