"""TransformerLens official names (`gpt2`, `EleutherAI/pythia-70m`, ...), loaded through
TransformerLens's own `from_pretrained` and the Hugging Face cache, so a model downloaded once
works offline. Light at import; the fingerprint hashes the cached snapshot's files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from successor_lens.errors import ModelLoadError, foreign_errors
from successor_lens.models.embedded import DEFAULT_MODEL, EMBEDDED
from successor_lens.models.fingerprints import folder_fingerprint

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer, HookedTransformerConfig
else:  # at run time these are Any, so runtime type checkers accept them and the module stays free of torch
    HookedTransformer = HookedTransformerConfig = Any

KNOWN = (*EMBEDDED, "planted-gpt2", "gpt2", "./local-folder")
"""Examples of what --model takes (the embedded models, a control, a hub name, a folder), for the error of an unknown name;
`successor-lens --help` and docs/models.md list the controls."""


def check_hub_name(name: str) -> None:
    """One line when TransformerLens does not know `name`."""
    from transformer_lens.loading_from_pretrained import get_official_model_name

    try:
        get_official_model_name(name)
    except ValueError:
        raise ModelLoadError(f"unknown model {name!r}: pass an embedded model, a control, a TransformerLens name or a folder "
                             f"(e.g. {', '.join(KNOWN)}; docs/models.md lists them)") from None


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")


def _not_available(name: str):
    def message(err: Exception) -> str:
        why = "HF_HUB_OFFLINE=1 is set" if _offline() else type(err).__name__
        return (f"cannot load {name!r} from the Hugging Face hub ({why}) and it is not in the local hub cache: "
                f"connect once to download it, or use --model {DEFAULT_MODEL} (offline)")
    return message


def hub_snapshot_folder(name: str) -> Path:
    """The Hugging Face cache snapshot that `from_pretrained` reads for a TransformerLens name."""
    from huggingface_hub import try_to_load_from_cache
    from transformer_lens.loading_from_pretrained import get_official_model_name

    check_hub_name(name)
    path = try_to_load_from_cache(get_official_model_name(name), "config.json")
    if not isinstance(path, str):
        HubSource().config(name)  # the one-line error of a model that is not cached (offline) ...
        raise ModelLoadError(f"{name!r} is not in the local Hugging Face cache: run once online to download it")  # ... or online, not yet
    return Path(path).parent


class HubSource:
    """Any TransformerLens model name, through the hub or its local cache."""

    kind = "hub"

    def claims(self, name: str) -> bool:
        return True  # the last source asked: any other name is a hub name

    def fingerprint(self, name: str) -> str:
        return folder_fingerprint(self.kind, hub_snapshot_folder(name))

    def config(self, name: str) -> HookedTransformerConfig:
        import torch
        from transformer_lens.loading_from_pretrained import get_pretrained_model_config

        check_hub_name(name)
        with foreign_errors(ModelLoadError, _not_available(name)):
            return get_pretrained_model_config(name, dtype=torch.float32)

    def load(self, name: str) -> HookedTransformer:
        import torch
        from transformer_lens import HookedTransformer

        from successor_lens.models.attributes import note

        check_hub_name(name)
        with foreign_errors(ModelLoadError, _not_available(name)):
            model = HookedTransformer.from_pretrained_no_processing(name, dtype=torch.float32)
        note(model, successor_lens_source=self.describe(name))
        return model

    def describe(self, name: str) -> dict[str, Any]:
        """Where the weights came from, as artefacts record it (the lean path notes the same)."""
        return {"kind": "hub", "source": f"Hugging Face hub: {name}", "hub_snapshot": hub_snapshot_folder(name).name}
