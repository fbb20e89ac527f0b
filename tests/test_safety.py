"""Never lose a user's data: every bad input stops with one line before the model loads, a command
writes only inside folders it owns, one writer per folder, and caches that do not read back whole
are recomputed. (Kill -9 at chosen points, with real processes: test_kill.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_config
from transformer_lens import HookedTransformer

from successor_lens.cli.main import main
from successor_lens.io import atomic_dir, write_json
from successor_lens.runner.folders import HOLDER, LOCK, MARKER, claim, run_folder
from successor_lens.sae_train.checkpoint import Checkpointer, CheckpointError
from successor_lens.sae_train.dictionary import DictionaryError, load_dictionary, save_dictionary
from successor_lens.sae_train.harvest import activations_for
from successor_lens.sae_train.runtime import Runtime
from successor_lens.sae_train.train_config import TrainConfig
from successor_lens.sae_train.train_run import train_sae
from successor_lens.sae_train.trainer import make_sae, train

MODEL = "planted-gpt2"  # its shape is known from its config alone; it is never built here
OURS = {MARKER, LOCK, HOLDER}


def snapshot(root: Path) -> dict[str, tuple]:
    """Every file under root with its size, mtime and mode; every folder with its mode."""
    out = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        out[str(path.relative_to(root))] = (st.st_mode,) if path.is_dir() else (st.st_size, st.st_mtime_ns, st.st_mode)
    return out


@pytest.fixture
def world(tmp_path):
    """A user's folder and file, one of our run folders, corpora and dictionaries, good and bad."""
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "notes.txt").write_text("a user's notes\n")
    (tmp_path / "file.txt").write_text("a user's file\n")
    with run_folder(tmp_path / "run", "run", model=MODEL):  # a run folder of planted-gpt2's
        pass
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "binary.bin").write_bytes(bytes(range(256)) * 8)
    (tmp_path / "specdir").mkdir()

    cfg = TrainConfig(d_sae=16, k=2, steps=1, batch_size=8)
    sae = make_sae(cfg, 256, {"model_name": MODEL, "hook_name": "blocks.0.hook_mlp_out"})
    save_dictionary(sae, tmp_path / "sae_good", {"note": "test"})
    save_dictionary(sae, tmp_path / "sae_nan", {"note": "test"})
    weights = tmp_path / "sae_nan" / "sae_weights.safetensors"
    from safetensors.torch import load_file, save_file

    tensors = load_file(weights)
    tensors["W_dec"][0, 0] = float("nan")
    save_file(tensors, weights)
    for name, header in (("sae_list_header", b"[1, 2, 3]"), ("sae_no_offsets", b'{"W_enc": {"dtype": "F32", "shape": [256, 16]}}'),
                         ("sae_deep_header", b'{"W_enc": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")):
        save_dictionary(sae, tmp_path / name, {"note": "test"})
        (tmp_path / name / "sae_weights.safetensors").write_bytes(len(header).to_bytes(8, "little") + header)
    hostile_files(tmp_path, cfg)
    round_four(tmp_path, cfg)
    return tmp_path


def hostile_files(w: Path, cfg: TrainConfig) -> None:
    """Round three: names read from files, nested and mixed folders, pipes and devices, late binary."""
    (w / "victim").mkdir()
    (w / "victim" / "keep.txt").write_text("a user's file beside our folders\n")
    for folder, hook in (("sae_up", "../victim"), ("sae_abs", str(w / "victim")), ("sae_dot", ".")):
        save_dictionary(make_sae(cfg, 256, {"model_name": MODEL, "hook_name": hook}), w / folder, {"note": "test"})
    converted = claim(w / "converted", "convert")  # a convert folder holding an earlier conversion
    save_dictionary(make_sae(cfg, 256, {"model_name": MODEL, "hook_name": "blocks.0.hook_mlp_out"}), converted / "blocks.0.hook_mlp_out",
                    {"note": "test"})
    os.mkfifo(w / "fifo")
    (w / "late_binary.txt").write_text("Monday, Tuesday, Wednesday.\n" * 4000 + "\0")  # 112 kB, NUL at the end
    (w / "dangling").symlink_to(w / "nowhere")
    with run_folder(w / "mined", "run", model=MODEL) as mined:  # features.safetensors beside a mine.json that names another
        from safetensors.torch import save_file

        save_file({f"f{c}": torch.randn(256) for c in range(10)}, mined / "features.safetensors")
        write_json(mined / "mine.json", {"features_sha256": "0" * 64})
    write_json(w / "run" / "edits" / "mine.json", {"edits": [{"kind": "ablate_head", "layer": 0, "head": 0}]})  # a spec kept in edits/


def round_four(w: Path, cfg: TrainConfig) -> None:
    """Round four: links inside run folders, dictionary fields out of range, special files as
    weights, lying checkpoints (cheap files only: a config and a safetensors header, no model)."""
    with run_folder(w / "linked", "run", model=MODEL):
        pass
    (w / "linked" / "edits").symlink_to(w / "user", target_is_directory=True)  # unpacked from someone's tarball
    save_dictionary(make_sae(cfg, 256, {"model_name": MODEL, "hook_name": "blocks.0.hook_mlp_out"}), w / "sae_k", {"note": "test"})
    doc = json.loads((w / "sae_k" / "cfg.json").read_text())
    (w / "sae_k" / "cfg.json").write_text(json.dumps({**doc, "k": 99}))  # a top-k dictionary of 16 latents with k 99
    save_dictionary(make_sae(cfg, 256, {"model_name": MODEL, "hook_name": "blocks.7.hook_mlp_out"}), w / "sae_hook", {"note": "test"})
    config = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_layer": 2, "n_embd": 64, "n_head": 4, "n_positions": 64, "n_ctx": 64,
              "vocab_size": 300}
    for name in ("ckpt_zero", "ckpt_fifo", "ckpt_lying", "ckpt_huge"):
        (w / name).mkdir()
        (w / name / "config.json").write_text(json.dumps(config if name != "ckpt_huge" else {**config, "n_layer": 10**9}))
        (w / name / "vocab.json").write_text(json.dumps({chr(33 + i): i for i in range(300)}))  # a byte-level BPE of 300 pieces
        (w / name / "merges.txt").write_text("#version: 0.2\n")
    (w / "ckpt_zero" / "model.safetensors").symlink_to("/dev/zero")
    os.mkfifo(w / "ckpt_fifo" / "model.safetensors")
    (w / "ckpt_lying" / "model.safetensors").write_bytes((1 << 40).to_bytes(8, "little") + b'{"a": {}}')
    (w / "ckpt_huge" / "model.safetensors").write_bytes((2).to_bytes(8, "little") + b"{}")


def spec(world: Path, text: str) -> str:
    path = world / f"spec{abs(hash(text))}.json"
    path.write_text(text)
    return str(path)


ABLATE = '{"edits": [{"kind": "ablate_head", "layer": 0, "head": 0}]}'

# (id, argv with {w} for the test folder, a fragment of the one-line message)
BAD_INPUTS = [
    ("atlas into a user's folder", "atlas --sae {w}/sae_good --model M --out {w}/user", "files that successor-lens did not write"),
    ("atlas into a run folder", "atlas --sae {w}/sae_good --model M --out {w}/run", "is a successor-lens run folder"),
    ("atlas onto a file", "atlas --sae {w}/sae_good --model M --out {w}/file.txt", "is a file, not a folder"),
    ("run into a user's folder", "run --model M --out {w}/user", "files that successor-lens did not write"),
    ("train onto a file", "train --model M --out {w}/file.txt", "is a file, not a folder"),
    ("checkpoint every 0", "train --model M --checkpoint-every 0 --out {w}/new", "argument --checkpoint-every: 0 must be >= 1"),
    ("lr NaN", "train --model M --lr nan --out {w}/new", "not a finite number"),
    ("k above d_sae", "train --model M --k 999 --out {w}/new", "--k is 999, outside [1, 128]"),
    ("corpus without --tokens corpus", "train --model M --out {w}/new {w}/empty.txt", "--tokens is succession"),
    ("empty corpus for training", "train --model M --tokens corpus --out {w}/new {w}/empty.txt", "no text in it"),
    ("device foo", "heads --model M --device foo --out {w}/new", "--device 'foo' is not a device"),
    ("cuda without CUDA", "heads --model M --device cuda --out {w}/new", "torch sees no CUDA device"),
    ("unknown model", "heads --model no-such-model --out {w}/new", "unknown model 'no-such-model'"),
    ("head L99H0", "run --model M --head L99H0 --out {w}/new", "head L99H0 does not exist: planted-gpt2 has 4 layers x 4 heads"),
    ("head L-1H-1", "run --model M --head L-1H-1 --out {w}/new", "is not of the form L{layer}H{head}"),
    ("seeds 0", "run --model M --seeds 0 --out {w}/new", "argument --seeds: 0 must be >= 1"),
    ("steps 0", "run --model M --steps 0 --out {w}/new", "argument --steps: 0 must be >= 1"),
    ("latents 0", "run --model M --latents 0 --out {w}/new", "argument --latents: 0 must be >= 1"),
    ("force an unknown stage", "run --model M --force sae --out {w}/new", "invalid choice: 'sae'"),
    ("run on a missing corpus", "run --model M --corpus ./no/such.txt --out {w}/new", "no such file or folder"),
    ("run on a binary corpus", "run --model M --corpus {w}/binary.bin --out {w}/new", "a binary file (a NUL byte at byte 0)"),
    ("contexts 0", "run --model M --contexts 0 --out {w}/new", "argument --contexts: 0 must be >= 1"),
    ("atlas on a missing corpus", "atlas --sae {w}/sae_good --model M --corpus ./no/such.txt --out {w}/new", "no such file or folder"),
    ("nproc 0", "train --model M --nproc 0 --out {w}/new", "argument --nproc: 0 must be >= 1"),
    ("a batch that does not split", "train --model M --nproc 3 --batch-size 64 --out {w}/new", "does not split into 3 equal parts"),
    ("site layer out of range", "train --model M --sites mlp0,blocks.9.hook_resid_post --out {w}/new", "layer 9 but the model has layers 0..3"),
    ("site not a hook", "train --model M --sites mlp0,../x --out {w}/new", "unknown site '../x'"),
    ("site-parallel without sites", "train --model M --site-parallel --out {w}/new", "give --sites"),
    ("wild ctx 5000", "wild --model M --context-tokens 5000 --out {w}/new", "--context-tokens 5000 is outside [16, 256]"),
    ("wild ctx 1 (the old spelling)", "wild --model M --ctx 1 --out {w}/new", "--context-tokens 1 is outside [16, 256]"),
    ("wild head out of range", "wild --model M --head L4H0 --out {w}/new", "head L4H0 does not exist"),
    ("wild on a binary corpus", "wild --model M --corpus {w}/binary.bin --out {w}/new", "a binary file (a NUL byte at byte 0)"),
    ("wild on a missing corpus", "wild --model M --corpus ./no/such.txt --out {w}/new", "no such file or folder"),
    ("probe head out of range", "probe --model M --head L0H9 --out {w}/run", "head L0H9 does not exist"),
    ("probe before mine", "probe --model M --out {w}/run", "features.safetensors not found"),
    ("mine a missing dictionary", "mine --model M --sae {w}/nope --out {w}/new", "no such folder"),
    ("mine selectivity 2", "mine --model M --selectivity 2 --out {w}/new", "--selectivity is 2, outside (0, 1]"),
    ("safetensors header is a list", "atlas --sae {w}/sae_list_header --model M --out {w}/new", "not a table of tensors"),
    ("safetensors header without data_offsets", "atlas --sae {w}/sae_no_offsets --model M --out {w}/new", "no valid shape and data_offsets"),
    ("NaN dictionary", "atlas --sae {w}/sae_nan --model M --out {w}/new", "W_dec holds 1 NaN or inf values"),
    ("dictionary of another width", "mine --model smollm2-135m --sae {w}/sae_good --out {w}/new", "d_in is 256 but the hook has d_model 576"),
    ("edit name of 300 characters", ("edit --model M --spec", '{"name": "' + "x" * 300 + '", "edits": [{"kind": "ablate_head", "layer": 0, "head": 0}]}'),
     "cannot name a file or folder"),
    ("edit name with markup", ("edit --model M --spec", '{"name": "<b>x</b>", "edits": [{"kind": "ablate_head", "layer": 0, "head": 0}]}'), "cannot name a file or folder"),
    ("edit layer true", ("edit --model M --spec", '{"edits": [{"kind": "ablate_head", "layer": true, "head": 0}]}'), "layer must be an integer, not True"),
    ("edit layer out of range", ("edit --model M --spec", '{"edits": [{"kind": "ablate_head", "layer": 4, "head": 0}]}'), "layer is 4, outside [0, 3]"),
    ("edit factor abc", ("edit --model M --spec", '{"edits": [{"kind": "scale_head", "layer": 0, "head": 0, "factor": "abc"}]}'), "factor must be a number"),
    ("edit factor NaN", ("edit --model M --spec", '{"edits": [{"kind": "scale_head", "layer": 0, "head": 0, "factor": NaN}]}'), "factor is nan, not a finite number"),
    ("edit factor 1e308", ("edit --model M --spec", '{"edits": [{"kind": "scale_head", "layer": 0, "head": 0, "factor": 1e308}]}'), "outside [-10000, 10000]"),
    ("edit scale inf", ("edit --model M --spec", '{"edits": [{"kind": "add_feature", "layer": 0, "head": 0, "feature": 1, "scale": Infinity}]}'), "scale is inf"),
    ("edit field of another kind", ("edit --model M --spec", '{"edits": [{"kind": "ablate_head", "layer": 0, "head": 0, "factor": 2}]}'), "'factor' does not apply to ablate_head"),
    ("edit spec is a folder", "edit --model M --spec {w}/specdir --out {w}/new", "is a folder: pass a JSON spec file"),
    ("edit spec is binary", "edit --model M --spec {w}/binary.bin --out {w}/new", "not UTF-8 text"),
    ("edit on an empty corpus", ("edit --model M --corpus {w}/empty.txt --spec", ABLATE), "no text in it"),
    ("edit features before mine", ("edit --model M --spec", '{"edits": [{"kind": "add_feature", "layer": 0, "head": 0, "feature": 1, "scale": 2}]}'),
     "features.safetensors not found"),
    ("edit into a user's folder", ("edit --model M --out {w}/user --spec", ABLATE), "files that successor-lens did not write"),
    # --- round three: a name read from a file used as a path
    ("convert: a hook name with ..", "convert {w}/sae_up --to sae-lens --out {w}/new", "hook name '../victim' cannot name a file or folder"),
    ("convert: an absolute hook name", "convert {w}/sae_abs --to sae-lens --out {w}/new", "cannot name a file or folder"),
    ("convert: the hook name .", "convert {w}/sae_dot --to sae-lens --out {w}/converted", "hook name '.' cannot name a file or folder"),
    ("convert into the folder holding the input", "convert {w}/converted/blocks.0.hook_mlp_out --to sae-lens --out {w}/converted",
     "overlap (converting would replace its own input)"),
    ("edit spec that is its own output", "edit --model M --spec {w}/run/edits/mine.json --out {w}/run", "is the record this edit writes"),
    # --- run folders inside run folders, and one model per run folder
    ("heads into a run's atlas", "heads --model M --out {w}/run/atlas/extra", "lies inside"),
    ("compare into a run folder's subfolder", "compare {w}/run --out {w}/run/cmp", "lies inside"),
    ("heads of another model into a run", "heads --model random-gpt2 --out {w}/run", "holds the run of 'planted-gpt2', not 'random-gpt2'"),
    ("edit of another model into a run", ("edit --model random-gpt2 --out {w}/run --spec", ABLATE), "holds the run of 'planted-gpt2'"),
    # --- malformed structure
    ("edit spec nested 5000 deep", ("edit --model M --spec", '{"edits": ' + "[" * 5000 + "]" * 5000 + "}"), "nested more than 64 deep"),
    ("edit spec of the wrong JSON type", ("edit --model M --spec", "[1, 2]"), "a JSON array, not a JSON object"),
    ("safetensors header nested 100000 deep", "atlas --sae {w}/sae_deep_header --model M --out {w}/new", "nested more than 64 deep"),
    # --- unbounded reads and allocations
    ("corpus a FIFO", "run --model M --corpus {w}/fifo --out {w}/new", "not a regular file"),
    ("corpus /dev/zero", "wild --model M --corpus /dev/zero --out {w}/new", "not a regular file"),
    ("spec a FIFO", "edit --model M --spec {w}/fifo --out {w}/new", "not a regular file"),
    ("spec /dev/zero", "edit --model M --spec /dev/zero --out {w}/new", "not a regular file"),
    ("corpus binary after 64 KiB", "run --model M --corpus {w}/late_binary.txt --out {w}/new", "a NUL byte at byte 112000"),
    ("d_sae of a billion", "train --model M --d-sae 1000000000 --out {w}/new", "GiB is free"),
    ("a batch of a billion", "train --model M --batch-size 1000000000 --out {w}/new", "GiB is free"),
    # --- file-system errors
    ("--out a name too long", "heads --model M --out {w}/" + "x" * 300, "above the 255 a file system allows"),
    ("--out a dangling link", "heads --model M --out {w}/dangling", "which does not exist"),
    ("--out under a file", "heads --model M --out {w}/file.txt/run", "is a file, so no folder can be made under it"),
    # --- pairs that can split
    ("features not the ones mine.json names", "probe --model M --out {w}/mined", "is not the file"),
    # --- round four: links inside run folders, fields out of range, special files as weights, lying checkpoints
    ("heads into a run folder holding a link", "heads --model M --out {w}/linked", "is a link inside the run folder"),
    ("edit into a run folder whose edits/ is a link", ("edit --model M --out {w}/linked --spec", ABLATE), "is a link inside the run folder"),
    ("export into a user's folder", ("edit --model M --export-model {w}/user --out {w}/new --spec", ABLATE), "--export-model"),
    ("a dictionary with k above d_sae", "atlas --sae {w}/sae_k --model M --out {w}/new", "k is 99, but a top-k dictionary of 16 latents"),
    ("a dictionary with a hook the model lacks", "atlas --sae {w}/sae_hook --model M --out {w}/new", "hook"),
    ("weights linked to /dev/zero", "heads --model {w}/ckpt_zero --out {w}/new", "not a regular file"),
    ("weights a FIFO", "heads --model {w}/ckpt_fifo --out {w}/new", "not a regular file"),
    ("lean: a header length past the end", "heads --lean --model {w}/ckpt_lying --out {w}/new", "header"),
    ("lean: a config of 10**9 layers", "heads --lean --model {w}/ckpt_huge --out {w}/new", "n_layers"),
    ("full: a config of 10**9 layers", "heads --model {w}/ckpt_huge --out {w}/new", "n_layers"),
]


@pytest.mark.parametrize("argv, fragment", [pytest.param(a, f, id=i) for i, a, f in BAD_INPUTS])
def test_bad_input_stops_in_one_line_before_the_model_loads_and_touches_nothing(world, argv, fragment, monkeypatch, capsys):
    loaded = []
    monkeypatch.setattr("successor_lens.models.load_model", lambda *a, **k: loaded.append(a) or pytest.fail("the model was loaded"))
    monkeypatch.chdir(world)
    if isinstance(argv, tuple):  # a command ending in --spec, and the spec's text
        argv = argv[0] + " " + spec(world, argv[1]) + ("" if "--out" in argv[0] else " --out {w}/run")
    args = [MODEL if a == "M" else a.replace("{w}", str(world)) for a in argv.split()]
    before = snapshot(world)
    try:
        code = main(args)
    except SystemExit as exit_:  # argparse
        code = exit_.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and fragment in err[0], err
    assert len(err[0].replace(str(world), "W")) <= 280, err[0]  # a line a person reads (paths aside), cut at a word if cut
    assert not loaded
    after = snapshot(world)
    changed = {p for p in set(before) | set(after) if before.get(p) != after.get(p)}
    assert all(Path(p).name in OURS for p in changed), sorted(changed)  # our lock file at most


def test_an_internal_error_keeps_its_traceback(tmp_path, monkeypatch):
    def broken(*a, **k):
        raise ValueError("a bug, not the user's fault")

    monkeypatch.setattr("successor_lens.models.loading.load_model", broken)
    with pytest.raises(ValueError, match="a bug"):
        main(["heads", "--model", MODEL, "--out", str(tmp_path / "run")])


@pytest.mark.slow
def test_an_unwritable_folder_is_one_line(tmp_path):
    """As an ordinary user would meet it (as root, in a process without the capabilities that let
    root write anywhere: util-linux's setpriv)."""
    shared = tmp_path / "shared"
    shared.mkdir()
    locked = shared / "locked"
    locked.mkdir(mode=0o555)
    os.chmod(tmp_path, 0o755)
    os.chmod(shared, 0o755)
    os.chmod(locked, 0o555)
    code = "import sys; from successor_lens.cli.main import main; sys.exit(main(sys.argv[1:]))"
    unprivileged = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"] if os.getuid() == 0 else []
    done = subprocess.run(unprivileged + [sys.executable, "-c", code, "heads", "--model", MODEL, "--out", str(locked / "run")],
                          capture_output=True, text=True, cwd=shared, timeout=300)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [f"successor-lens heads: error: --out {locked / 'run'}: permission denied on {locked}: pass a folder you can write to"]
    assert list(locked.iterdir()) == []


# --- output folders ----------------------------------------------------------------------------


def test_folders_of_ours_are_reused_and_leftovers_of_a_killed_write_removed(tmp_path):
    out = claim(tmp_path / "run")
    assert json.loads((out / MARKER).read_text())["successor_lens_folder"] == "run"
    (out / ".atlas.sl-tmp-abc123").mkdir()
    (out / ".atlas.sl-tmp-abc123" / "index.html").write_text("half")
    (out / "saes").mkdir()
    (out / "saes" / ".cfg.json.sl-tmp-xyz").write_text("half")
    (out / ".hidden-but-not-ours").write_text("keep me")
    with run_folder(out) as again:
        assert again == out
        assert sorted(p.name for p in out.rglob("*") if p.name not in OURS) == [".hidden-but-not-ours", "saes"]
    assert not (out / HOLDER).exists()


def test_atomic_dir_refuses_a_file_and_follows_the_umask(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(NotADirectoryError), atomic_dir(tmp_path / "f"):
        pass
    assert (tmp_path / "f").read_text() == "x"
    old = os.umask(0o022)
    try:
        cfg = TrainConfig(d_sae=16, k=2, steps=1, batch_size=8)
        folder = save_dictionary(make_sae(cfg, 8), tmp_path / "sae", {"note": "test"})
    finally:
        os.umask(old)
    assert folder.stat().st_mode & 0o777 == 0o755
    assert {p.name: p.stat().st_mode & 0o777 for p in folder.iterdir()} == {p.name: 0o644 for p in folder.iterdir()}


def test_json_never_holds_bare_nan(tmp_path):
    path = write_json(tmp_path / "x.json", {"a": float("nan"), "b": [1.0, float("inf")], "c": torch.tensor([float("-inf"), 2.0])})

    def refuse(name):
        raise AssertionError(f"bare {name} in JSON")

    assert json.loads(path.read_text(), parse_constant=refuse) == {"a": None, "b": [1.0, None], "c": [None, 2.0]}


# --- one writer per folder -----------------------------------------------------------------------


HOLD = """
import sys, time
from successor_lens.runner.folders import run_folder
with run_folder(sys.argv[1], "run", "successor-lens run --out somewhere"):
    print("holding", flush=True)
    time.sleep(120)
"""


def test_a_second_command_on_a_busy_folder_stops_in_one_line_naming_the_first(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("successor_lens.models.load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        assert main(["heads", "--model", MODEL, "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"is in use by `successor-lens run --out somewhere` (pid {holder.pid}" in err[0], err
    finally:
        holder.kill()  # SIGKILL: the kernel drops the lock with the process
        holder.wait()
    with run_folder(out) as again:  # free again
        assert again == out


# --- caches that do not read back whole ---------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    return HookedTransformer(tiny_config(d_vocab=300)).eval()


def test_a_truncated_activation_shard_is_recomputed_with_a_notice(tiny, tmp_path, capsys):
    first = activations_for(tiny, "mlp0", "vocab", tmp_path)
    rows = first.rows(torch.arange(300))
    shard = first.folder / "shard_00000.safetensors"
    shard.write_bytes(shard.read_bytes()[:-100])
    again = activations_for(tiny, "mlp0", "vocab", tmp_path)
    notes = [line for line in capsys.readouterr().err.splitlines() if "note:" in line]  # (the rest is tqdm's progress)
    assert len(notes) == 1 and "cached activations unreadable" in notes[0] and "truncated" in notes[0] and "recomputing" in notes[0]
    assert torch.equal(again.rows(torch.arange(300)), rows) and again.meta["data_sha256"] == first.meta["data_sha256"]


def test_checkpoints_are_kept_per_config_and_resume_finds_theirs(tiny, tmp_path):
    long = TrainConfig(d_sae=32, k=4, steps=40, batch_size=64, checkpoint_every=10)
    short = TrainConfig(d_sae=32, k=4, steps=12, batch_size=64, checkpoint_every=4)
    train_sae(tiny, "mlp0", long, tmp_path, Runtime("cpu"), tokens="vocab", progress=False, name="sae")
    train_sae(tiny, "mlp0", short, tmp_path, Runtime("cpu"), tokens="vocab", progress=False, name="sae")
    folders = sorted((tmp_path / "checkpoints" / "sae").iterdir())
    steps = sorted(sorted(p.name for p in f.iterdir()) for f in folders)
    assert steps == [["ckpt_00000008.safetensors", "ckpt_00000012.safetensors"], ["ckpt_00000030.safetensors", "ckpt_00000040.safetensors"]]
    resumed = train_sae(tiny, "mlp0", short, tmp_path, Runtime("cpu"), tokens="vocab", progress=False, name="sae", resume=True)
    assert resumed.result.resumed_from == 12


def test_unusable_checkpoints_and_dictionaries_are_one_line_errors(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    from successor_lens.sae_train.batches import ShuffledBatches

    cfg = TrainConfig(d_sae=32, k=4, steps=10, batch_size=64)
    X = torch.randn(256, 16)

    ckpt = Checkpointer(tmp_path / "a")
    ckpt.folder.mkdir()
    save_file({"sae.W_enc": torch.zeros(16, 32)}, ckpt.folder / "ckpt_00000005.safetensors")  # no metadata
    with pytest.raises(CheckpointError, match="no training state in its metadata"):
        train(cfg, make_sae(cfg, 16), ShuffledBatches(X, 64), checkpointer=ckpt, resume=True, progress=False)

    wrong = TrainConfig(d_sae=32, k=4, steps=10, batch_size=64)
    ckpt_b = Checkpointer(tmp_path / "b")
    train(wrong, make_sae(wrong, 16), ShuffledBatches(X, 64), checkpointer=ckpt_b, stop_after=5, progress=False)
    path = ckpt_b.paths()[-1]
    with safe_open(path, framework="pt") as f:
        tensors, meta = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()  # noqa: SIM118 (safe_open is not iterable)
    tensors["sae.W_dec"] = torch.zeros(31, 16)
    save_file(tensors, path, metadata=meta)
    with pytest.raises(CheckpointError, match=r"tensor sae.W_dec is shape \(31, 16\), expected \(32, 16\)"):
        train(wrong, make_sae(wrong, 16), ShuffledBatches(X, 64), checkpointer=ckpt_b, resume=True, progress=False)

    folder = save_dictionary(make_sae(cfg, 16), tmp_path / "sae", {"note": "test"})
    good = (folder / "cfg.json").read_text()
    for k in (33, 0, -1):  # k against d_sae = 32: a top-k of more latents than it has (or none) is refused where it is read
        (folder / "cfg.json").write_text(json.dumps({**json.loads(good), "k": k}))
        with pytest.raises(DictionaryError, match=r"needs 1 <= k <= 32") as err:
            load_dictionary(folder)
        assert len(str(err.value).splitlines()) == 1 and len(str(err.value)) < 200
    (folder / "cfg.json").write_text("[]")
    with pytest.raises(DictionaryError, match="not an sae-lens config"):
        load_dictionary(folder)


def test_holder_file_goes_with_the_command(tmp_path):
    with run_folder(tmp_path / "r", command="successor-lens heads") as out:
        holder = json.loads((out / HOLDER).read_text())
        assert holder["pid"] == os.getpid() and holder["command"] == "successor-lens heads"
        with run_folder(out) as nested:  # re-entrant within a process
            assert nested == out
        assert (out / HOLDER).exists()
    assert not (out / HOLDER).exists()
