"""Local Hugging Face checkpoint folders (`./path` with config.json, safetensors weights and
tokenizer files) of any architecture TransformerLens converts (GPT-2, GPT-NeoX/Pythia, Llama,
Gemma, ...). Light at import; the fingerprint hashes the folder's weight files and config."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from successor_lens.errors import ModelLoadError, first_line, foreign_errors
from successor_lens.io import read_json
from successor_lens.models.fingerprints import WEIGHT_PROCESSING, folder_fingerprint, remembered_sha256

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer, HookedTransformerConfig
else:  # at run time these are Any, so runtime type checkers accept them and the module stays free of torch
    HookedTransformer = HookedTransformerConfig = Any


def local_folder(name: str) -> Path:
    """A checkpoint folder as `save_pretrained` writes it: config.json, safetensors weights, a tokenizer."""
    path = Path(name).expanduser()
    if not path.is_dir():
        raise ModelLoadError(f"--model {name}: no such folder: give a Hugging Face checkpoint folder (config.json, *.safetensors, tokenizer files)")
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"--model {name}: no config.json: give the folder `save_pretrained` wrote")
    if not list(path.glob("*.safetensors")):
        raise ModelLoadError(f"--model {name}: no *.safetensors weights (pickled .bin weights are not loaded): re-save with safe_serialization=True")
    if not any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")):
        raise ModelLoadError(f"--model {name}: no tokenizer files: save the tokenizer into the folder too (tokenizer.save_pretrained)")
    return path


@contextmanager
def _neutral_alias(path: Path) -> Iterator[str]:
    """The folder under a neutral name: TransformerLens picks hard-coded configs by substrings of
    the name ("llama", "gemma", ...), which must come from the folder's config.json instead."""
    tmp = Path(tempfile.mkdtemp(prefix="successor-lens-checkpoint-"))
    try:
        (tmp / "checkpoint").symlink_to(path.resolve(), target_is_directory=True)
        yield str(tmp / "checkpoint")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _local_config(path: Path) -> HookedTransformerConfig:
    import torch
    from transformer_lens.loading_from_pretrained import get_pretrained_model_config
    from transformers import AutoConfig

    from successor_lens.models.hf_configs import check_shape, gemma3_config

    read_json(path / "config.json", "config", dict, ModelLoadError, "re-save the checkpoint with save_pretrained", max_bytes=16 << 20)
    with foreign_errors(ModelLoadError, lambda err: f"--model {path}: its config.json does not load ({first_line(err)}): fix it or re-save"):
        hf_config = AutoConfig.from_pretrained(path)
    if (getattr(hf_config, "architectures", None) or [None])[0] == "Gemma3ForCausalLM":
        with foreign_errors(ModelLoadError, lambda err: f"--model {path}: its Gemma 3 config is incomplete ({first_line(err)}): fix config.json"):
            cfg = gemma3_config(hf_config, path.resolve().name)  # TransformerLens configures Gemma 3 by name only
    else:
        with _neutral_alias(path) as alias, foreign_errors(ModelLoadError, lambda err: (
                f"--model {path}: TransformerLens cannot configure it ({first_line(err)}): is its architecture one TransformerLens supports?")):
            cfg = get_pretrained_model_config(alias, dtype=torch.float32)
        cfg.model_name = path.resolve().name
    cfg.tokenizer_name = str(path)
    check_shape(cfg, path)
    return cfg


class LocalSource:
    """A folder on disk (or a name starting with `.`, `/` or `~`)."""

    kind = "local"

    def claims(self, name: str) -> bool:
        return Path(name).expanduser().is_dir() or name.startswith((".", "/", "~"))

    def fingerprint(self, name: str) -> str:
        return folder_fingerprint(self.kind, local_folder(name))

    def config(self, name: str) -> HookedTransformerConfig:
        return _local_config(local_folder(name))

    def load(self, name: str) -> HookedTransformer:
        import torch
        from transformer_lens import HookedTransformer
        from transformer_lens.loading_from_pretrained import get_pretrained_state_dict
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from successor_lens.models.attributes import note

        path = local_folder(name)
        cfg = _local_config(path)
        with foreign_errors(ModelLoadError, lambda err: (
                f"--model {path}: its weights do not load as its config.json describes ({first_line(err)}): "
                "re-save the folder with save_pretrained")):
            hf_model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(path)
            with _neutral_alias(path) as alias:
                state = get_pretrained_state_dict(alias, cfg, hf_model)
            model = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False)
            model.load_and_process_state_dict(state, **WEIGHT_PROCESSING)
        note(model, successor_lens_source=self.describe(name))
        return model

    def describe(self, name: str) -> dict[str, Any]:
        """Where the weights came from, as artefacts record it (the lean path notes the same)."""
        path = local_folder(name)
        return {"kind": "local", "source": f"local folder {path.resolve()}", "weights_sha256": remembered_sha256(sorted(path.glob("*.safetensors"))),
                "architecture": _local_config(path).original_architecture}
