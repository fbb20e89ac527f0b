"""The generated control models, `planted-gpt2` (a known answer), `random-gpt2` (a null) and
`random-NAME` for each embedded model (the whole-pipeline null: the embedded model's architecture
and its own tokenizer, every weight random), as a model source. Light at import: they are built by
`planted.py` (imported when one loads), and fingerprinted by that file's source (a seed and the
code fix every weight) and, for `random-NAME`, by the embedded model whose tokenizer it reads."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any

from successor_lens.io import digest
from successor_lens.models.embedded import EMBEDDED, EmbeddedSource
from successor_lens.models.fingerprints import remembered_sha256

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer, HookedTransformerConfig
else:  # at run time these are Any, so runtime type checkers accept them and the module stays free of torch
    HookedTransformer = HookedTransformerConfig = Any

PLANTED, RANDOM = "planted-gpt2", "random-gpt2"
RANDOM_LIKE = {f"random-{name}": name for name in EMBEDDED}
"""Whole-pipeline nulls: `random-smollm2-135m` has SmolLM2's architecture and tokenizer, random weights."""
CONTROLS = (PLANTED, RANDOM, *RANDOM_LIKE)


class ControlSource:
    """Generated in seconds from a seed, with no download."""

    kind = "control"

    def claims(self, name: str) -> bool:
        return name in CONTROLS

    def fingerprint(self, name: str) -> str:
        spec = importlib.util.find_spec("successor_lens.models.planted")
        generator = Path(str(spec.origin if spec else ""))
        base = {"tokenizer_of": EmbeddedSource().fingerprint(RANDOM_LIKE[name])} if name in RANDOM_LIKE else {}
        return digest({"kind": self.kind, "name": name, "code": remembered_sha256([generator]), **base})

    def config(self, name: str) -> HookedTransformerConfig:
        from successor_lens.models.planted import control_config

        if name in RANDOM_LIKE:
            cfg = EmbeddedSource().config(RANDOM_LIKE[name])
            cfg.model_name = name
            return cfg
        return control_config(name)

    def load(self, name: str) -> HookedTransformer:
        from successor_lens.models.attributes import note
        from successor_lens.models.planted import build_control, build_random_like

        model = build_random_like(name, RANDOM_LIKE[name]) if name in RANDOM_LIKE else build_control(name, plant=name == PLANTED)
        return note(model, successor_lens_source={"kind": self.kind, "source": getattr(model, "successor_lens_source", name)})
