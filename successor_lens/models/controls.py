"""The generated control models, `planted-gpt2` (a known answer), `random-gpt2` (a null), the same
pair on a digit-splitting tokenizer (`planted-digits`, `random-digits`), and
`random-NAME` for each embedded model (the whole-pipeline null: the embedded model's architecture
and its own tokenizer, every weight random), as a model source. Light at import: they are built by
`planted.py` (imported when one loads), and fingerprinted by that file's source (a seed and the
code fix every weight) and, for `random-NAME`, by the embedded model whose tokenizer it reads."""

from __future__ import annotations

import importlib.util
import re
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
PLANTED_DIGITS, RANDOM_DIGITS = "planted-digits", "random-digits"
"""The same pair with a tokenizer that splits numbers into digits (`planted.digit_tokenizer`)."""
RANDOM_LIKE = {f"random-{name}": name for name in EMBEDDED}
"""Whole-pipeline nulls: `random-smollm2-135m` has SmolLM2's architecture and tokenizer, random weights."""
CONTROLS = (PLANTED, RANDOM, PLANTED_DIGITS, RANDOM_DIGITS, *RANDOM_LIKE)
SEEDED = re.compile(r"(?P<base>.+?)-seed(?P<seed>[0-9]{1,9})")
"""A control drawn with another seed: `random-gpt2-seed3` (`--model random-gpt2 --model-seed 3`); seed 0 is the plain name."""


def control_seed(name: str) -> tuple[str, int] | None:
    """(control, seed) of a control's name, seeded or not; None for any other name."""
    match = SEEDED.fullmatch(name)
    base, seed = (match["base"], int(match["seed"])) if match else (name, 0)
    return (base, seed) if base in CONTROLS else None


def seeded(name: str, seed: int | None) -> str:
    """The name of control `name` drawn with `seed` (`--model-seed`): every random choice of the
    generated weights follows it, and so do the fingerprint and the default run folder."""
    from successor_lens.errors import ConfigError

    if seed is None:
        return name
    parsed = control_seed(name) if name else None
    if parsed is None:
        raise ConfigError(f"--model-seed applies to the generated controls ({', '.join(CONTROLS)}), not {name!r}: leave it out")
    return parsed[0] if seed == 0 else f"{parsed[0]}-seed{seed}"


class ControlSource:
    """Generated in seconds from a seed, with no download."""

    kind = "control"

    def claims(self, name: str) -> bool:
        return control_seed(name) is not None

    def fingerprint(self, name: str) -> str:
        spec = importlib.util.find_spec("successor_lens.models.planted")
        generator = Path(str(spec.origin if spec else ""))
        control, _ = _parsed(name)
        base = {"tokenizer_of": EmbeddedSource().fingerprint(RANDOM_LIKE[control])} if control in RANDOM_LIKE else {}
        return digest({"kind": self.kind, "name": name, "code": remembered_sha256([generator]), **base})

    def config(self, name: str) -> HookedTransformerConfig:
        from successor_lens.models.planted import control_config

        control, seed = _parsed(name)
        if control in RANDOM_LIKE:
            cfg = EmbeddedSource().config(RANDOM_LIKE[control])
            cfg.model_name = name
            return cfg
        if control in (PLANTED_DIGITS, RANDOM_DIGITS):
            from successor_lens.models.planted import digit_tokenizer

            return control_config(name, seed, len(digit_tokenizer()))
        return control_config(name, seed)

    def load(self, name: str) -> HookedTransformer:
        from successor_lens.models.attributes import note
        from successor_lens.models.planted import build_control, build_random_like

        control, seed = _parsed(name)
        model = (build_random_like(name, RANDOM_LIKE[control], seed) if control in RANDOM_LIKE
                 else build_control(name, plant=control in (PLANTED, PLANTED_DIGITS), seed=seed, digits=control in (PLANTED_DIGITS, RANDOM_DIGITS)))
        return note(model, successor_lens_source={"kind": self.kind, "source": getattr(model, "successor_lens_source", name)})


def _parsed(name: str) -> tuple[str, int]:
    parsed = control_seed(name)
    if parsed is None:
        raise KeyError(name)
    return parsed
