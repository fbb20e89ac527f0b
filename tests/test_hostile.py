"""Hostile inputs, round three: what a file says is never trusted (names, JSON shapes, sizes), the
conversion cache and the stage cache are checked by content, run folders belong to one model and
do not nest, and the machine's own errors are one line. (Bad command lines: the table in
test_safety.py; kills and Ctrl-C with real processes: test_kill.py.)"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from successor_lens.artifacts.atlas_schema import MAX_D_SAE, AtlasFormatError, load_atlas
from successor_lens.artifacts.compare import run_labels
from successor_lens.artifacts.records import RecordError
from successor_lens.artifacts.stage_files import extras
from successor_lens.cli.main import main
from successor_lens.corpus import MAX_PARAGRAPH, local_paragraphs
from successor_lens.errors import ModelLoadError
from successor_lens.filenames import MARKER
from successor_lens.io import TMP_TAG, UnsafePathError, json_depth, read_json, remove_leftovers, safe_component
from successor_lens.models import embedded, fingerprints
from successor_lens.runner.folders import FolderError, bind, claim, run_folder
from successor_lens.runner.stage_cache import StageCache
from successor_lens.sae_train.dictionary import parameters_digest
from successor_lens.sae_train.train_config import TrainConfig
from successor_lens.sae_train.trainer import make_sae

# --- names read from files ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["..", ".", "../victim", "/etc", "a/b", "", ".hidden", "-rf", "x" * 200, "a\0b", 7, None])
def test_a_name_that_is_not_one_safe_component_is_refused(name):
    with pytest.raises(UnsafePathError, match="cannot name a file or folder"):
        safe_component(name, "hook name")


def test_hook_names_and_edit_names_pass(tmp_path):
    for name in ("blocks.0.hook_mlp_out", "layers.0.mlp", "embed_tokens", "scale-L1H2_x0.5"):
        assert safe_component(name, "name") == name


# --- folders of ours: nesting, sweeping, one model --------------------------------------------------


def test_a_sweep_never_enters_a_folder_with_its_own_marker(tmp_path):
    """An inner folder of ours (made before nesting was refused) holds its own lock: its in-flight
    temporary files are not the outer command's to remove."""
    outer = claim(tmp_path / "outer")
    (outer / "inner").mkdir()
    (outer / "inner" / MARKER).write_text(json.dumps({"successor_lens_folder": "run"}))
    inflight = outer / "inner" / f".atlas{TMP_TAG}abc"
    inflight.mkdir()
    stale = outer / f".atlas{TMP_TAG}def"
    stale.mkdir()
    removed = remove_leftovers(outer)
    assert removed == [stale] and inflight.is_dir()


def test_a_folder_records_its_model_and_refuses_another(tmp_path):
    with run_folder(tmp_path / "run", model="planted-gpt2") as out:
        recorded = json.loads((out / MARKER).read_text())["model"]
    assert recorded["name"] == "planted-gpt2" and len(recorded["fingerprint"]) == 16
    with pytest.raises(FolderError, match="holds the run of 'planted-gpt2', not 'random-gpt2'"), run_folder(out, model="random-gpt2"):
        pass
    marker = json.loads((out / MARKER).read_text())
    marker["model"]["fingerprint"] = "0" * 16  # the same name, other weights (a retrained local folder, say)
    (out / MARKER).write_text(json.dumps(marker))
    with pytest.raises(FolderError, match="as it was when the folder was made"):
        bind(out, "planted-gpt2")
    (out / MARKER).write_text(json.dumps({**marker, "model": [1]}))
    with pytest.raises(FolderError, match="the model recorded in its marker"):
        bind(out, "planted-gpt2")


def test_folders_of_ours_do_not_nest(tmp_path):
    claim(tmp_path / "run")
    for inner in ("run/atlas/extra", "run/x"):
        with pytest.raises(FolderError, match="lies inside"):
            claim(tmp_path / inner, "compare")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [MARKER]


# --- JSON of the wrong shape -----------------------------------------------------------------------


