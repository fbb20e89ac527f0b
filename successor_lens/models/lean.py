"""A checkpoint read lean: one layer at a time, only the tensors a circuit reads, straight from the
safetensors shards (`safe_open`, one tensor at a time), never the whole model.

`LeanCheckpoint.layer(L)` is a one-layer HookedTransformer whose block 0 is the checkpoint's layer
L, converted by TransformerLens's own function for the architecture (`get_pretrained_state_dict`:
GQA, fused QKV, Gemma's norm offsets and scalings, post-norms, exactly as the full path converts
them). Its Hugging Face model is built on the meta device and given only the tensors asked for:
the embedding, final norm and unembedding (read once and shared), the layer's attention values,
outputs and every norm, and for layer 0 (or `mlp=True`) its MLP. Queries, keys and later MLPs stay on
the meta device, unread: a circuit that touched them would fail loudly, not silently read zeros.
`dtype` is what the weights are read in (bf16 and fp16 round them) and the shared tensors are held in;
each layer's arithmetic runs in fp32, as the full path's `--dtype` (`loading.round_weights`) does.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from successor_lens.errors import ConfigError, ModelLoadError, first_line, foreign_errors
from successor_lens.io import BadFileError, check_safetensors, read_json
from successor_lens.models.attributes import note
from successor_lens.models.hf_configs import check_shape
from successor_lens.models.registry import canonical_name, loaded_fingerprint, source_for, source_kind, torch_dtype

if TYPE_CHECKING:
    import torch
    from transformer_lens import HookedTransformer, HookedTransformerConfig
else:  # torch-free at import (the CLI answers --help without it)
    HookedTransformer = HookedTransformerConfig = Any

LAYER_KEY = re.compile(r"\.(layers|h)\.(\d+)\.")
"""How checkpoints number their layers (`model.layers.L.`, GPT-2's `transformer.h.L.`)."""
UNREAD = ("q_proj", "k_proj", "q_norm", "k_norm", ".mlp.")
"""Parts of a layer the OV circuit never reads (fused QKV weights, GPT-2's and GPT-NeoX's, are read whole)."""


def shard_map(folder: Path) -> dict[str, Path]:
    """Checkpoint key -> the safetensors file holding it (the shard index, else every file's keys).
    The index is read within bounds (`io.read_json`), every shard checked whole before it is opened
    (`io.check_safetensors`: a regular file, its header's lengths, offsets, dtypes and shapes
    consistent with its size), so a crafted checkpoint is one line, never a hang or a traceback."""
    fix = "re-save the checkpoint with save_pretrained"
    index = folder / "model.safetensors.index.json"
    if index.exists() or index.is_symlink():
        doc = read_json(index, "shard index", dict, ModelLoadError, fix, max_bytes=64 << 20)
        weight_map = doc.get("weight_map")
        if not isinstance(weight_map, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()):
            raise ModelLoadError(f"{index}: its weight_map is not a table of tensor name -> shard file: {fix}")
        out = {}
        for key, name in weight_map.items():
            path = (folder / name).resolve()
            if path.parent != folder.resolve() or not path.is_file():  # a name read from a file is never a path unchecked
                raise ModelLoadError(f"{index}: shard {name[:60]!r} of {key[:60]} is not a file in the checkpoint folder: {fix}")
            out[key] = path
        headers = {path: _checked(path) for path in set(out.values())}
        missing = next((k for k, p in out.items() if k not in headers[p]), None)
        if missing is not None:
            raise ModelLoadError(f"{index}: {missing[:60]} is not in the shard it names ({out[missing].name}): {fix}")
        return out
    out = {}
    for path in sorted(folder.glob("*.safetensors")):
        out.update({k: path for k in _checked(path) if k != "__metadata__"})
    return out


def _checked(path: Path) -> dict:
    """A shard's header, once `check_safetensors` has found it whole; one line otherwise."""
    try:
        return check_safetensors(path)
    except BadFileError as err:
        raise ModelLoadError(f"{err}: re-save the checkpoint with save_pretrained") from None


def _renamings():
    """transformers' own checkpoint-key renamings for a model (5.x: `embed_out.` -> `lm_head.` for
    GPT-NeoX, ...), as (source regex, target) pairs; none where this transformers has no such table."""
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import WeightRenaming
    except ImportError:
        return lambda model: []

    def pairs(model) -> list[tuple[str, str]]:
        return [(s, t) for r in get_model_conversion_mapping(model) if isinstance(r, WeightRenaming)
                for s, t in zip(r.source_patterns, r.target_patterns, strict=False)]
    return pairs


@dataclass
class LeanCheckpoint:
    folder: Path
    cfg: HookedTransformerConfig
    """The whole model's TransformerLens config (what the full path builds)."""
    dtype: str = "fp32"
    tokenizer: Any = None
    where: dict[str, Path] = field(default_factory=dict)
    shared: dict[str, torch.Tensor] = field(default_factory=dict)
    read_params: int = 0
    total_params: int = 0

    @classmethod
    def open(cls, folder: Path, cfg: HookedTransformerConfig, dtype: str = "fp32") -> LeanCheckpoint:
        from safetensors import safe_open
        from transformers import AutoTokenizer

        torch_dtype(dtype)
        check_shape(cfg, folder)
        where = shard_map(Path(folder))
        with foreign_errors(ModelLoadError, lambda err: f"--model {folder}: its tokenizer does not load ({first_line(err)}): re-save it"):
            tokenizer = AutoTokenizer.from_pretrained(folder)
        lean = cls(Path(folder), cfg, dtype, tokenizer, where)
        for path in sorted(set(lean.where.values())):
            with safe_open(str(path), "pt") as f:
                lean.total_params += sum(_numel(f.get_slice(k).get_shape()) for k in f.keys())  # noqa: SIM118
        return lean

    def stand_in(self, source: dict[str, Any]) -> HookedTransformer:
        """The whole model's shape on the meta device (no weights), with its tokenizer and `source`
        noted, with what was read so far: what an artefact's provenance reads, for a model never
        loaded whole."""
        read = {"dtype": self.dtype, "parameters_read": self.read_params, "parameters_in_checkpoint": self.total_params}
        return note(self._shape(), successor_lens_dtype=self.dtype, successor_lens_source={**source, "lean": read})

    def _shape(self) -> HookedTransformer:
        """The whole model's HookedTransformer on the meta device, with the tokenizer."""
        import torch
        from transformer_lens import HookedTransformer

        with torch.device("meta"):
            return HookedTransformer(copy.deepcopy(self.cfg), tokenizer=self.tokenizer, move_to_device=False)

    def front(self, source: dict[str, Any]) -> HookedTransformer:
        """The whole model's shape with the checkpoint's weights where a vocabulary-level site reads:
        the embeddings, block 0 (all of layer 0), the final norm and the unembedding; blocks 1.. stay
        on the meta device, unread. Up to `stop_at_layer=1` it runs as the whole model does (the
        embed and mlp0 sites, multi-token items included); a forward pass past block 0 fails loudly."""
        one = self.layer(0, mlp=True)
        model = self._shape()
        for name in ("embed", "pos_embed", "ln_final", "unembed"):
            if hasattr(one, name):
                setattr(model, name, getattr(one, name))
        model.blocks[0] = one.blocks[0]
        model.setup()  # the hook names again, now over block 0's modules
        # what was read, not how much: the same note however many layers a scan read before (activation caches compare it)
        return note(model, successor_lens_dtype=self.dtype,
                    successor_lens_source={**source, "lean": {"dtype": self.dtype, "read": "the embeddings, layer 0 and the unembedding"}})

    def _tensor(self, key: str) -> torch.Tensor:
        from safetensors import safe_open

        with safe_open(str(self.where[key]), "pt") as f:
            t = f.get_tensor(key)
        self.read_params += t.numel()
        return t.to(torch_dtype(self.dtype))

    def _config(self, layer: int) -> tuple[HookedTransformerConfig, Any]:
        """TransformerLens's and transformers' configs of one layer of the model (per-layer lists sliced)."""
        from transformer_lens import HookedTransformerConfig
        from transformers import AutoConfig

        d = copy.deepcopy(self.cfg.to_dict())
        for k, v in d.items():
            if isinstance(v, list) and len(v) == self.cfg.n_layers:
                d[k] = [v[layer]]
        d.update(n_layers=1, dtype=torch_dtype(self.dtype), init_weights=False)
        d.pop("n_params", None)
        hf = AutoConfig.from_pretrained(self.folder)
        text = getattr(hf, "text_config", None) or hf
        text.num_hidden_layers = 1
        if isinstance(getattr(text, "layer_types", None), list):
            text.layer_types = [text.layer_types[layer]]
        return HookedTransformerConfig.from_dict(d), hf

    def layer(self, layer: int, mlp: bool | None = None) -> HookedTransformer:
        """Checkpoint layer `layer` as block 0 of a one-layer HookedTransformer (`mlp`: read its MLP
        too; default only for layer 0, where the effective embedding is made). What a library
        raises on a checkpoint it cannot convert is one line (`foreign_errors`)."""
        if not 0 <= layer < self.cfg.n_layers:
            raise ValueError(f"layer {layer} outside 0..{self.cfg.n_layers - 1}")
        mlp = layer == 0 if mlp is None else mlp
        why = lambda err: f"--model {self.folder}: its layer {layer} does not convert ({first_line(err)}): re-save the checkpoint"  # noqa: E731
        with foreign_errors(ModelLoadError, why):
            return self._layer(layer, mlp)

    def _layer(self, layer: int, mlp: bool) -> HookedTransformer:
        import torch
        from transformer_lens import HookedTransformer
        from transformer_lens.loading_from_pretrained import get_pretrained_state_dict
        from transformers import AutoModelForCausalLM

        from successor_lens.models.local import _neutral_alias

        tl_cfg, hf_cfg = self._config(layer)
        with torch.device("meta"):
            hf_model = AutoModelForCausalLM.from_config(hf_cfg)
        wanted = set(hf_model.state_dict())
        renames = _renamings()(hf_model)
        state = {}
        for key in self.where:
            found = LAYER_KEY.search(key)
            if found and int(found.group(2)) != layer:
                continue
            if found and not mlp and any(part in key for part in UNREAD):
                continue
            name = LAYER_KEY.sub(lambda m: f".{m.group(1)}.0.", key)
            for source, target in renames:
                name = re.sub(source, target, name)
            if name not in wanted:
                continue
            if found:
                state[name] = self._tensor(key)
            else:
                if key not in self.shared:
                    self.shared[key] = self._tensor(key)
                state[name] = self.shared[key]
        hf_model.load_state_dict(state, strict=False, assign=True)
        hf_model.tie_weights()
        with _neutral_alias(self.folder) as alias:
            converted = get_pretrained_state_dict(alias, tl_cfg, hf_model)
        # a layer read whole is built on the CPU (its parameters allocated, not filled: `assign` replaces them) so its
        # buffers (causal mask, rotary tables) are real and it runs; an OV-only layer stays on the meta device
        with torch.device("cpu" if mlp else "meta"):
            model = HookedTransformer(tl_cfg, tokenizer=self.tokenizer, move_to_device=False)
        model.load_state_dict(converted, strict=False, assign=True)
        model.eval()
        # rounded to --dtype, computed in fp32 (a layer at a time): TransformerLens's own `to` sets cfg.dtype too, else its
        # norms would round their outputs back to the read dtype (the full path, `loading.round_weights`, does not)
        return model.to(torch.float32) if self.dtype != "fp32" else model


def checkpoint_folder(model: str) -> Path:
    """The safetensors checkpoint a lean read uses (a hub snapshot or a local folder), checked before any work."""
    from successor_lens.models.hub import hub_snapshot_folder
    from successor_lens.models.local import local_folder

    kind = source_kind(model)
    if kind == "local":
        return local_folder(model)
    if kind == "hub":
        return hub_snapshot_folder(canonical_name(model))
    raise ConfigError(f"--lean reads a safetensors checkpoint; {model} is a{'n' if kind[0] in 'aeiou' else ''} {kind} model "
                      "(GGUF or generated): leave --lean out, it loads whole in little memory")


@dataclass
class LeanModel:
    """A hub or local model read lean, deferred as `loading.LazyModel` is: its `fingerprint` (the
    whole model's, so stages made lean are reused by a run that loads it whole) is known at once, its
    `checkpoint` opens on first use, and calling it gives `LeanCheckpoint.front`, never the whole model."""

    name: str
    dtype: str = "fp32"
    log: Any = print

    def __post_init__(self):
        self.name = canonical_name(self.name)
        self.folder = checkpoint_folder(self.name)
        self.fingerprint = loaded_fingerprint(self.name, self.dtype)
        self._checkpoint: LeanCheckpoint | None = None

    @property
    def checkpoint(self) -> LeanCheckpoint:
        if self._checkpoint is None:
            self._checkpoint = LeanCheckpoint.open(self.folder, source_for(self.name).config(self.name), self.dtype)
        return self._checkpoint

    def source(self) -> dict[str, Any]:
        """Where the weights come from, as the whole model's load records it."""
        source = source_for(self.name)
        assert hasattr(source, "describe")  # hub and local sources: `checkpoint_folder` refused the rest
        return source.describe(self.name)

    def __call__(self) -> HookedTransformer:
        self.log(f"reading {self.name} lean: the embeddings, layer 0 and the unembedding, held in {self.dtype} (not the whole model) ...")
        return self.checkpoint.front(self.source())


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n
