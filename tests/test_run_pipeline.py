"""`run` end to end on a tiny planted model: stages, the stage cache, --force, interrupted runs."""

import json

import pytest
from conftest import RUN_TASKS, copy_run, make_run_model

from successor_lens.artifacts import latent_pages as pages_mod
from successor_lens.artifacts.atlas_config import AtlasConfig
from successor_lens.features.mine_config import MineConfig
from successor_lens.io import OLD_TAG, TMP_TAG
from successor_lens.runner import stages as stages_mod
from successor_lens.runner.run import run_pipeline
from successor_lens.runner.run_config import RunConfig
from successor_lens.runner.stage_cache import STAGES

pytestmark = pytest.mark.slow  # whole runs and their stage cache

QUICK = MineConfig(null_draws=9)  # the pipeline's mechanics, not its verdicts: a few null draws
CONFIG = RunConfig(seeds=2, steps=150, tasks=RUN_TASKS, scan_tasks=RUN_TASKS, atlas=AtlasConfig(latents=5), mine=QUICK)


def quiet(_line: str) -> None:
    pass


@pytest.fixture(scope="module")
def model():
    return make_run_model()


@pytest.fixture(scope="module")
def first_run(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    return run_pipeline(model, out, CONFIG, progress=False, log=quiet)


def leftovers(folder):
    return [p for p in folder.rglob(".*") if TMP_TAG in p.name or OLD_TAG in p.name]


def test_run_executes_every_stage_and_ends_with_the_atlas(first_run):
    assert first_run.ran == list(STAGES)
    atlas = first_run.out / "atlas"
    for name in ("index.html", "atlas.json", "atlas.schema.json", "report.md", "heads/L1H2.html", "images/heads.png"):
        assert (atlas / name).is_file(), name
    assert (first_run.out / "report.md").read_text() == (atlas / "report.md").read_text()
    assert len(first_run.summary) == 9
    assert first_run.summary[0].startswith("best head by OV succession score: L1H2: 1.000")
    doc = json.loads((atlas / "atlas.json").read_text())
    assert [s["id"] for s in doc["saes"]] == ["mlp0-s0", "mlp0-s1", "embed-s0"]
    assert doc["probes"]["head"] == "L1H2" and doc["logit_head"] == "L1H2"
    summary = json.loads((first_run.out / "summary.json").read_text())
    assert doc["summary"]["lines"] == summary["lines"] == first_run.summary
    for key in ("best_head", "best_score", "runner_up_score", "analysis_head", "analysis_head_reason", "classes_found",
                "classes_found_null", "modal_coverage", "modal_coverage_null", "probe_accuracy", "probe_accuracy_null",
                "probe_feature_cosine", "probe_feature_cosine_null", "arithmetic", "arithmetic_random", "arithmetic_ceiling",
                "overshoot", "overshoot_chance"):
        assert key in summary, key
    assert summary["analysis_head"] == "L1H2" and set(summary["above_null"]) >= {"classes_found", "probe_accuracy", "arithmetic"}


def test_second_run_reuses_every_stage(model, first_run, tmp_path):
    out = copy_run(first_run.out, tmp_path)
    before = (out / "atlas" / "atlas.json").read_bytes()
    lines = []
    again = run_pipeline(model, out, CONFIG, progress=False, log=lines.append)
    assert again.ran == [] and again.cached == list(STAGES)
    assert all("cached" in line for line in lines) and len(lines) == len(STAGES)
    assert (out / "atlas" / "atlas.json").read_bytes() == before


def test_force_reruns_the_stage_and_every_later_one(model, first_run, tmp_path):
    out = copy_run(first_run.out, tmp_path)
    assert run_pipeline(model, out, CONFIG, force=("probes",), progress=False, log=quiet).ran == ["probes", "atlas"]
    with pytest.raises(ValueError, match="unknown stage 'probe'"):
        run_pipeline(model, out, CONFIG, force=("probe",), progress=False, log=quiet)


def test_a_config_change_reruns_only_the_stages_it_reaches(model, first_run, tmp_path):
    out = copy_run(first_run.out, tmp_path)
    atlas_only = RunConfig(**{**CONFIG.__dict__, "atlas": AtlasConfig(latents=3)})
    assert run_pipeline(model, out, atlas_only, progress=False, log=quiet).ran == ["atlas"]
    mining = RunConfig(**{**atlas_only.__dict__, "mine": MineConfig(selectivity=0.6, null_draws=9)})
    assert run_pipeline(model, out, mining, progress=False, log=quiet).ran == ["mine", "probes", "atlas"]


def test_changed_weights_rerun_everything(first_run, tmp_path):
    out = copy_run(first_run.out, tmp_path)
    other = make_run_model()
    other.blocks[0].mlp.W_in.data.mul_(1.01)
    assert run_pipeline(other, out, CONFIG, progress=False, log=quiet).ran == list(STAGES)


def test_interrupted_training_leaves_no_stage_record_and_the_next_run_completes(model, tmp_path, monkeypatch):
    out = tmp_path / "run"
    real, calls = stages_mod.train_sae, []

    def train_then_die(*args, **kwargs):
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(stages_mod, "train_sae", train_then_die)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(model, out, CONFIG, progress=False, log=quiet)
    assert sorted(p.stem for p in (out / ".stages").iterdir()) == ["activations", "heads"]
    assert not (out / "atlas").exists() and leftovers(out) == []
    monkeypatch.setattr(stages_mod, "train_sae", real)
    assert run_pipeline(model, out, CONFIG, progress=False, log=quiet).ran == ["saes", "mine", "incontext", "probes", "atlas"]


def test_interrupted_atlas_keeps_the_previous_atlas_whole(model, first_run, tmp_path, monkeypatch):
    out = copy_run(first_run.out, tmp_path)
    before = {p.relative_to(out): p.read_bytes() for p in (out / "atlas").rglob("*") if p.is_file()}
    real, calls = pages_mod.latent_page, []

    def page_then_die(*args):
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(pages_mod, "latent_page", page_then_die)
    changed = RunConfig(**{**CONFIG.__dict__, "atlas": AtlasConfig(latents=4)})
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(model, out, changed, progress=False, log=quiet)
    after = {p.relative_to(out): p.read_bytes() for p in (out / "atlas").rglob("*") if p.is_file()}
    assert after == before and leftovers(out) == []
    monkeypatch.setattr(pages_mod, "latent_page", real)
    killed = out / f".atlas{TMP_TAG}killed"  # what a SIGKILL mid-build would leave
    killed.mkdir()
    (killed / "index.html").write_text("<html>half")
    assert run_pipeline(model, out, changed, progress=False, log=quiet).ran == ["atlas"]
    assert leftovers(out) == []
    doc = json.loads((out / "atlas" / "atlas.json").read_text())
    assert all(len(s["latents"]) <= 4 for s in doc["saes"])