def test_json_is_read_within_bounds_and_of_the_shape_asked(tmp_path):
    path = tmp_path / "x.json"
    path.write_text('{"a": "[[[[ not brackets ]]]]", "b": [[1], {"c": 2}]}')
    assert json_depth(path.read_bytes()) == 3 and read_json(path)["b"][1] == {"c": 2}
    path.write_text("[" * 65 + "]" * 65)
    with pytest.raises(Exception, match="nested more than 64 deep"):
        read_json(path, expect=list)
    path.write_text('"a string"')
    with pytest.raises(Exception, match="a JSON string, not a JSON object"):
        read_json(path)
    path.write_text("{}")
    with pytest.raises(Exception, match="above the 0 MiB read"):
        read_json(path, max_bytes=1)


def test_a_stage_manifest_of_the_wrong_shape_is_stale_not_an_error(tmp_path):
    cache = StageCache(tmp_path)
    cache.folder.mkdir()
    for text in ("[]", '{"outputs": 3}', '{"outputs": ["../../etc"], "files": {"a": 1}}', "not json", "[" * 100_000):
        (cache.folder / "heads.json").write_text(text)
        assert cache.manifest("heads") is None and not cache.fresh("heads", "key")


def test_the_stage_cache_checks_content_when_inode_or_ctime_moved(tmp_path):
    """A file swapped for another of the same size with its mtime restored is stale; a copied folder
    (new inodes, same bytes) is fresh."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "heads.json").write_text('{"best": "L1H2"}')
    cache = StageCache(out)
    cache.record("heads", "k", [out / "heads.json"], 1.0)
    assert cache.fresh("heads", "k")
    st = (out / "heads.json").stat()
    swapped = out / "swap.tmp"
    swapped.write_text('{"best": "L3H0"}')  # same size
    os.utime(swapped, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(swapped, out / "heads.json")
    assert (out / "heads.json").stat().st_size == st.st_size and (out / "heads.json").stat().st_mtime_ns == st.st_mtime_ns
    assert not cache.fresh("heads", "k")
    (out / "heads.json").write_text('{"best": "L1H2"}')
    os.utime(out / "heads.json", ns=(st.st_atime_ns, st.st_mtime_ns))
    shutil.copytree(out, tmp_path / "copy")  # copy2: mtimes kept, inodes new
    assert StageCache(tmp_path / "copy").fresh("heads", "k")


def test_a_wild_record_of_another_kind_is_one_line(tmp_path):
    (tmp_path / "wild.json").write_text(json.dumps({"provenance": {}, "head": "L1H2"}))  # a probe-like record, not wild's
    with pytest.raises(RecordError, match="not a record of `successor-lens wild`") as err:
        extras(tmp_path)
    assert "\n" not in str(err.value)


def test_an_atlas_whose_sizes_would_allocate_without_bound_is_refused(tmp_path):
    doc = {"schema_version": "9.0", "model": {"name": "m"}, "saes": [{"d_sae": 16, "latents": [{"index": 3}]}]}
    from successor_lens.artifacts.atlas import SCHEMA_VERSION

    doc["schema_version"] = SCHEMA_VERSION
    path = tmp_path / "atlas.json"
    path.write_text(json.dumps(doc))
    assert load_atlas(path)["saes"][0]["d_sae"] == 16
    for sae in ({"d_sae": MAX_D_SAE * 1000, "latents": []}, {"d_sae": 16, "latents": [{"index": 16}]}, {"d_sae": "16", "latents": []}):
        path.write_text(json.dumps({**doc, "saes": [sae]}))
        with pytest.raises(AtlasFormatError, match="out of range"):
            load_atlas(path)


# --- the conversion cache ---------------------------------------------------------------------------


@pytest.fixture
def fake_cache(tmp_path, monkeypatch):
    """A conversion cache of the embedded model's layout (small files), written as a conversion writes it."""
    monkeypatch.setenv("SUCCESSOR_LENS_CACHE", str(tmp_path / "cache"))
    cache = tmp_path / "cache" / "smollm2-135m"
    (cache / "hf_config").mkdir(parents=True)
    (cache / "tokenizer").mkdir()
    from safetensors.torch import save_file

    save_file({"embed.W_E": torch.arange(64.0).reshape(8, 8)}, cache / "weights.safetensors")
    (cache / "hf_config" / "config.json").write_text(json.dumps({"num_hidden_layers": 30}))
    (cache / "tokenizer" / "tokenizer.json").write_text("{}")
    embedded.write_cache_meta(cache, {"format": embedded.CACHE_FORMAT}, "test")
    return cache


