"""kill -9 at chosen points, with real processes, then a rerun: the artefacts are consistent (every
SAE is the one its mining and atlas describe), the previous atlas survives a kill mid-build, and
two runs on one folder end cleanly; and the same run fully cached answers without the model or
torch. On the session's small `planted-gpt2` run (conftest.py), built once for this file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import PLANTED_SMALL, copy_run

from successor_lens.artifacts.atlas_config import AtlasConfig
from successor_lens.features.mine_config import MineConfig
from successor_lens.io import OLD_TAG, TMP_TAG
from successor_lens.runner.run import model_key, run_pipeline
from successor_lens.runner.run_config import RunConfig
from successor_lens.sae_train.dictionary import weights_digest

pytestmark = pytest.mark.slow  # whole runs, killed with SIGKILL and rerun

RUN = PLANTED_SMALL[:-2]  # integrity, not findings: the session's small planted run (conftest.py)
STEPS = int(PLANTED_SMALL[-1])
CODE = "import sys; from successor_lens.cli.main import main; sys.exit(main(sys.argv[1:]))"


def start(*args: str, ctrl_c: bool = False) -> subprocess.Popen:
    """The CLI in a process of its own. `ctrl_c`: with SIGINT's default disposition, as a terminal
    gives it (a job started in the background of a script, as CI may be, inherits SIGINT ignored)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    restore = (lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)) if ctrl_c else None
    return subprocess.Popen([sys.executable, "-c", CODE, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=restore)


def finish(proc: subprocess.Popen, timeout: float = 600) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def wait_for(condition, proc: subprocess.Popen, timeout: float = 300, every: float = 0.01) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"the process ended first: {proc.communicate()}"
        assert time.monotonic() < end, "timed out"
        time.sleep(every)


def consistent(out: Path, steps: int) -> None:
    """Every SAE trained with `steps` steps, and the very one mine.json and the atlas describe;
    no temporary leftovers; every page the atlas names exists."""
    mine, embed = json.loads((out / "mine.json").read_text()), json.loads((out / "mine_embed.json").read_text())
    atlas = json.loads((out / "atlas" / "atlas.json").read_text())
    described = {s["id"]: s["mining"]["weights_sha256"] for s in atlas["saes"]}
    expected = {"mlp0-s0": mine["per_sae"][0], "mlp0-s1": mine["per_sae"][1], "embed-s0": embed["per_sae"][0]}
    for name, mined in expected.items():
        prov = json.loads((out / "saes" / name / "provenance.json").read_text())
        assert prov["train_config"]["steps"] == prov["steps_done"] == steps, name
        assert weights_digest(out / "saes" / name) == mined["weights_sha256"] == described[name], name
    assert not [p for p in out.rglob("*") if TMP_TAG in p.name or OLD_TAG in p.name]
    pages = [r["page"] for s in atlas["saes"] for r in s["latents"]] + [r["page"] for r in atlas["heads"]["pages"]]
    assert pages and all((out / "atlas" / p).is_file() for p in pages)


@pytest.fixture(scope="module")
def done(planted_small_run) -> Path:
    consistent(planted_small_run, STEPS)
    return planted_small_run



def test_kill_during_training_then_a_plain_rerun_retrains_and_redescribes(done, tmp_path):
    out = copy_run(done, tmp_path)
    old = weights_digest(out / "saes" / "mlp0-s0")
    proc = start(*RUN, "--steps", "20", "--out", str(out))
    wait_for(lambda: weights_digest(out / "saes" / "mlp0-s0") not in (old, None), proc)  # one SAE rewritten with 20 steps
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert json.loads((out / "saes" / "mlp0-s0" / "provenance.json").read_text())["steps_done"] == 20
    assert sorted(p.stem for p in (out / ".stages").glob("*.json")) == ["activations", "heads", "incontext"]  # incontext does not read the SAEs

    code, stdout, stderr = finish(start(*RUN, "--steps", str(STEPS), "--out", str(out)))
    assert code == 0, stderr[-3000:]
    assert "ran saes, mine, probes, atlas; cached heads, activations, incontext" in stdout
    consistent(out, STEPS)


def test_kill_during_the_atlas_build_keeps_the_old_atlas_whole(done, tmp_path):
    out = copy_run(done, tmp_path)
    old = (out / "atlas" / "atlas.json").read_text()
    proc = start(*RUN, "--steps", str(STEPS), "--latents", "3", "--out", str(out))  # only the atlas stage changes
    wait_for(lambda: any(out.glob(f".atlas{TMP_TAG}*/images")), proc, every=0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (out / "atlas" / "atlas.json").read_text() == old and (out / "atlas" / "index.html").is_file()
    assert any(out.glob(f".atlas{TMP_TAG}*"))  # what the kill left behind ...

    code, stdout, stderr = finish(start(*RUN, "--steps", str(STEPS), "--latents", "3", "--out", str(out)))
    assert code == 0, stderr[-3000:]
    assert "ran atlas; cached heads, activations, saes, mine, incontext, probes" in stdout
    consistent(out, STEPS)  # ... is gone, and the new atlas is whole
    assert all(len(s["latents"]) == 3 for s in json.loads((out / "atlas" / "atlas.json").read_text())["saes"])


def test_two_runs_on_one_folder_one_stops_in_one_line_and_the_other_completes(done, tmp_path):
    out = copy_run(done, tmp_path)
    first = start(*RUN, "--steps", str(STEPS), "--force", "atlas", "--out", str(out))
    wait_for(lambda: (out / ".successor-lens.holder.json").is_file(), first)
    code, _, err = finish(start(*RUN, "--steps", str(STEPS), "--out", str(out)))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "is in use by" in err and f"(pid {first.pid}," in err, err
    code, stdout, stderr = finish(first)
    assert code == 0 and "ran atlas" in stdout, stderr[-3000:]
    consistent(out, STEPS)


def test_ctrl_c_exits_130_in_one_line_and_leaves_what_a_kill_leaves(done, tmp_path):
    out = copy_run(done, tmp_path)
    old = (out / "atlas" / "atlas.json").read_text()
    proc = start(*RUN, "--steps", str(STEPS), "--force", "atlas", "--out", str(out), ctrl_c=True)
    wait_for(lambda: any(out.glob(f".atlas{TMP_TAG}*/images")), proc, every=0.005)
    proc.send_signal(signal.SIGINT)
    code, _, err = finish(proc)
    lines = [line for line in err.splitlines() if "successor-lens" in line]  # (the rest is tqdm's progress)
    assert code == 130 and "Traceback" not in err and len(lines) == 1 and "interrupted" in lines[0], err[-3000:]
    assert (out / "atlas" / "atlas.json").read_text() == old  # the old atlas whole, as after a kill ...
    assert sorted(p.stem for p in (out / ".stages").glob("*.json")) == ["activations", "heads", "incontext", "mine", "probes", "saes"]
    assert not [p for p in out.rglob("*") if TMP_TAG in p.name or OLD_TAG in p.name]  # ... and nothing half-written left
    # (a rerun from exactly this state, the atlas's manifest gone: test_kill_during_the_atlas_build_keeps_the_old_atlas_whole)


def test_a_kill_during_a_standalone_mine_never_leaves_a_pair_that_is_used_split(done, tmp_path):
    """mine.json names the sha256 of features.safetensors: wherever the kill lands, the directions a
    later `probe` or `edit` reads are the ones mine.json describes, or it stops in one line."""
    from successor_lens.errors import UserError
    from successor_lens.features.mine_run import load_directions
    from successor_lens.io import file_sha256

    out = copy_run(done, tmp_path)
    features = out / "features.safetensors"
    before = features.stat().st_mtime_ns
    proc = start("mine", "--model", "planted-gpt2", "--sae", str(out / "saes" / "mlp0-s1"), "--null-draws", "9", "--out", str(out))
    wait_for(lambda: features.stat().st_mtime_ns != before, proc, every=0.001)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    try:
        directions = load_directions(features)
    except UserError as err:
        assert "is not the file" in str(err) and "\n" not in str(err)
    else:
        assert json.loads((out / "mine.json").read_text())["features_sha256"] == file_sha256([features]) and len(directions) == 10


# The same shared run, fully cached (here beside the kill tests, so that one worker builds it once)

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
    config = RunConfig(seeds=2, steps=30, atlas=AtlasConfig(latents=2, contexts=8), mine=MineConfig(null_draws=9))
    assert model.successor_lens_fingerprint == lazy.fingerprint == model_key(model)  # the API and the CLI share the cache
    assert run_pipeline(model, tmp_path, config, progress=False, log=lambda _line: None).ran == []
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
