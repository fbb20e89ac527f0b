"""`successor-lens atlas --sae DIR`: the feature atlas of one saved or pretrained dictionary."""

from __future__ import annotations

import argparse

from successor_lens.cli.common import resolve_device

HELP = "build the feature atlas of any saved or sae-lens pretrained dictionary alone"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sae", required=True, help="a dictionary folder (ours or sae-lens's) or an sae-lens release name")
    p.add_argument("--sae-id", default=None, help="the SAE id within an sae-lens release")
    p.add_argument("--model", default=None, help="model (default: the one named in the dictionary's metadata)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--head", default=None, help="head for the logit effects, as L{layer}H{head} (default: the scan's best)")
    p.add_argument("--latents", type=int, default=40, help="latent pages at most")
    p.add_argument("--out", required=True, help="folder for the atlas (index.html goes inside)")


def run(args: argparse.Namespace) -> None:
    from successor_lens.artifacts.atlas import AtlasConfig
    from successor_lens.artifacts.pipeline import atlas_for_dictionary
    from successor_lens.models import DEFAULT_MODEL, load_model
    from successor_lens.sae_train.dictionary import load_dictionary

    device = resolve_device(args.device)
    d = load_dictionary(args.sae, args.sae_id, device="cpu")
    name = args.model or d.sae.cfg.metadata.model_name or DEFAULT_MODEL
    model = load_model(name, device=device)
    index, summary = atlas_for_dictionary(model, d, args.out, AtlasConfig(latents=args.latents), args.head)
    print(f"atlas: {index}")
    for line in summary[:2]:
        print("  " + line)
