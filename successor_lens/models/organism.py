"""The trained model organism `organism-gpt2` as a model source (training: `organism_train.py`).

The package ships its weights in a compact form, `successor_lens/data/organism/`: the rows of the
tokens it was trained on (a few thousand of GPT-2's 50,257), every other weight whole, in float16,
with a manifest that records the file's sha256, the shape and recipe, the corpus's hash and the
training curve. Loading places the rows at their GPT-2 ids in a full-vocabulary GPT-2-architecture
HookedTransformer: a token the organism never saw has a zero embedding and the constant logit
`UNUSED_LOGIT`, far below any trained one, so it is never predicted. The file is checked against
the manifest before it is read. Light at import: the fingerprint needs no torch.
"""

from __future__ import annotations

import dataclasses
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from successor_lens.errors import ModelLoadError, UserError
from successor_lens.io import check_safetensors, digest, file_sha256, read_json
from successor_lens.models.fingerprints import remembered_sha256
from successor_lens.models.organism_config import OrganismConfig, compact_config

if TYPE_CHECKING:
    from torch import Tensor
    from transformer_lens import HookedTransformer, HookedTransformerConfig
else:  # at run time these are Any, so runtime type checkers accept them and the module stays free of torch
    HookedTransformer = HookedTransformerConfig = Tensor = Any

ORGANISM = "organism-gpt2"
WEIGHTS, MANIFEST = "organism-gpt2.safetensors", "manifest.json"
GPT2_VOCAB = 50257
UNUSED_LOGIT = -30.0
"""The logit of every token the organism was not trained on (b_U; its W_U column is zero)."""
VOCAB_KEY = "vocab"
"""The tensor of GPT-2 ids of the compact rows, in the weights file."""


def shipped_folder() -> Path:
    return Path(str(resources.files("successor_lens") / "data" / "organism"))


def read_manifest(folder: Path | None = None) -> dict:
    folder = folder or shipped_folder()
    if not (folder / MANIFEST).is_file() or not (folder / WEIGHTS).is_file():
        raise ModelLoadError(f"{ORGANISM}: its weights are missing from {folder}: reinstall successor-lens, "
                             "or train them with `successor-lens organism --train`")
    return read_json(folder / MANIFEST, "organism manifest")


def verified_weights(folder: Path | None = None) -> Path:
    """The weights file, after checking its sha256 against the manifest's (a mismatch: one line)."""
    folder = folder or shipped_folder()
    manifest = read_manifest(folder)
    path = folder / WEIGHTS
    if file_sha256([path]) != manifest.get("weights_sha256"):
        raise ModelLoadError(f"{path}: its sha256 differs from the manifest's: the file is damaged or was replaced; reinstall successor-lens")
    return path


ORGANISM_LIMITS = {"n_layers": 64, "d_model": 4096, "n_heads": 64, "d_mlp": 16384, "n_ctx": 8192}
"""The largest organism shape a manifest may give (the shipped one is far inside): a manifest with
absurd sizes is refused before an allocation is tried."""


def organism_config(manifest: dict) -> OrganismConfig:
    """The manifest's recipe, every field checked (known, in range) where it is read; one line otherwise."""
    fix = "the manifest is damaged: reinstall successor-lens, or retrain with `successor-lens organism --train`"
    raw = manifest.get("config")
    known = {f.name for f in dataclasses.fields(OrganismConfig)}
    if not isinstance(raw, dict) or not set(raw) <= known:
        extra = sorted(set(raw) - known)[:1] if isinstance(raw, dict) else ["(not a table)"]
        raise ModelLoadError(f"{ORGANISM}: its manifest's config has {extra[0] if extra else 'no fields'!s:.40}: {fix}")
    try:
        config = OrganismConfig(**raw)
    except UserError as err:
        raise ModelLoadError(f"{ORGANISM}: its manifest's config: {err}: {fix}") from None
    for field, hi in ORGANISM_LIMITS.items():
        if getattr(config, field) > hi:
            raise ModelLoadError(f"{ORGANISM}: its manifest gives {field} = {getattr(config, field)}, above {hi}: {fix}")
    return config


