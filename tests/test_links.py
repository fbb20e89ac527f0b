"""Never write through a link inside a run folder: a subfolder (or file) of ours that is a symbolic
link, as one unpacked from someone's tarball can be, stops the write in one line, and what the
link points to is left as it was. The run folder itself may be a link: the user chose it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from safetensors.torch import save_file

from successor_lens.cli.main import main
from successor_lens.filenames import ACTIVATIONS, ATLAS, CHECKPOINTS, EDITS, HEADS, SAES, STAGES, TUNE
from successor_lens.io import UnsafePathError, atomic_dir, atomic_path, write_json
from successor_lens.runner.folders import LOCK, FolderError, run_folder
from successor_lens.sae_train.checkpoint import Checkpointer

SUBFOLDERS = [SAES, f"{SAES}/mlp0-s0", CHECKPOINTS, f"{ACTIVATIONS}/mlp0", ATLAS, f"{ATLAS}/images", EDITS, TUNE, f"{TUNE}/records", STAGES]
"""Every subfolder a stage, `edit`, `tune` or the atlas writes."""


def tree(root: Path) -> dict[str, tuple]:
    return {str(p.relative_to(root)): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in sorted(root.rglob("*"))}


@pytest.fixture
def elsewhere(tmp_path):
    """A user's folder outside the run folder, with a file of theirs."""
    folder = tmp_path / "users-folder"
    folder.mkdir()
    (folder / "notes.txt").write_text("the user's notes\n")
    (folder / "heads.json").write_text('{"the user": "their file"}\n')
    return folder


@pytest.mark.parametrize("sub", SUBFOLDERS)
def test_a_linked_subfolder_is_never_written_through(tmp_path, elsewhere, sub):
    run = tmp_path / "run"
    before = tree(elsewhere)
    with run_folder(run, "run"):
        link = run / sub
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(elsewhere, target_is_directory=True)
        writes = [lambda: atomic_path(link / "heads.json").__enter__(), lambda: atomic_dir(link).__enter__(),
                  lambda: write_json(link / "x" / "meta.json", {}), lambda: Checkpointer(link).save(1, {}, {})]
        for write in writes:
            with pytest.raises(UnsafePathError, match="is a link inside the run folder") as err:
                write()
            assert len(str(err.value).splitlines()) == 1
    assert tree(elsewhere) == before and link.is_symlink()


def test_a_linked_file_is_refused_and_a_linked_run_folder_is_the_users_choice(tmp_path, elsewhere):
    real = tmp_path / "real-run"
    real.mkdir()
    chosen = tmp_path / "chosen"
    chosen.symlink_to(real, target_is_directory=True)
    with run_folder(chosen, "run"):
        write_json(chosen / "summary.json", {"ok": 1})  # through the run folder's own link: the user's choice
        (chosen / HEADS).symlink_to(elsewhere / "heads.json")
        with pytest.raises(UnsafePathError, match="is a link"):
            write_json(chosen / HEADS, {"ours": 1})
    assert (real / "summary.json").is_file() and (elsewhere / "heads.json").read_text() == '{"the user": "their file"}\n'
    with pytest.raises(FolderError, match="heads.json is a link inside the run folder"):  # named when the folder is claimed, before any work
        run_folder(real, "run").__enter__()
    (real / HEADS).unlink()
    # a file where a folder of ours must be
    with run_folder(real, "run"):
        (real / SAES).write_text("not a folder")
        with pytest.raises(UnsafePathError, match="is not a folder"):
            save_file({}, atomic_path(real / SAES / "x" / "w.safetensors").__enter__())


def test_a_linked_lock_file_is_refused(tmp_path, elsewhere):
    run = tmp_path / "run"
    with run_folder(run, "run"):
        pass
    (run / LOCK).unlink()
    (run / LOCK).symlink_to(elsewhere / "notes.txt")
    assert main(["heads", "--model", "planted-gpt2", "--out", str(run)]) == 2
    assert (elsewhere / "notes.txt").read_text() == "the user's notes\n"


def test_a_command_stops_in_one_line_at_a_linked_file_and_leaves_its_target(tmp_path, elsewhere, capsys):
    run = tmp_path / "run"
    assert main(["heads", "--model", "planted-gpt2", "--out", str(run)]) == 0
    os.remove(run / HEADS)
    (run / HEADS).symlink_to(elsewhere / "heads.json")
    before = tree(elsewhere)
    capsys.readouterr()
    assert main(["heads", "--model", "planted-gpt2", "--out", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a link inside the run folder" in err[0]
    assert tree(elsewhere) == before
