"""Saving and loading dictionaries in sae-lens's on-disk format, plus our provenance.

A saved SAE folder holds `cfg.json` and `sae_weights.safetensors` (what
`sae_lens.SAE.load_from_disk` reads; training-only SAEs such as BatchTopK are exported as their
inference form) and `provenance.json` (model, hook, weight processing, token set, config,
package version, data hash). The folder appears whole or not at all.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from sae_lens import SAE

from successor_lens.errors import UserError, first_line, foreign_errors
from successor_lens.filenames import PROVENANCE
from successor_lens.io import BadFileError, UnsafePathError, atomic_dir, check_safetensors, file_sha256, overlapping, read_json, safe_component, write_json
from successor_lens.io import provenance as base_provenance
from successor_lens.sae_train.formats import LOADERS, detect

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"


class DictionaryError(UserError, RuntimeError):
    """A dictionary could not be loaded; one line naming the file and the problem."""


def save_dictionary(sae, folder: str | os.PathLike, provenance: dict[str, Any], finish: Callable[[Path], None] | None = None) -> Path:
    """Write the inference form of `sae` and its provenance into `folder`, atomically (the folder
    is replaced whole: give one inside a run folder of ours). `finish(tmp)` may add files (the
    metrics of the saved weights) before the folder appears."""
    folder = Path(folder)
    with atomic_dir(folder) as tmp:
        if hasattr(sae, "save_inference_model"):
            sae.save_inference_model(tmp)
        else:
            sae.save_model(tmp)
        write_json(tmp / PROVENANCE, base_provenance(**provenance))
        if finish is not None:
            finish(tmp)
    return folder


def weights_digest(folder: str | os.PathLike) -> str | None:
    """sha256 of a dictionary folder's weights file (None for a release or a folder without one)."""
    path = Path(folder) / WEIGHTS_FILE
    return file_sha256([path]) if path.is_file() else None


def parameters_digest(sae) -> str:
    """sha256 of a dictionary's parameters (names, dtypes, shapes and bytes, in name order): its
    identity whatever layout or release it came from."""
    import hashlib

    h = hashlib.sha256()
    for name, value in sorted(sae.state_dict().items()):
        t = value.detach().to("cpu").contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


