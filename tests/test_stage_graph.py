"""The stage graph of `run` (`stage_cache.NEEDS`): a stage's key covers exactly the stages it reads,
and a stage that reruns takes every stage that reads it along, and no other."""

from successor_lens.features.mine_config import MineConfig
from successor_lens.runner.run_config import RunConfig, stage_keys
from successor_lens.runner.stage_cache import NEEDS, STAGES, WHOLE_MODEL, StageCache, dependents, upstream


def test_every_stage_reads_only_stages_before_it_and_the_lean_ones_come_first():
    assert set(NEEDS) == set(STAGES)
    assert all(STAGES.index(s) < STAGES.index(stage) for stage, needs in NEEDS.items() for s in needs)
    assert all(not set(upstream(s)) & set(WHOLE_MODEL) for s in STAGES if s not in WHOLE_MODEL)  # a lean run never needs them
    assert list(STAGES[-len(WHOLE_MODEL):]) == list(WHOLE_MODEL)


def test_a_config_change_moves_the_keys_of_the_stages_that_read_it_and_no_others():
    before = stage_keys("fingerprint", RunConfig())
    after = stage_keys("fingerprint", RunConfig(mine=MineConfig(null_draws=9)))
    assert [s for s in STAGES if before[s] != after[s]] == ["mine", "probes", "atlas"] == dependents("mine")
    steps = stage_keys("fingerprint", RunConfig(steps=7))
    assert [s for s in STAGES if before[s] != steps[s]] == ["saes", "mine", "probes", "atlas"]  # not the in-context DLA
    assert len(set(stage_keys("other weights", RunConfig()).values()) & set(before.values())) == 0


def test_a_stage_that_reruns_removes_the_manifests_of_the_stages_that_read_it(tmp_path):
    cache = StageCache(tmp_path)
    cache.folder.mkdir()
    for stage in STAGES:
        cache.record(stage, "key", [], 0.0)
    cache.invalidate("mine")
    assert sorted(p.stem for p in cache.folder.glob("*.json")) == sorted(["heads", "activations", "saes", "incontext"])
    cache.invalidate("activations")
    assert sorted(p.stem for p in cache.folder.glob("*.json")) == ["heads", "incontext"]
