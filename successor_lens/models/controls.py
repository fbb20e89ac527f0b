"""The generated control models, `planted-gpt2` (a known answer) and `random-gpt2` (a null), as a
model source. Light at import: they are built by `planted.py` (imported when one loads), and
fingerprinted by that file's source, since a seed and the code fix every weight."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any

from successor_lens.io import digest
from successor_lens.models.fingerprints import remembered_sha256

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer, HookedTransformerConfig
else:  # at run time these are Any, so runtime type checkers accept them and the module stays free of torch
    HookedTransformer = HookedTransformerConfig = Any

PLANTED, RANDOM = "planted-gpt2", "random-gpt2"
CONTROLS = (PLANTED, RANDOM)


class ControlSource:
    """Generated in seconds from a seed, with no download."""

    kind = "control"

    def claims(self, name: str) -> bool:
        return name in CONTROLS

    def fingerprint(self, name: str) -> str:
        spec = importlib.util.find_spec("successor_lens.models.planted")
        generator = Path(str(spec.origin if spec else ""))
        return digest({"kind": self.kind, "name": name, "code": remembered_sha256([generator])})

    def config(self, name: str) -> HookedTransformerConfig:
        from successor_lens.models.planted import control_config

        return control_config(name)

    def load(self, name: str) -> HookedTransformer:
        from successor_lens.models.attributes import note
        from successor_lens.models.planted import build_control

        model = build_control(name, plant=name == PLANTED)
        return note(model, successor_lens_source={"kind": self.kind, "source": getattr(model, "successor_lens_source", name)})