@dataclass
class Dictionary:
    sae: SAE
    provenance: dict[str, Any]
    """Ours when we trained it; for others' folders and releases, what their config says."""
    source: str

    def __repr__(self) -> str:
        c = self.sae.cfg
        return f"Dictionary({self.source!r}: {c.architecture()} {c.d_in} -> {c.d_sae} latents at {c.metadata.hook_name})"

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latent activations [..., d_sae] of activations x [..., d_in] (the SAE's own encode)."""
        return self.sae.encode(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The reconstruction [..., d_in] of latent activations z [..., d_sae] (the SAE's own decode)."""
        return self.sae.decode(z)

    def _repr_html_(self) -> str:
        from successor_lens.display import html_card

        c = self.sae.cfg
        rows = [["source", self.source], ["architecture", c.architecture()], ["d_in -> d_sae", f"{c.d_in} -> {c.d_sae}"],
                ["hook", c.metadata.hook_name], ["model", c.metadata.model_name]]
        return html_card("Dictionary", ["field", "value"], rows, [])


def as_sae(dictionary: Any) -> SAE:
    """The sae-lens SAE of `dictionary`: a `Dictionary` (`load_dictionary`) or an SAE itself. Every
    stage function that takes a dictionary takes either."""
    sae = dictionary.sae if isinstance(dictionary, Dictionary) else dictionary
    if not (callable(getattr(sae, "encode", None)) and hasattr(sae, "W_dec") and hasattr(sae, "cfg")):
        raise UserError(f"expected an sae-lens SAE or a Dictionary (load_dictionary), not {type(dictionary).__name__}")
    return sae


def load_dictionary(
    path_or_release: str | os.PathLike,
    sae_id: str | None = None,
    device: str = "cpu",
    expected_d_in: int | None = None,
    expected_hook: str | None = None,
    converter=None,
    hookpoint: str | None = None,
    hook: str | None = None,
) -> Dictionary:
    """Load a dictionary folder (sae-lens's layout, ours or anyone's; EleutherAI sparsify's; or
    dictionary_learning's, detected by their files: `formats.py`) or an sae-lens registry release.
    `converter` is an sae-lens disk loader (`SAE.load_from_disk(converter=...)`) for any other layout.

    Fails with one line on a missing or corrupt file, a dimension or hook mismatch, or (for a
    release) when the hub is unreachable. A sparsify run folder with several hookpoints (what
    `Sae.load_many` reads) takes `hookpoint`, the name of one of its subfolders ("layers.0.mlp").
    `hook` names the TransformerLens hook the dictionary reads ("blocks.0.hook_mlp_out") when its
    own config does not say it in a form this reads (dictionary_learning's free-form
    `submodule_name`: "mlp_0", "resid_3", ...), or to correct a folder's; it is checked first.
    """
    if hook is not None:
        hook = check_hook_name(hook)
    path = Path(path_or_release)
    if path.exists() or os.sep in str(path_or_release) or str(path_or_release).startswith("."):
        path = _hookpoint_folder(path, hookpoint)
        sae, prov = _load_folder(path, device, converter, hook)
        source = str(path)
    else:
        sae, prov = _load_release(str(path_or_release), sae_id, device)
        source = f"sae-lens release {path_or_release}/{sae_id}"
    if hook is not None and sae.cfg.metadata.hook_name != hook:
        prov = {**prov, "hook_given": {"hook": hook, "config_said": sae.cfg.metadata.hook_name}}
        sae.cfg.metadata.hook_name = hook
    check_weights(sae, source)
    d_in = sae.cfg.d_in
    if expected_d_in is not None and d_in != expected_d_in:
        raise DictionaryError(f"{source}: d_in is {d_in} but the hook has d_model {expected_d_in}: use a dictionary trained on this model")
    hook = sae.cfg.metadata.hook_name
    if expected_hook is not None and hook is not None and hook != expected_hook:
        raise DictionaryError(f"{source}: trained on hook {hook!r}, not {expected_hook!r}: pick the dictionary for that site")
    return Dictionary(sae, prov, source)


def _hookpoint_folder(path: Path, hookpoint: str | None) -> Path:
    """The dictionary folder inside a sparsify multi-hookpoint folder (`path` itself otherwise)."""
    if not path.is_dir() or detect(path) is not None:
        if hookpoint is not None:
            raise DictionaryError(f"{path}: a single dictionary, not a multi-hookpoint folder: drop --hookpoint {hookpoint}")
        return path
    found = sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith(".") and detect(p) == "sparsify")
    if hookpoint is None:
        if len(found) == 1:
            return path / found[0]
        if found:
            raise DictionaryError(f"{path}: a sparsify folder with {len(found)} hookpoints ({', '.join(found[:6])}"
                                  f"{', ...' if len(found) > 6 else ''}): pick one with --hookpoint NAME")
        return path
    name = safe_component(hookpoint, "--hookpoint", "give the name of one of the folder's hookpoint subfolders")
    if name not in found:
        raise DictionaryError(f"{path}: no hookpoint {hookpoint!r}: choose one of {', '.join(found[:6]) or 'none (no sparsify subfolders)'}")
    return path / name


HOOK_NAME = re.compile(r"hook_embed|blocks\.\d{1,4}\.hook_[a-z_]{1,40}")
"""The TransformerLens hooks a dictionary can be given by name (`load_dictionary(hook=...)`, --hook)."""


def check_hook_name(hook: str) -> str:
    """`hook` when it is a TransformerLens hook name a dictionary can read; one line otherwise."""
    if not isinstance(hook, str) or not HOOK_NAME.fullmatch(hook):
        raise DictionaryError(f"--hook {str(hook)[:60]!r} is not a TransformerLens hook name: give one such as hook_embed, "
                              "blocks.0.hook_mlp_out or blocks.3.hook_resid_post")
    return hook


def _load_folder(path: Path, device: str, converter=None, hook: str | None = None):
    if not path.is_dir():
        raise DictionaryError(f"{path}: no such folder: give a folder with {CFG_FILE} and {WEIGHTS_FILE}")
    fmt = detect(path)
    if converter is not None:
        return _load_converted(path, device, converter, fmt or "custom converter")
    if fmt is not None and fmt in LOADERS:
        return _load_converted(path, device, LOADERS[fmt], fmt, hook)
    for name in (CFG_FILE, WEIGHTS_FILE):
        if not (path / name).is_file():
            raise DictionaryError(f"{path / name}: missing: this is not an sae-lens dictionary folder")
    cfg = read_json(path / CFG_FILE, "sae-lens config (not an sae-lens config)", dict, DictionaryError, "re-save the dictionary", max_bytes=1 << 20)
    try:
        check_safetensors(path / WEIGHTS_FILE)
    except BadFileError as err:
        raise DictionaryError(f"{err}: re-download or re-train it") from None
    with foreign_errors(DictionaryError, lambda err: f"{path}: sae-lens cannot load it ({first_line(err, 160)})"):
        sae = SAE.load_from_disk(path, device=device)
    prov_path = path / PROVENANCE
    prov = read_json(prov_path, "provenance", dict, DictionaryError, "re-save the dictionary, or delete the file to load it without "
                     "provenance", max_bytes=16 << 20) if prov_path.is_file() else {"config": cfg}
    return sae, prov


def _load_converted(path: Path, device: str, converter, fmt: str, hook: str | None = None):
    """A folder in another library's layout, through an sae-lens disk loader (`formats.py`'s, which
    name their own problems as `FormatError`, or a caller's), then built by sae-lens."""
    failed = lambda err: f"{path}: cannot load it as a {fmt} dictionary ({first_line(err, 160)})"  # noqa: E731
    if converter in LOADERS.values():
        cfg, state = converter(path, device, hook=hook)
    else:
        with foreign_errors(DictionaryError, failed):
            cfg, state = converter(path, device, cfg_overrides=None)
    with foreign_errors(DictionaryError, failed):
        sae = SAE.load_from_disk(path, device=device, converter=lambda *_, **__: (cfg, state))
    meta = sae.cfg.metadata
    return sae, {"format": fmt, "hook_source": getattr(meta, "hook_source", None), "config": sae.cfg.to_dict()}


def check_weights(sae, source: str) -> None:
    """The tensors an SAE needs, with consistent shapes and finite values; `DictionaryError` otherwise."""
    d_in, d_sae = sae.cfg.d_in, sae.cfg.d_sae
    expected = {"W_enc": (d_in, d_sae), "W_dec": (d_sae, d_in), "b_enc": (d_sae,), "b_dec": (d_in,)}
    params = dict(sae.named_parameters())
    for name, shape in expected.items():
        if name not in params or tuple(params[name].shape) != shape:
            got = "missing" if name not in params else f"shape {tuple(params[name].shape)}"
            raise DictionaryError(f"{source}: {name} is {got}, expected {shape} for d_in {d_in}, d_sae {d_sae}: re-save the dictionary")
    k = getattr(sae.cfg, "k", None)
    if k is not None and not (isinstance(k, int) and not isinstance(k, bool) and 1 <= k <= d_sae):
        raise DictionaryError(f"{source}: k is {str(k)[:40]}, but a top-k dictionary of {d_sae} latents needs 1 <= k <= {d_sae}: "
                              "fix k in its config (or re-save the dictionary)")
    for name, value in params.items():
        if not torch.isfinite(value).all():
            bad = int((~torch.isfinite(value)).sum())
            raise DictionaryError(f"{source}: {name} holds {bad} NaN or inf values: the dictionary is corrupt or diverged; re-train it")


def _load_release(release: str, sae_id: str | None, device: str):
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    directory = get_pretrained_saes_directory()
    if release not in directory:
        raise DictionaryError(f"{release!r} is neither a folder nor an sae-lens release: check the path, or see sae-lens's pretrained_saes.yaml")
    ids = list(directory[release].saes_map)
    if sae_id is None:
        if len(ids) != 1:
            raise DictionaryError(f"release {release!r} has {len(ids)} SAEs: pass --sae-id, e.g. {ids[0]!r}")
        sae_id = ids[0]
    if sae_id not in ids:
        raise DictionaryError(f"release {release!r} has no SAE {sae_id!r}: choose one of {', '.join(ids[:6])}{', ...' if len(ids) > 6 else ''}")
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "")
    with foreign_errors(DictionaryError, lambda err: f"cannot download {release}/{sae_id} "
                        f"({'HF_HUB_OFFLINE=1 is set' if offline else type(err).__name__}): connect to the hub once, or load a local folder"):
        sae = SAE.from_pretrained(release, sae_id, device=device)
    return sae, {"release": release, "sae_id": sae_id, "config": sae.cfg.to_dict()}


def convert_target(source: Dictionary, fmt: str, out: str | os.PathLike) -> Path:
    """The folder `convert` writes, `out/NAME` (NAME: the sparsify hookpoint or the hook name, read
    from the dictionary's config, so checked to be one safe path component), refused when it would
    overlap the dictionary's own folder."""
    from successor_lens.sae_train.formats import tl_to_sparsify_hook

    hook = source.sae.cfg.metadata.hook_name or "sae"
    name = safe_component(tl_to_sparsify_hook(hook) if fmt == "sparsify" else hook, f"{source.source}: hook name",
                          "set the dictionary's metadata.hook_name to a TransformerLens hook name")
    if Path(source.source).exists() and overlapping(source.source, out):
        raise UnsafePathError(f"{source.source} and the output {out} overlap (converting would replace its own input): "
                              "pass an --out outside the dictionary's folder")
    return Path(out) / name


def convert(source: Dictionary, fmt: str, out: str | os.PathLike) -> tuple[Path, dict[str, float]]:
    """Write `source` in layout `fmt` as OUT/NAME (swapped in whole), read it back, and return the
    folder and the largest encode and decode differences on random inputs (0 for an exact copy)."""
    from successor_lens.sae_train.formats import WRITERS

    sae, out = source.sae.to("cpu"), Path(out)
    name = convert_target(source, fmt, out).name
    with atomic_dir(out / name) as tmp:
        WRITERS[fmt](sae, tmp)
        write_json(tmp / PROVENANCE, base_provenance(converted_from=source.source, format=fmt, source_provenance=source.provenance))
    if fmt == "sparsify":  # the run-level config sparsify keeps beside its hookpoint folders
        write_json(out / "config.json", {"model": sae.cfg.metadata.model_name, "hookpoints": [name]})
    back = load_dictionary(out / name).sae
    x = torch.randn(1024, sae.cfg.d_in, generator=torch.Generator().manual_seed(0)) * 3 + sae.b_dec.detach().float()
    with torch.no_grad():
        f, g = sae.encode(x), back.encode(x)
        error = {"encode": (f - g).abs().max().item(), "decode": (sae.decode(f) - back.decode(g)).abs().max().item()}
    return out / name, error


@dataclass
class SAEMetrics:
    """Evaluation of a dictionary on activations. FVU = sum of squared error / total squared
    deviation from the mean (so explained variance = 1 - FVU)."""

    mse: float
    """Mean over inputs of the summed squared error."""
    fvu: float
    l0: float
    dead_frac: float
    """Fraction of latents that never fire on the evaluation activations."""
    log10_density: list[float]
    """Per latent: log10 of its firing frequency (-10 for never)."""

    def __repr__(self) -> str:
        return f"SAEMetrics(FVU {self.fvu:.3f}, L0 {self.l0:.1f}, dead {self.dead_frac:.1%}, mse {self.mse:.4g})"

    def summary(self) -> str:
        return f"L0 {self.l0:.1f}  FVU {self.fvu:.4f}  MSE {self.mse:.4g}  dead {self.dead_frac:.3f}"


@torch.no_grad()
def evaluate(sae: SAE, acts: torch.Tensor | Iterable[torch.Tensor], batch_size: int = 4096) -> SAEMetrics:
    """Metrics with sae-lens's own encode/decode (what a loaded dictionary computes), in one pass
    over a tensor or over chunks (e.g. activation shards), with float64 sums."""
    device = next(sae.parameters()).device
    chunks = [acts] if isinstance(acts, torch.Tensor) else acts
    sq_err = l0 = 0.0
    n = 0
    fired = torch.zeros(sae.cfg.d_sae, device=device)
    x_sum = torch.zeros(sae.cfg.d_in, dtype=torch.float64, device=device)
    x_sq = torch.zeros((), dtype=torch.float64, device=device)
    for chunk in chunks:
        for start in range(0, len(chunk), batch_size):
            x = chunk[start : start + batch_size].to(device).float()
            f = sae.encode(x)
            sq_err += (sae.decode(f) - x).double().pow(2).sum().item()
            x_sum += x.double().sum(0)
            x_sq += x.double().pow(2).sum()
            l0 += (f > 0).sum().item()
            fired += (f > 0).sum(0)
            n += len(x)
    total = (x_sq - x_sum.pow(2).sum() / n).item()  # sum of squared deviations from the mean
    density = fired / n
    return SAEMetrics(
        mse=sq_err / n, fvu=sq_err / max(total, 1e-12), l0=l0 / n, dead_frac=(fired == 0).float().mean().item(),
        log10_density=torch.where(density > 0, density.clamp_min(1e-10).log10(), torch.full_like(density, -10.0)).tolist(),
    )


@torch.no_grad()
def haar_rotation(d: int, seed: int) -> torch.Tensor:
    """A Haar-distributed d x d rotation drawn by `seed` (QR of a Gaussian, signs fixed)."""
    gen = torch.Generator().manual_seed(seed)
    Q, R = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    return Q * torch.sign(torch.diagonal(R))


def rotated_like(sae, seed: int, Q: torch.Tensor | None = None):
    """The tested dictionary with its input space randomly rotated: W_enc -> Q W_enc, W_dec -> W_dec Q^T,
    every bias, threshold, k, norm and the latents' geometry among themselves kept (`b_dec` too,
    so inputs are centred as the dictionary centres them). The untrained-dictionary null built from
    the dictionary itself: its architecture and its weights' statistics, whatever tool trained or
    initialised it, with nothing aligned to the data. A never-trained dictionary is its own null.
    `Q`: the rotation (default `haar_rotation(d_in, seed)`)."""
    import copy

    fresh = copy.deepcopy(sae)
    Q = (haar_rotation(fresh.W_dec.shape[1], seed) if Q is None else Q).to(fresh.W_dec)
    with torch.no_grad():
        fresh.W_enc.data = (Q @ fresh.W_enc.data.to(Q)).to(fresh.W_enc)
        fresh.W_dec.data = (fresh.W_dec.data.to(Q) @ Q.T).to(fresh.W_dec)
    return fresh


def untrained_parameters(sae, draws: int, generator: torch.Generator, data_mean: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Stacked parameters ([draws, ...]) of `draws` copies of `sae` at initialisation, as our trainer
    starts one: random unit decoder rows, W_enc = W_dec^T, zero encoder bias, b_dec at the data mean
    (zero without one). Any other parameter (a JumpReLU threshold) is the dictionary's own."""
    W_dec = torch.randn(draws, *sae.W_dec.shape, generator=generator)
    W_dec /= W_dec.norm(dim=-1, keepdim=True)
    mean = data_mean.float() if data_mean is not None else torch.zeros(sae.b_dec.shape)
    return {"W_dec": W_dec, "W_enc": W_dec.transpose(1, 2), "b_enc": torch.zeros(draws, *sae.b_enc.shape),
            "b_dec": mean.expand(draws, *sae.b_dec.shape)}


def untrained_like(sae, seed: int, data_mean: torch.Tensor | None = None):
    """A copy of `sae` at initialisation (`untrained_parameters`, one draw by `seed`). The
    untrained-SAE null: what mining reports on a dictionary of the same shape and activation
    function that learned nothing."""
    import copy

    fresh = copy.deepcopy(sae)
    params = untrained_parameters(fresh, 1, torch.Generator().manual_seed(seed), data_mean)
    with torch.no_grad():
        for name, value in params.items():
            getattr(fresh, name).data = value[0].contiguous().to(getattr(fresh, name))
    return fresh
