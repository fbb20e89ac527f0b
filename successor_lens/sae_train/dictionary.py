"""Saving and loading dictionaries in sae-lens's on-disk format, plus our provenance.

A saved SAE folder holds `cfg.json` and `sae_weights.safetensors` (what
`sae_lens.SAE.load_from_disk` reads; training-only SAEs such as BatchTopK are exported as their
inference form) and `provenance.json` (model, hook, weight processing, token set, config,
package version, data hash). The folder appears whole or not at all.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import torch
from sae_lens import SAE

from successor_lens.io import provenance as base_provenance
from successor_lens.io import write_json

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
PROVENANCE_FILE = "provenance.json"


class DictionaryError(RuntimeError):
    """A dictionary could not be loaded; one line naming the file and the problem."""


def save_dictionary(sae, folder: str | os.PathLike, provenance: dict[str, Any]) -> Path:
    """Write the inference form of `sae` and its provenance into `folder`, atomically."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        if hasattr(sae, "save_inference_model"):
            sae.save_inference_model(tmp)
        else:
            sae.save_model(tmp)
        write_json(tmp / PROVENANCE_FILE, base_provenance(**provenance))
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            folder.rename(old)
            tmp.rename(folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


@dataclass
class Dictionary:
    sae: SAE
    provenance: dict[str, Any]
    """Ours when we trained it; for others' folders and releases, what their config says."""
    source: str


def load_dictionary(
    path_or_release: str | os.PathLike,
    sae_id: str | None = None,
    device: str = "cpu",
    expected_d_in: int | None = None,
    expected_hook: str | None = None,
) -> Dictionary:
    """Load a local sae-lens folder (ours or anyone's) or an sae-lens registry release.

    Fails with one line on a missing or corrupt file, a dimension or hook mismatch, or (for a
    release) when the hub is unreachable.
    """
    path = Path(path_or_release)
    if path.exists() or os.sep in str(path_or_release) or str(path_or_release).startswith("."):
        sae, prov = _load_folder(path, device)
        source = str(path)
    else:
        sae, prov = _load_release(str(path_or_release), sae_id, device)
        source = f"sae-lens release {path_or_release}/{sae_id}"
    d_in = sae.cfg.d_in
    if expected_d_in is not None and d_in != expected_d_in:
        raise DictionaryError(f"{source}: d_in is {d_in} but the hook has d_model {expected_d_in}: use a dictionary trained on this model")
    hook = sae.cfg.metadata.hook_name
    if expected_hook is not None and hook is not None and hook != expected_hook:
        raise DictionaryError(f"{source}: trained on hook {hook!r}, not {expected_hook!r}: pick the dictionary for that site")
    return Dictionary(sae, prov, source)


def _load_folder(path: Path, device: str):
    if not path.is_dir():
        raise DictionaryError(f"{path}: no such folder: give a folder with {CFG_FILE} and {WEIGHTS_FILE}")
    for name in (CFG_FILE, WEIGHTS_FILE):
        if not (path / name).is_file():
            raise DictionaryError(f"{path / name}: missing: this is not an sae-lens dictionary folder")
    try:
        cfg = json.loads((path / CFG_FILE).read_text())
    except json.JSONDecodeError as err:
        raise DictionaryError(f"{path / CFG_FILE}: not valid JSON ({err.msg} at line {err.lineno}): re-save the dictionary") from None
    _check_safetensors(path / WEIGHTS_FILE)
    try:
        sae = SAE.load_from_disk(path, device=device)
    except Exception as err:  # sae-lens raises many kinds; one line is what a user needs
        raise DictionaryError(f"{path}: sae-lens cannot load it ({type(err).__name__}: {str(err).splitlines()[0][:160]})") from None
    prov_path = path / PROVENANCE_FILE
    prov = json.loads(prov_path.read_text()) if prov_path.is_file() else {"config": cfg}
    return sae, prov


def _check_safetensors(path: Path) -> None:
    """Read the header and check that every tensor's bytes are present (catches truncation)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise DictionaryError(f"{path}: truncated ({size} bytes): re-download or re-train it")
        n = int.from_bytes(head, "little")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError, MemoryError, OverflowError):
            raise DictionaryError(f"{path}: corrupt safetensors header: re-download or re-train it") from None
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end > size:
        raise DictionaryError(f"{path}: truncated ({size} of {8 + n + end} bytes): re-download or re-train it")


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
    try:
        sae = SAE.from_pretrained(release, sae_id, device=device)
    except Exception as err:
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "")
        why = "HF_HUB_OFFLINE=1 is set" if offline else type(err).__name__
        raise DictionaryError(f"cannot download {release}/{sae_id} ({why}): connect to the hub once, or load a local folder") from None
    return sae, {"release": release, "sae_id": sae_id, "config": sae.cfg.to_dict()}


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
def untrained_like(sae, seed: int, data_mean: torch.Tensor | None = None):
    """A copy of `sae` at initialisation, as our trainer starts one: random unit decoder rows,
    W_enc = W_dec^T, zero encoder bias, b_dec at the data mean. The untrained-SAE null: what
    mining reports on a dictionary of the same shape and activation function that learned nothing."""
    import copy

    fresh = copy.deepcopy(sae)
    gen = torch.Generator().manual_seed(seed)
    W_dec = torch.randn(fresh.W_dec.shape, generator=gen)
    W_dec /= W_dec.norm(dim=-1, keepdim=True)
    fresh.W_dec.data = W_dec.to(fresh.W_dec)
    fresh.W_enc.data = W_dec.T.contiguous().to(fresh.W_enc)
    fresh.b_enc.data.zero_()
    fresh.b_dec.data = (data_mean if data_mean is not None else torch.zeros_like(fresh.b_dec)).to(fresh.b_dec)
    return fresh
