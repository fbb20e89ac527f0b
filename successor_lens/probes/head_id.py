"""Heads by name, `L{layer}H{head}`: made, parsed and checked against a model's shape."""

from __future__ import annotations

import re

from successor_lens.errors import ConfigError


def head_name(layer: int, head: int) -> str:
    return f"L{layer}H{head}"


def parse_head_name(name: str) -> tuple[int, int]:
    """"L23H3" -> (23, 3)."""
    match = re.fullmatch(r"L(\d{1,4})H(\d{1,4})", name.strip().upper()) if isinstance(name, str) else None
    if not match:
        raise ConfigError(f"head {name!r} is not of the form L{{layer}}H{{head}}, e.g. L23H3")
    return int(match[1]), int(match[2])


def check_head(name: str, shape) -> str:
    """`name` as a head of a model of this shape (`ModelShape` or a model), or one line saying which exist."""
    cfg = getattr(shape, "cfg", shape)
    layer, head = parse_head_name(name)
    if layer >= cfg.n_layers or head >= cfg.n_heads:
        raise ConfigError(f"head {name} does not exist: {getattr(cfg, 'model_name', None) or cfg.name} has {cfg.n_layers} layers x "
                          f"{cfg.n_heads} heads (L0H0..L{cfg.n_layers - 1}H{cfg.n_heads - 1})")
    return f"L{layer}H{head}"
