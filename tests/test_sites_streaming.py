"""Many hook sites in one job, and the streaming corpus harvest: one job with 3 sites trains the
same SAEs as 3 single-site jobs with the same seeds, from one forward pass per batch; the streamed
activations equal the in-memory computation; the harvest never holds the corpus."""

from __future__ import annotations

import itertools

import pytest
import torch
from safetensors.torch import load_file
from transformer_lens import HookedTransformer

from successor_lens.cli.main import main
from successor_lens.corpus import cut_windows, load_texts
from successor_lens.models.loading import load_model
from successor_lens.sae_train.harvest import harvest

SITES = ["mlp0", "embed", "blocks.1.hook_resid_post"]
TRAIN = ["train", "--model", "planted-gpt2", "--tokens", "corpus", "--d-sae", "64", "--k", "4", "--steps", "25", "--batch-size", "64"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    days = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
    paragraphs = [f"Chapter {i}. On {days[i % 7]} the {i}th we counted {i}, {i + 1}, {i + 2} and went on to chapter {i + 1}."
                  for i in range(1, 240)]
    path.write_text("\n\n".join(paragraphs) + "\n")
    return path


def forward_passes(monkeypatch) -> list[int]:
    calls = []
    original = HookedTransformer.run_with_cache

    def counted(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(HookedTransformer, "run_with_cache", counted)
    return calls


def sae_weights(out, site: str) -> dict[str, torch.Tensor]:
    return load_file(out / f"sae-{site}-corpus-topk-s0" / "sae_weights.safetensors")


@pytest.mark.slow
def test_one_job_with_three_sites_equals_three_single_site_jobs(corpus, tmp_path, monkeypatch, capsys):
    calls = forward_passes(monkeypatch)
    assert main(TRAIN + [str(corpus), "--sites", ",".join(SITES), "--out", str(tmp_path / "many")]) == 0
    many_passes = len(calls)
    out = capsys.readouterr().out
    assert all(f"{site} SAE (topk" in out for site in SITES)
    for site in SITES:
        calls.clear()
        arg = ["--sites", site] if "." in site else ["--site", site]
        assert main(TRAIN + [str(corpus), *arg, "--out", str(tmp_path / site)]) == 0
        single = sae_weights(tmp_path / site, site)
        for key, value in sae_weights(tmp_path / "many", site).items():
            assert torch.equal(value, single[key]), (site, key)
    # the harvest ran every site from the same forward passes: as many as one site's harvest needs
    assert many_passes == len(calls) > 1


def test_streamed_activations_equal_the_in_memory_computation(corpus, tmp_path):
    model = load_model("planted-gpt2")
    found = harvest(model, ["mlp0", "blocks.1.hook_resid_post"], "corpus", tmp_path, corpus=str(corpus))
    # the documented window rule, written out: paragraphs each followed by a blank line, cut into
    # windows of 128 whose first token is BOS (GPT-2's tokenizer: the model prepends one)
    bos = model.tokenizer.bos_token_id
    ids = [t for text in load_texts(str(corpus)) for t in model.tokenizer.encode(text + "\n\n", add_special_tokens=False)]
    body = min(128, model.cfg.n_ctx) - 1
    windows = torch.tensor(ids[: len(ids) // body * body]).view(-1, body)
    windows = torch.cat([torch.full((len(windows), 1), bos), windows], 1)
    assert len(windows) > 16  # more windows than one harvest batch: the stream really went batch by batch
    _, cache = model.run_with_cache(windows, names_filter=lambda n: n in ("blocks.0.hook_mlp_out", "blocks.1.hook_resid_post"))
    for site, hook in (("mlp0", "blocks.0.hook_mlp_out"), ("blocks.1.hook_resid_post", "blocks.1.hook_resid_post")):
        rows = torch.cat(list(found[site].chunks()))
        assert rows.shape == (windows.numel(), model.cfg.d_model)
        assert torch.allclose(rows, cache[hook].reshape(-1, model.cfg.d_model), atol=1e-4, rtol=1e-5), site
        assert found[site].meta["corpus"] == str(corpus) and found[site].meta["hook"] == hook


def test_the_window_stream_never_holds_the_corpus():
    class Tok:
        def encode(self, text, add_special_tokens=False):
            return [len(text)] * 10

    endless = itertools.repeat("a paragraph")  # a corpus with no end: only a lazy harvest finishes
    chunks = (Tok().encode(text) for text in endless)
    rows = list(cut_windows(chunks, 8, bos=None, max_tokens=800))
    assert len(rows) == 100 and all(r.shape == (8,) for r in rows)
    with_bos = list(cut_windows((Tok().encode(t) for t in endless), 8, bos=7, max_tokens=70))
    assert len(with_bos) == 10 and all(r[0] == 7 and r.shape == (8,) for r in with_bos)


def test_bad_sites_are_refused_before_any_model_loads(tmp_path, capsys):
    assert main(["train", "--sites", "mlp0,blocks.99.hook_resid_post", "--out", str(tmp_path)]) == 2
    assert "layer 99" in capsys.readouterr().err
    assert main(["train", "--sites", "mlp0,mlp0", "--out", str(tmp_path)]) == 2
    assert main(["train", "--sites", "mlp0;rm -rf", "--out", str(tmp_path)]) == 2
    assert main(["train", "--site", "mlp0", "--sites", "embed", "--out", str(tmp_path)]) == 2
