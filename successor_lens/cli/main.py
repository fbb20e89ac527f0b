"""Entry point: `successor-lens COMMAND ...`. Known errors print one line and exit 2."""

from __future__ import annotations

import argparse
import os
import sys

from successor_lens.cli import atlas_cmd, edit_cmd, heads_cmd, mine_cmd, probe_cmd, run_cmd, train_cmd, wild_cmd

COMMANDS = {
    "run": run_cmd, "heads": heads_cmd, "train": train_cmd, "mine": mine_cmd, "probe": probe_cmd, "atlas": atlas_cmd,
    "wild": wild_cmd, "edit": edit_cmd,
}


class UserError(Exception):
    """Bad input from the user: printed as one line, no traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="successor-lens", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module in COMMANDS.items():
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("WANDB_MODE", "disabled")
    args = build_parser().parse_args(argv)
    from successor_lens.artifacts.schema import AtlasFormatError
    from successor_lens.models import ModelLoadError
    from successor_lens.probes.edits import EditSpecError
    from successor_lens.sae_train.checkpoint import CheckpointError
    from successor_lens.sae_train.dictionary import DictionaryError
    from successor_lens.sae_train.trainer import NonFiniteError

    try:
        args._run(args)
    except (AtlasFormatError, EditSpecError, ModelLoadError, DictionaryError, CheckpointError, NonFiniteError, UserError, ValueError, FileNotFoundError) as err:
        print(f"successor-lens {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