def full_config(manifest: dict, name: str = ORGANISM) -> HookedTransformerConfig:
    """The loaded organism's config: the trained shape over GPT-2's whole vocabulary."""
    return compact_config(organism_config(manifest), GPT2_VOCAB, name)


def compact_state(model: HookedTransformer, vocab: list[int]) -> dict[str, Tensor]:
    """A trained compact-vocabulary model's weights in float16, with the GPT-2 ids of its rows."""
    import torch

    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items() if not _buffer(k)}
    state[VOCAB_KEY] = torch.tensor(vocab, dtype=torch.int64)
    return state


def _buffer(key: str) -> bool:
    """TransformerLens's non-weight state (causal masks, IGNORE constants), rebuilt on construction."""
    return key.endswith((".mask", ".IGNORE"))


def expand(state: dict[str, Tensor], manifest: dict, name: str = ORGANISM) -> HookedTransformer:
    """The full-vocabulary HookedTransformer (fp32, CPU, eval) of a compact state."""
    import torch
    from transformer_lens import HookedTransformer

    from successor_lens.models.planted import gpt2_tokenizer

    cfg = full_config(manifest, name)
    model = HookedTransformer(cfg, move_to_device=False)
    model.tokenizer = gpt2_tokenizer()  # set after construction: TransformerLens would fetch it by name
    fix = "the weights do not match their manifest: reinstall successor-lens, or retrain with `successor-lens organism --train`"
    vocab = state.get(VOCAB_KEY)
    if vocab is None or vocab.ndim != 1 or len(vocab) == 0 or int(vocab.min()) < 0 or int(vocab.max()) >= GPT2_VOCAB or len(set(vocab.tolist())) != len(vocab):
        raise ModelLoadError(f"{ORGANISM}: its vocabulary rows are not distinct GPT-2 ids: {fix}")
    vocab = vocab.long()
    full = model.state_dict()
    for key, value in state.items():
        if key == VOCAB_KEY:
            continue
        want = full.get(key)
        rows = {"embed.W_E": (len(vocab), cfg.d_model), "unembed.W_U": (cfg.d_model, len(vocab)), "unembed.b_U": (len(vocab),)}
        if want is None or tuple(value.shape) != rows.get(key, tuple(want.shape)):
            raise ModelLoadError(f"{ORGANISM}: its tensor {key[:60]} has shape {tuple(value.shape)[:4]}, not the manifest's: {fix}")
    with torch.no_grad():
        for key, value in state.items():
            if key == VOCAB_KEY:
                continue
            value = value.float()
            if key == "embed.W_E":
                full[key].zero_()
                full[key][vocab] = value
            elif key == "unembed.W_U":
                full[key].zero_()
                full[key][:, vocab] = value
            elif key == "unembed.b_U":
                full[key].fill_(UNUSED_LOGIT)
                full[key][vocab] = value
            else:
                full[key].copy_(value)
    model.load_state_dict(full)
    return model.eval()


def load_organism(folder: Path | None = None, name: str = ORGANISM) -> HookedTransformer:
    from safetensors.torch import load_file

    path = verified_weights(folder)
    check_safetensors(path)
    model = expand(load_file(str(path)), read_manifest(folder), name)
    from successor_lens.models.attributes import note

    return note(model, successor_lens_source=f"{ORGANISM}, trained by successor-lens (seed {read_manifest(folder)['config']['seed']}), "
                                             "GPT-2 tokenizer from successor_lens/data/gpt2")


class OrganismSource:
    """The shipped organism: loads offline in about a second."""

    kind = "organism"

    def claims(self, name: str) -> bool:
        return name == ORGANISM

    def fingerprint(self, name: str) -> str:
        folder = shipped_folder()
        read_manifest(folder)
        return digest({"kind": self.kind, "name": name, "weights": remembered_sha256([folder / WEIGHTS, folder / MANIFEST])})

    def config(self, name: str) -> HookedTransformerConfig:
        return full_config(read_manifest(), name)

    def load(self, name: str) -> HookedTransformer:
        return load_organism(name=name)
