"""`run` end to end on a tiny planted model: stages, the stage cache, --force, interrupted runs."""

import json

import pytest
from conftest import PLANTED_SMALL, RUN_TASKS, copy_run, make_run_model

from successor_lens.artifacts import latent_pages as pages_mod
from successor_lens.artifacts.atlas_config import AtlasConfig
from successor_lens.features.mine_config import MineConfig
from successor_lens.io import OLD_TAG, TMP_TAG
from successor_lens.runner import stages as stages_mod
from successor_lens.runner.run import model_key, run_pipeline
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


def test_a_fully_cached_run_never_loads_the_model_and_an_edited_model_is_not_the_loaded_one(planted_small_run, tmp_path, monkeypatch, capsys):
    import torch

    from successor_lens.cli.main import main
    from successor_lens.models.loading import LazyModel, load_model
    from successor_lens.models.provenance import model_fingerprint

    tmp_path = copy_run(planted_small_run, tmp_path)  # made by `main(args)` (conftest.py)
    args = [*PLANTED_SMALL, "--out", str(tmp_path)]
    monkeypatch.setattr("successor_lens.models.loading.load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    assert main(args) == 0
    assert "ran nothing" in capsys.readouterr().out
    monkeypatch.undo()

    lazy = LazyModel("planted-gpt2")
    model = load_model("planted-gpt2")
    config = RunConfig(seeds=2, steps=30, atlas=AtlasConfig(latents=2, contexts=8), mine=QUICK)
    assert model.successor_lens_fingerprint == lazy.fingerprint == model_key(model)  # the API and the CLI share the cache
    assert run_pipeline(model, tmp_path, config, progress=False, log=quiet).ran == []
    with torch.no_grad():
        model.W_E[0] += 1.0  # edited after loading: no longer what the cache was computed from ...
    assert model_key(model) not in (lazy.fingerprint, "") and model_key(model) == model_fingerprint(model)
    # ... so its stage keys are those of other weights, and those rerun every stage (test_changed_weights_rerun_everything)


def test_a_fully_cached_cli_run_answers_without_importing_torch_and_only_while_every_stage_is_fresh(planted_small_run, tmp_path, capsys):
    import subprocess
    import sys

    from successor_lens.cli.main import main

    corpus = tmp_path.parent / f"{tmp_path.name}-corpus.txt"
    corpus.write_text("On Monday we counted 1, 2, 3 and 4.\n\nChapter 5 came after chapter 4.\n" * 40)
    tmp_path = copy_run(planted_small_run, tmp_path)
    args = [*PLANTED_SMALL, "--corpus", str(corpus), "--out", str(tmp_path)]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert "ran atlas;" in first  # another corpus than the shared run's: only the atlas reads it
    code = ("import sys; from successor_lens.cli.main import main; code = main(sys.argv[1:]); "
            "print('imported:', sorted(m for m in ('torch', 'transformer_lens', 'sae_lens') if m in sys.modules)); sys.exit(code)")
    again = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "ran nothing" in again.stdout and "imported: []" in again.stdout
    assert again.stdout.split("atlas: ")[1].split("imported:")[0] == first.split("atlas: ")[1]  # the same result lines
    # a stage output changed on disk: the shortcut declines and the pipeline reruns that stage and the later ones
    report = tmp_path / "report.md"
    report.write_text(report.read_text() + "\n")
    assert main(args) == 0
    assert "ran atlas" in capsys.readouterr().out
    # the corpus is known by its content, not its name: new text under the same path reruns the atlas
    corpus.write_text(corpus.read_text().replace("Monday", "Friday"))
    assert main(args) == 0
    assert "ran atlas" in capsys.readouterr().out
    # another request (a different option) is never answered from the last one's keys
    assert main(args[:-2] + ["--latents", "3", "--out", str(tmp_path)]) == 0
    assert "ran atlas" in capsys.readouterr().out
