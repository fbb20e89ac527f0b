"""The trained model organism: its corpus and training are deterministic from the seed, a killed
training resumes to the same weights, and the shipped weights load, match their manifest, and give
the trained model's own predictions at GPT-2 ids."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from successor_lens.errors import ModelLoadError
from successor_lens.models import organism_train
from successor_lens.models.organism import (
    MANIFEST,
    UNUSED_LOGIT,
    VOCAB_KEY,
    WEIGHTS,
    expand,
    load_organism,
    read_manifest,
    shipped_folder,
    verified_weights,
)
from successor_lens.models.organism_config import OrganismConfig
from successor_lens.models.organism_train import (
    Batches,
    new_model,
    optimizer_for,
    organism_corpus,
    train_organism,
    train_steps,
    used_tokens,
)
from successor_lens.models.planted import gpt2_tokenizer
from successor_lens.models.registry import source_fingerprint, source_kind

PROSE = ["The first argument is the name of the file. The second one is optional and may be left out.",
         "A list is a sequence of values. Each value has an index, starting at zero, and the last one is at the end."]
TINY = dict(n_layers=1, d_model=32, n_heads=2, d_mlp=64, n_ctx=16, seq_len=16, batch=4, warmup=2, documents=120)


@pytest.fixture(scope="module")
def tokenizer():
    return gpt2_tokenizer()


def test_the_corpus_is_a_function_of_the_seed(tokenizer):
    a_docs, a_sha = organism_corpus(OrganismConfig(**TINY), PROSE, tokenizer)
    b_docs, b_sha = organism_corpus(OrganismConfig(**TINY), PROSE, tokenizer)
    _, other = organism_corpus(OrganismConfig(**TINY, seed=1), PROSE, tokenizer)
    assert a_docs == b_docs and a_sha == b_sha
    assert other != a_sha
    text = tokenizer.decode([t for d in a_docs for t in d])
    assert ", " in text and any(day in text for day in ("Monday", "Tuesday", "Friday"))  # ordinal sequences are there
    vocab = used_tokens(a_docs, tokenizer)
    for number in (" 0", " 250", " 500", "0", "500"):  # every task item has a row, used in this small corpus or not
        (token,) = tokenizer.encode(number)
        assert token in vocab


def _steps(tokenizer, n: int):
    config = OrganismConfig(**TINY, steps=n)
    docs, _ = organism_corpus(config, PROSE, tokenizer)
    vocab = used_tokens(docs, tokenizer)
    model = new_model(config, len(vocab))
    losses = train_steps(model, optimizer_for(model, config), Batches(docs, vocab, config), config, 0, n)
    return model, losses


def test_a_few_training_steps_are_bit_identical_on_rerun(tokenizer):
    a, a_losses = _steps(tokenizer, 3)
    b, b_losses = _steps(tokenizer, 3)
    assert a_losses == b_losses and a_losses[-1] < a_losses[0]
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), name
    untrained = new_model(OrganismConfig(**TINY), a.cfg.d_vocab)
    assert not torch.equal(untrained.W_E, a.W_E)  # the steps did change the weights


DIGEST_OF_STEPS = """
import hashlib
from successor_lens.models.organism_config import OrganismConfig
from successor_lens.models.organism_train import Batches, new_model, optimizer_for, organism_corpus, train_steps, used_tokens
from successor_lens.models.planted import gpt2_tokenizer
tok = gpt2_tokenizer()
config = OrganismConfig(documents=400, steps=6, batch=16)
docs, _ = organism_corpus(config, [], tok)
vocab = used_tokens(docs, tok)
model = new_model(config, len(vocab))
train_steps(model, optimizer_for(model, config), Batches(docs, vocab, config), config, 0, 6)
print(hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in model.parameters())).hexdigest())
"""


def test_training_steps_are_bit_identical_in_another_process():
    """The same steps in two fresh interpreters give the same weights (the embedding's backward
    accumulates in a thread-dependent order unless torch's deterministic algorithms are on)."""
    import subprocess
    import sys

    def digest() -> str:
        return subprocess.run([sys.executable, "-c", DIGEST_OF_STEPS], capture_output=True, text=True, check=True).stdout.strip()

    first = digest()
    assert len(first) == 64 and digest() == first


def test_a_killed_training_resumes_to_the_same_weights(tmp_path, monkeypatch):
    config = OrganismConfig(**TINY, steps=4)
    whole = tmp_path / "whole"
    whole.mkdir()
    monkeypatch.setattr(organism_train, "CHECKPOINT_EVERY", 2)
    train_organism(whole, config, PROSE, log=lambda _: None)

    killed = tmp_path / "killed"
    killed.mkdir()
    real = organism_train.train_steps

    def dies_after_first_checkpoint(model, optimizer, batches, cfg, start, stop, on_step=None):
        if start >= 2:
            raise KeyboardInterrupt  # killed after the checkpoint at step 2
        return real(model, optimizer, batches, cfg, start, stop, on_step)

    monkeypatch.setattr(organism_train, "train_steps", dies_after_first_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        train_organism(killed, config, PROSE, log=lambda _: None)
    assert not (killed / WEIGHTS).exists()
    monkeypatch.setattr(organism_train, "train_steps", real)
    said = []
    train_organism(killed, config, PROSE, log=said.append)
    assert any("resuming at step 2" in line for line in said)
    assert (killed / WEIGHTS).read_bytes() == (whole / WEIGHTS).read_bytes()
    assert read_manifest(killed)["loss_every_50"] == read_manifest(whole)["loss_every_50"]


def test_the_shipped_weights_match_their_manifest_and_load(tmp_path):
    manifest = read_manifest()
    assert verified_weights() == shipped_folder() / WEIGHTS
    assert source_kind("organism-gpt2") == "organism"
    fingerprint = source_fingerprint("organism-gpt2")
    model = load_organism()
    assert model.cfg.d_vocab == 50257 and model.cfg.n_layers == manifest["config"]["n_layers"]
    assert source_fingerprint("organism-gpt2") == fingerprint

    damaged = tmp_path / "organism"
    shutil.copytree(shipped_folder(), damaged)
    raw = bytearray((damaged / WEIGHTS).read_bytes())
    raw[-1] ^= 1
    (damaged / WEIGHTS).write_bytes(bytes(raw))
    with pytest.raises(ModelLoadError, match="sha256 differs"):
        load_organism(damaged)
    (damaged / MANIFEST).unlink()
    with pytest.raises(ModelLoadError, match="missing"):
        load_organism(damaged)

    # a manifest whose recipe is out of range, unknown or does not match the weights: one line where it is read
    shutil.copy(shipped_folder() / WEIGHTS, damaged / WEIGHTS)
    for change, fragment in (({"d_model": 10**6}, "above 4096"), ({"n_heads": 0}, "n_heads"), ({"surprise": 1}, "surprise"),
                             ({"n_layers": manifest["config"]["n_layers"] - 1}, "not the manifest's"), ({"d_mlp": 8}, "not the manifest's")):
        (damaged / MANIFEST).write_text(json.dumps({**manifest, "config": {**manifest["config"], **change}}))
        with pytest.raises(ModelLoadError, match=fragment) as err:
            load_organism(damaged)
        assert "\n" not in str(err.value)
    (damaged / MANIFEST).write_text(json.dumps({**manifest, "config": [1]}))
    with pytest.raises(ModelLoadError, match="not a table"):
        load_organism(damaged)


def test_the_loaded_organism_predicts_what_the_compact_model_does(tokenizer):
    """The rows placed at their GPT-2 ids give the compact model's logits on the tokens it knows,
    and every other token sits at UNUSED_LOGIT (never predicted)."""
    manifest = read_manifest()
    state = load_file(str(shipped_folder() / WEIGHTS))
    vocab = state[VOCAB_KEY]
    compact = new_model(OrganismConfig(**manifest["config"]), len(vocab))
    compact.load_state_dict({**compact.state_dict(), **{k: v.float() for k, v in state.items() if k != VOCAB_KEY}})
    full = expand(state, manifest)
    ids = torch.tensor([tokenizer.encode("Monday, Tuesday, Wednesday, 7, 8, 9,")])
    row_of = {int(t): i for i, t in enumerate(vocab)}
    compact_logits = compact(torch.tensor([[row_of[int(t)] for t in ids[0]]]))
    full_logits = full(ids)
    torch.testing.assert_close(full_logits[..., vocab], compact_logits, atol=1e-4, rtol=1e-4)
    unused = torch.ones(50257, dtype=torch.bool)
    unused[vocab] = False
    assert (full_logits[..., unused] == UNUSED_LOGIT).all()
    assert (full_logits[..., vocab].max(-1).values > UNUSED_LOGIT + 20).all()


def test_the_ablation_copies_equal_one_edit_at_a_time():
    """`ablation_effect` runs every ablated head as a copy of the prompts in one forward pass: each
    copy's accuracy equals that head's `ablate_head` edit measured on its own."""
    from successor_lens.probes.edits import Edit, EditSet, ablation_effect, measure
    from successor_lens.probes.incontext import fitting, succession_prompts

    model = load_organism()
    prompts = fitting(model, succession_prompts(model.tokenizer))[::3]
    effect = ablation_effect(model, prompts, "L0H2")
    clean = measure(model, prompts, None)
    assert effect["clean"]["accuracy"] == clean.succession_accuracy
    assert effect["clean"]["loss"] == pytest.approx(clean.succession_loss, abs=1e-5)
    for name, (layer, head) in (("L0H2", (0, 2)), ("L1H0", (1, 0)), ("L3H3", (3, 3))):
        alone = measure(model, prompts, None, EditSet(model, [Edit("ablate_head", layer, head)]))
        got = effect["ablated"] if name == "L0H2" else {"accuracy": clean.succession_accuracy - effect["null_heads"][name]["accuracy_drop"],
                                                        "loss": clean.succession_loss + effect["null_heads"][name]["loss_rise"]}
        assert got["accuracy"] == pytest.approx(alone.succession_accuracy), name
        assert got["loss"] == pytest.approx(alone.succession_loss, abs=1e-5), name
    assert set(effect["null_heads"]) == {f"L{l}H{h}" for l in range(4) for h in range(4)} - {"L0H2"}


def exit_code(argv: list[str]) -> int:
    """The CLI's exit code: argparse exits (SystemExit), a command's checks return it."""
    from successor_lens.cli.main import main

    try:
        return main(argv)
    except SystemExit as stop:
        return int(stop.code or 0)


@pytest.mark.parametrize("argv, says", [
    (["--d-model", "130"], "not a multiple of n_heads"),
    (["--steps", "0"], "must be >= 1"),
    (["--seed", "-1"], "must be >= 0"),
])
def test_bad_training_arguments_are_one_line_and_write_nothing(tmp_path, capsys, argv, says):
    out = tmp_path / "organism"
    assert exit_code(["organism", "--train", "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_training_refuses_a_folder_that_is_not_ours(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert exit_code(["organism", "--train", "--out", str(tmp_path), "--steps", "1"]) == 2
    assert "--out" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