def test_an_intact_cache_verifies_and_any_change_is_one_line_naming_the_folder(fake_cache):
    embedded.verify_cache(fake_cache)
    weights = fake_cache / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01  # one value changed, same size and shape
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match=r"weights.safetensors is not what the conversion wrote \(its sha256 differs") as err:
        embedded.verify_cache(fake_cache)
    assert str(fake_cache) in str(err.value) and "\n" not in str(err.value)
    weights.write_bytes(bytes(data[:-10]))
    with pytest.raises(ModelLoadError, match="truncated or replaced"):
        embedded.verify_cache(fake_cache)


def test_an_edited_cached_config_is_caught_before_it_is_read(fake_cache):
    (fake_cache / "hf_config" / "config.json").write_text(json.dumps({"num_hidden_layers": 31}))  # a valid head would "not exist"
    with pytest.raises(ModelLoadError, match="hf_config/config.json"):
        embedded.verify_cache(fake_cache, only=["hf_config/config.json"])


@pytest.mark.parametrize("text, fragment", [("[]", "a JSON array, not a JSON object"), ("{", "not valid JSON"),
                                            ('{"key": {"format": 4}, "files": [1]}', "lists no files")])
def test_a_cache_meta_of_the_wrong_shape_is_one_line(fake_cache, text, fragment):
    (fake_cache / "meta.json").write_text(text.replace("4", str(embedded.CACHE_FORMAT)))
    with pytest.raises(ModelLoadError, match=fragment):
        embedded.verify_cache(fake_cache)


def test_a_remembered_hash_is_trusted_only_until_verify_cache(fake_cache, monkeypatch):
    """What the quick check trusts, stated: a file edited in place with its mtime put back keeps its
    remembered hash (same inode, size, mtime); `--verify-cache` hashes everything again."""
    embedded.verify_cache(fake_cache)
    config = fake_cache / "hf_config" / "config.json"
    st = config.stat()
    config.write_text(json.dumps({"num_hidden_layers": 99}))
    os.utime(config, ns=(st.st_atime_ns, st.st_mtime_ns))
    embedded.verify_cache(fake_cache)  # trusted by inode, size and mtime
    monkeypatch.setattr(fingerprints, "FULL_CHECK", True)
    with pytest.raises(ModelLoadError, match="sha256 differs"):
        embedded.verify_cache(fake_cache)


def test_a_killed_conversion_is_swept_by_the_next_under_the_lock(fake_cache):
    root = fake_cache.parent
    mine = [root / f".smollm2-135m{TMP_TAG}abc", root / ".smollm2-135m.sl-old-def", root / f".smollm2-135m{TMP_TAG}gguf-xyz"]
    for path in mine:
        path.mkdir()
        (path / "weights.safetensors").write_bytes(b"\0" * 1000)
    other = root / f".gemma3-270m{TMP_TAG}abc"  # another model's conversion, maybe in flight
    other.mkdir()
    with embedded.cache_lock(fake_cache):
        assert not any(p.exists() for p in mine) and other.is_dir()


