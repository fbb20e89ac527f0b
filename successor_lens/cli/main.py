"""Entry point: `successor-lens COMMAND ...`. User errors print one line and exit 2; anything else
is a bug and keeps its traceback (exit 1)."""

from __future__ import annotations

import argparse
import os
import sys

from successor_lens import __version__
from successor_lens.cli import (
    atlas_cmd,
    compare_cmd,
    convert_cmd,
    edit_cmd,
    heads_cmd,
    mine_cmd,
    probe_cmd,
    roles_cmd,
    run_cmd,
    train_cmd,
    wild_cmd,
)
from successor_lens.errors import UserError

COMMANDS = {
    "run": run_cmd, "heads": heads_cmd, "train": train_cmd, "mine": mine_cmd, "probe": probe_cmd, "atlas": atlas_cmd,
    "wild": wild_cmd, "roles": roles_cmd, "edit": edit_cmd, "compare": compare_cmd, "convert": convert_cmd,
}


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (the usage block is one `--help` away)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="successor-lens", description=__doc__)
    parser.add_argument("--version", action="version", version=f"successor-lens {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module in COMMANDS.items():
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("WANDB_MODE", "disabled")
    args = build_parser().parse_args(argv)
    args._argv = list(sys.argv[1:] if argv is None else argv)
    try:
        code = args._run(args)
    except UserError as err:
        print(f"successor-lens {args.command}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
