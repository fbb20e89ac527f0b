"""`successor-lens atlas --sae DIR`: the feature atlas of one saved or pretrained dictionary."""

from __future__ import annotations

import argparse

from successor_lens.artifacts.atlas_config import AtlasConfig
from successor_lens.cli.common import (
    add_context_arguments,
    add_dtype_argument,
    add_model_seed_argument,
    add_threads_argument,
    add_verify_cache_argument,
    config_option,
    context_options,
    model_name,
    positive_int,
    resolve_device,
)
from successor_lens.filenames import ATLAS, INDEX

HELP = "build the feature atlas of any saved or sae-lens pretrained dictionary alone"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sae", required=True, help="a dictionary folder (ours or sae-lens's) or an sae-lens release name")
    p.add_argument("--sae-id", default=None, help="the SAE id within an sae-lens release")
    p.add_argument("--hookpoint", default=None, help="the hookpoint's folder within a sparsify multi-hookpoint folder (e.g. layers.0.mlp)")
    p.add_argument("--hook", default=None, help="the TransformerLens hook the dictionary reads (e.g. blocks.0.hook_mlp_out), when its config "
                   "names it in a form this does not read (dictionary_learning's free-form submodule_name)")
    p.add_argument("--model", default=None, type=model_name, help="model (default: the one named in the dictionary's metadata; an embedded "
                   "model's Hugging Face id is that model)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    add_dtype_argument(p)
    add_model_seed_argument(p)
    add_verify_cache_argument(p)
    add_threads_argument(p)
    p.add_argument("--head", default=None, help="head for the logit effects, as L{layer}H{head} (default: the scan's best)")
    config_option(p, AtlasConfig, "latents", type=positive_int)
    add_context_arguments(p)
    p.add_argument("--out", required=True, help=f"a new (or empty) folder of its own for the atlas: OUT/{ATLAS}/{INDEX}")


def run(args: argparse.Namespace) -> None:
    from successor_lens.errors import ConfigError
    from successor_lens.models.loading import load_model, model_shape
    from successor_lens.models.registry import DEFAULT_MODEL, canonical_name
    from successor_lens.probes.head_id import check_head
    from successor_lens.runner.dictionary_atlas import atlas_for_dictionary
    from successor_lens.runner.folders import check_folder, run_folder
    from successor_lens.sae_train.dictionary import load_dictionary
    from successor_lens.sites import check_site

    device = resolve_device(args.device)
    config = AtlasConfig(latents=args.latents, **context_options(args))
    check_folder(args.out, "atlas", model=args.model, dtype=args.dtype)  # refuse a folder that is not ours before any work
    d = load_dictionary(args.sae, args.sae_id, device="cpu", hookpoint=args.hookpoint, hook=args.hook)
    name = canonical_name(args.model or d.sae.cfg.metadata.model_name or DEFAULT_MODEL)
    shape = model_shape(name)
    if d.sae.cfg.d_in != shape.d_model:
        raise ConfigError(f"{d.source}: d_in {d.sae.cfg.d_in} but {name} has d_model {shape.d_model}: pass the right --model")
    head = check_head(args.head, shape) if args.head else None
    hook = d.sae.cfg.metadata.hook_name
    if not isinstance(hook, str) or not hook:
        raise ConfigError(f"{d.source}: its metadata names no hook: pass --hook with the TransformerLens hook it reads (e.g. "
                          "blocks.0.hook_mlp_out)")
    try:
        check_site(hook, shape.n_layers)  # before the model loads and before --out is made
    except ConfigError as err:
        raise ConfigError(f"{d.source}: its hook_name: {err}") from None
    with run_folder(args.out, "atlas", model=args.model, dtype=args.dtype) as out:
        model = load_model(name, device=device, dtype=args.dtype)
        index, summary = atlas_for_dictionary(model, d, out, config, head)
    print(f"atlas: {index}")
    for line in summary[:2]:
        print("  " + line)
