"""`successor-lens convert SRC --to FORMAT --out DIR`: a dictionary in another library's layout."""

from __future__ import annotations

import argparse

from successor_lens.confighelp import constant  # formats.py imports torch: its FORMATS are read from the source

HELP = "convert a dictionary between the sae-lens, EleutherAI sparsify and dictionary_learning layouts (numeric round trip checked)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", metavar="SRC", help="a dictionary folder in any of the three layouts, or an sae-lens release name")
    p.add_argument("--sae-id", default=None, help="the SAE id within an sae-lens release")
    p.add_argument("--hookpoint", default=None, help="the hookpoint's folder within a sparsify multi-hookpoint folder (e.g. layers.0.mlp)")
    p.add_argument("--hook", default=None, help="the TransformerLens hook the dictionary reads (e.g. blocks.0.hook_mlp_out), when its config "
                   "names it in a form this does not read (dictionary_learning's free-form submodule_name)")
    p.add_argument("--to", required=True, choices=constant("successor_lens.sae_train.formats:FORMATS"), help="the layout to write")
    p.add_argument("--out", required=True, help="a new (or empty) folder; the dictionary goes to OUT/NAME (a sparsify hookpoint, or the hook name)")


def run(args: argparse.Namespace) -> None:
    from successor_lens.runner.folders import check_folder, run_folder
    from successor_lens.sae_train.dictionary import convert, convert_target, load_dictionary

    check_folder(args.out, "convert")
    source = load_dictionary(args.source, args.sae_id, hookpoint=args.hookpoint, hook=args.hook)
    convert_target(source, args.to, args.out)  # a hook name that is no file name is refused before --out is made
    with run_folder(args.out, "convert") as out:
        folder, error = convert(source, args.to, out)
    print(f"{source.source} ({source.sae.cfg.architecture()}, d_in {source.sae.cfg.d_in}, d_sae {source.sae.cfg.d_sae}, "
          f"hook {source.sae.cfg.metadata.hook_name}) -> {args.to}: {folder}")
    print(f"round trip on 1024 random inputs: max |encode difference| {error['encode']:.3g}, max |decode difference| {error['decode']:.3g}")