def test_an_unwritable_cache_is_one_line_before_the_conversion(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    cache = tmp_path / "file" / "cache" / "smollm2-135m"
    with pytest.raises(ModelLoadError, match="cannot write the model cache there .* set SUCCESSOR_LENS_CACHE"), embedded.cache_lock(cache):
        pass


def test_a_memo_of_the_wrong_shape_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("SUCCESSOR_LENS_CACHE", str(tmp_path))
    f = tmp_path / "data.bin"
    f.write_bytes(b"abc")
    for memo in ("[1, 2]", "{not json", '{"x": 5}'):
        (tmp_path / "file_digests.json").write_text(memo)
        assert fingerprints.remembered_sha256([f]) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


# --- corpora and sizes ------------------------------------------------------------------------------


def test_a_one_line_corpus_reaches_the_tokenizer_in_bounded_pieces(tmp_path):
    text = "one two three four " * 60_000  # 1.1 MB, no newline
    (tmp_path / "big.txt").write_text(text)
    pieces = list(local_paragraphs([tmp_path / "big.txt"]))
    assert max(len(p) for p in pieces) == MAX_PARAGRAPH and "".join(pieces) == text


# --- the machine's own errors ----------------------------------------------------------------------


@pytest.mark.parametrize("code, fragment", [(errno.ENOSPC, "No space left on device: free space on that disk"),
                                            (errno.EROFS, "Read-only file system: pass a folder on a writable file system"),
                                            (errno.ENAMETOOLONG, "File name too long: pass a shorter path")])
def test_file_system_errors_are_one_line_naming_the_path(tmp_path, monkeypatch, capsys, code, fragment):
    def full(args):
        raise OSError(code, os.strerror(code), str(tmp_path / "run" / "heads.json"))

    monkeypatch.setattr("successor_lens.cli.heads_cmd.run", full)
    assert main(["heads", "--model", "planted-gpt2", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(tmp_path / "run" / "heads.json") in err[0] and fragment in err[0], err


def test_other_os_errors_keep_their_traceback_and_ctrl_c_is_one_line(tmp_path, monkeypatch, capsys):
    def bug(args):
        raise OSError(errno.EBADF, "Bad file descriptor")

    monkeypatch.setattr("successor_lens.cli.heads_cmd.run", bug)
    with pytest.raises(OSError, match="Bad file descriptor"):
        main(["heads", "--model", "planted-gpt2", "--out", str(tmp_path / "run")])

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr("successor_lens.cli.heads_cmd.run", interrupted)
    assert main(["heads", "--model", "planted-gpt2", "--out", str(tmp_path / "run")]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "interrupted" in err[0] and "rerun the same command" in err[0]


# --- pairs ------------------------------------------------------------------------------------------


def test_compare_keeps_every_run_it_is_given():
    runs = [{"summary": {"model": "planted-gpt2"}, "folder": Path("a/run1")}, {"summary": {"model": "planted-gpt2"}, "folder": Path("b/run1")},
            {"summary": {"model": "planted-gpt2"}, "folder": Path("c/run2")}, {"summary": {"model": "gpt2"}, "folder": Path("d")}]
    labels = run_labels(runs)
    assert len(set(labels)) == 4 and labels[3] == "gpt2" and labels[2] == "planted-gpt2 (run2)"


def test_a_dictionary_is_identified_by_its_parameters():
    cfg = TrainConfig(d_sae=16, k=2, steps=1, batch_size=8)
    a, b = make_sae(cfg, 8), make_sae(cfg, 8)
    assert parameters_digest(a) == parameters_digest(b)  # seeded: the same initialisation
    with torch.no_grad():
        b.W_dec[0, 0] += 1e-6
    assert parameters_digest(a) != parameters_digest(b)


def test_a_truncated_gguf_is_one_line_naming_it_and_the_fix(tmp_path, monkeypatch):
    (real,) = embedded.embedded_parts("smollm2-135m")
    truncated = tmp_path / real.name
    with open(real, "rb") as f:
        truncated.write_bytes(f.read(real.stat().st_size // 3))
    monkeypatch.setattr(embedded, "embedded_parts", lambda name: [truncated])
    with pytest.raises(ModelLoadError, match="cannot read this GGUF .*truncated or corrupt; reinstall with `pip install") as err:
        embedded.load_embedded_hf("smollm2-135m")
    assert str(truncated) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("hook", ["blocks.40.hook_mlp_out", "not a hook", ""])
def test_atlas_checks_the_dictionarys_hook_before_the_model_loads_and_before_out_is_made(tmp_path, hook, monkeypatch, capsys):
    from successor_lens.models import loading
    from successor_lens.sae_train.dictionary import save_dictionary

    cfg = TrainConfig(d_sae=16, k=2, steps=1, batch_size=8)
    save_dictionary(make_sae(cfg, 256, {"model_name": "planted-gpt2", "hook_name": hook}), tmp_path / "sae", {"note": "test"})
    monkeypatch.setattr(loading, "load_model", lambda *a, **k: pytest.fail("the model loaded"))
    capsys.readouterr()
    assert main(["atlas", "--sae", str(tmp_path / "sae"), "--model", "planted-gpt2", "--corpus", "succession-lists", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "hook" in err[0] and not (tmp_path / "out").exists()
