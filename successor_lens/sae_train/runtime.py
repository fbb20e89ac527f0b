"""Device and precision, decided once at the entry point and passed down (nanoGPT style)."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch

from successor_lens.errors import ConfigError


@dataclass(frozen=True)
class Runtime:
    """Where and in what precision to run. SAE parameters always stay fp32."""

    device: str = "cpu"
    precision: str = "auto"
    """"auto" (bf16 autocast on CUDA, fp32 on CPU), "fp32", "bf16" (autocast), or "fp16" (autocast + GradScaler)."""

    def __post_init__(self):
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ConfigError(f"unknown precision {self.precision!r}: use auto, fp32, bf16 or fp16")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError("device cuda was asked for but torch sees no CUDA device: use --device cpu")
        if self.precision == "fp16" and not self.device.startswith("cuda"):
            raise ConfigError("fp16 with a GradScaler needs CUDA: use --precision bf16 or fp32 on CPU")

    @property
    def compute_dtype(self) -> torch.dtype:
        mode = self.precision
        if mode == "auto":
            mode = "bf16" if self.device.startswith("cuda") else "fp32"
        return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[mode]

    def autocast(self):
        if self.compute_dtype == torch.float32:
            return nullcontext()
        return torch.autocast(device_type=torch.device(self.device).type, dtype=self.compute_dtype)

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        return torch.amp.GradScaler("cuda") if self.compute_dtype == torch.float16 else None

    @staticmethod
    def default(device: str | None = None, precision: str = "auto") -> Runtime:
        return Runtime(device or ("cuda" if torch.cuda.is_available() else "cpu"), precision)


def available_bytes(device: str) -> int:
    """Memory free for a new allocation: the CUDA device's free memory, else the machine's
    MemAvailable (/proc/meminfo), else its physical memory."""
    if device.startswith("cuda"):
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import os

    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def training_bytes(d_in: int, d_sae: int, batch_size: int) -> int:
    """A lower bound on what training one dictionary allocates: encoder and decoder in fp32 with
    their gradients and two Adam moments (4 copies), and a batch's inputs, pre-activations,
    activations and their gradients."""
    return 4 * (4 * 2 * d_in * d_sae + batch_size * (2 * d_in + 4 * d_sae))


def check_fits(d_in: int, d_sae: int, batch_size: int, device: str, what: str = "training") -> None:
    """Refuse, before anything loads, sizes whose allocation alone exceeds the free memory."""
    need, have = training_bytes(d_in, d_sae, batch_size), available_bytes(device)
    if need > have:
        raise ConfigError(f"{what} with d_in {d_in}, --d-sae {d_sae} and --batch-size {batch_size} needs at least "
                          f"{need / 2**30:.1f} GiB but {have / 2**30:.1f} GiB is free on {device}: lower --d-sae or --batch-size")
