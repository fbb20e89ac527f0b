"""Planted mod-10 structure: the miner, the probes and the arithmetic recover what was planted."""

import pytest
import torch
from conftest import WordTokenizer

from successor_lens.features.matrix import ItemTable
from successor_lens.features.mine_config import MineConfig
from successor_lens.features.mining import mine, recurrence
from successor_lens.probes.arithmetic import offset_profile, random_directions, vector_arithmetic
from successor_lens.probes.circuit import OVCircuit
from successor_lens.probes.linear import leave_one_task_out, probe_feature_cosine
from successor_lens.sae_train.batches import ShuffledBatches
from successor_lens.sae_train.train_config import TrainConfig
from successor_lens.sae_train.trainer import make_sae, train
from successor_lens.tasks import Task, build_token_set

D = 64
TASKS = [
    Task("digits", tuple("0123456789"), tuple(range(10))),
    Task("words", tuple("one two three four five six seven eight nine ten".split()), tuple(range(1, 11))),
    Task("ordinals", tuple("first second third fourth fifth sixth seventh eighth ninth tenth".split()), tuple(range(1, 11))),
    Task("letters", tuple("ABCDEFGHIJ"), tuple(range(1, 11))),
    Task("roman", tuple("I II III IV V VI VII VIII IX X".split()), tuple(range(1, 11)), held_out=True),
]


def orthonormal(n, d, seed):
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(seed)))
    return q[:n]


@pytest.fixture(scope="module")
def planted():
    words = [t for task in TASKS for t in task.items]
    token_set = build_token_set(WordTokenizer(words), TASKS, variants="nospace")
    table = ItemTable.from_token_set(token_set)
    basis = orthonormal(10 + len(TASKS) + 10, D, seed=3)
    classes, task_dirs, out_dirs = basis[:10], basis[10 : 10 + len(TASKS)], basis[10 + len(TASKS) :]
    names = [t.name for t in TASKS]
    g = torch.Generator().manual_seed(4)
    clean = 3 * classes[table.residues] + 2 * task_dirs[[names.index(t.split(":")[0]) for t in table.tasks]]
    acts = clean + 0.1 * torch.randn(clean.shape, generator=g)

    cfg = TrainConfig(d_sae=24, k=2, steps=500, batch_size=256, lr=1e-2)
    noisy = clean.repeat(40, 1) + 0.1 * torch.randn(40 * len(clean), D, generator=g)
    saes = []
    for seed in (0, 1):
        sae = make_sae(TrainConfig(**{**cfg.__dict__, "seed": seed}), D)
        train(TrainConfig(**{**cfg.__dict__, "seed": seed}), sae, ShuffledBatches(noisy, 256, seed), progress=False)
        saes.append(sae)

    # A planted successor head: reads class c, writes output direction of class c+1; each
    # candidate's unembedding is its own class's output direction.
    W_U = out_dirs[table.residues].T.contiguous()
    circuit = OVCircuit(classes.T.contiguous(), torch.zeros(10), out_dirs.roll(-1, 0), W_U, lambda x: x, "planted")
    return dict(table=table, acts=acts, classes=classes, saes=saes, circuit=circuit)


def test_miner_groups_latents_into_the_ten_planted_classes(planted):
    mined = mine(planted["saes"][0], planted["acts"], planted["table"])
    assert mined.classes_found == list(range(10))
    for c, direction in mined.directions.items():
        assert torch.dot(direction, planted["classes"][c]) > 0.9
    assert all(v > 0.9 for v in mined.coverage.values())
    assert all(v >= 0.5 for v in mined.modal_coverage.values())  # one class may split across two latents
    # the task latents (one task each, all classes alike) are never assigned to a class
    W = planted["saes"][0].W_dec.detach()
    for latent in mined.latent_class:
        assert (planted["classes"] @ (W[latent] / W[latent].norm())).max() > 0.8


def test_features_recur_across_seeds(planted):
    mined = [mine(sae, planted["acts"], planted["table"]) for sae in planted["saes"]]
    rec = recurrence(mined)
    assert all(rec.counts[c] == 2 for c in range(10))
    assert sorted(rec.modal_directions) == list(range(10))


def test_selectivity_threshold_is_respected(planted):
    strict = mine(planted["saes"][0], planted["acts"], planted["table"], MineConfig(selectivity=1.0))
    assert all(strict.selectivity[l] >= 1.0 - 1e-6 for l in strict.latent_class)
    loose = mine(planted["saes"][0], planted["acts"], planted["table"])
    assert set(strict.latent_class) <= set(loose.latent_class)


def test_probe_finds_planted_directions_and_beats_the_control(planted):
    probe = leave_one_task_out(planted["acts"], planted["table"])
    assert set(probe.accuracy) == {"digits", "words", "ordinals", "letters", "roman"}
    assert min(probe.accuracy.values()) > 0.9
    assert max(probe.control.values()) < 0.5
    classes = planted["classes"]
    centred = classes - classes.mean(0)
    cos = [torch.dot(probe.directions[i], centred[c] / centred[c].norm()).item() for i, c in enumerate(probe.classes)]
    assert min(cos) > 0.9

    mined = mine(planted["saes"][0], planted["acts"], planted["table"])
    report = probe_feature_cosine(probe, mined.directions)
    assert report.mean > 0.8 and report.random_baseline < 0.2 and report.mismatched_baseline < 0.2


def test_arithmetic_through_a_planted_successor_circuit(planted):
    mined = mine(planted["saes"][0], planted["acts"], planted["table"])
    real = vector_arithmetic(planted["circuit"], planted["acts"], planted["table"], mined.directions)
    control = vector_arithmetic(planted["circuit"], planted["acts"], planted["table"], random_directions(mined.directions))
    assert real.overall > 0.9
    assert control.overall < 0.2
    assert "roman:nospace" not in real.success  # held out


def test_offset_profile_peaks_at_plus_one_for_the_planted_head(planted):
    profile = offset_profile(planted["circuit"], planted["acts"], planted["table"])
    overall = profile["all"]
    assert max(overall, key=overall.get) == 1
