"""The calibration bench's fast version (bench/calibration.py runs the whole pipeline for an hour):
the per-class mining verdict and the bench's reference test on 2 strengths of a graded plant and 2
seeds of its random twin, on the digit-splitting tokenizer. Power must fall with the plant's
strength, and the random seeds must find nothing."""

import importlib.util
from pathlib import Path

import pytest
import torch

from successor_lens.features.mine_run import class_tests, item_acts, item_table
from successor_lens.models.loading import load_model
from successor_lens.models.planted import build_control
from successor_lens.nulls import holm


def _bench():
    spec = importlib.util.spec_from_file_location("calibration", Path(__file__).parents[1] / "bench" / "calibration.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _classes(model) -> int:
    from successor_lens.sae_train.batches import ShuffledBatches
    from successor_lens.sae_train.train_config import TrainConfig
    from successor_lens.sae_train.trainer import make_sae, train

    table = item_table(model)
    acts = item_acts(model, table, "mlp0")
    cfg = TrainConfig(steps=300)
    sae = make_sae(cfg, acts.shape[1])
    train(cfg, sae, ShuffledBatches(acts, cfg.batch_size, cfg.seed), progress=False)
    return sum(holm(class_tests([sae], [True], acts, table)[0].p))


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {**{f"S={s}": build_control("planted-digits", plant=True, digits=True, strength=s, noise=1.0) for s in (1.0, 0.25)},
            **{f"random seed {s}": load_model(f"random-digits-seed{s}") for s in (1, 2)}}


@pytest.mark.slow  # four dictionaries trained and tested: a minute
def test_power_falls_with_the_plants_strength_and_random_seeds_find_nothing(models):
    counts = {name: _classes(model) for name, model in models.items()}
    assert counts["S=1.0"] == 10 and counts["S=1.0"] >= counts["S=0.25"], counts
    assert counts["random seed 1"] == counts["random seed 2"] == 0, counts


def test_the_benchs_reference_test_and_flip_points(models):
    bench = _bench()
    assert bench.reference_test(models["S=1.0"]) and not bench.reference_test(models["random seed 1"])
    curve = {1.0: {"a": True, "b": True}, 0.5: {"a": True, "b": False}, 0.25: {"a": False, "b": True}}
    assert bench.flip_point(curve, "a") == 0.5 and bench.flip_point(curve, "b") == 1.0 and bench.flip_point(curve, "c") is None
