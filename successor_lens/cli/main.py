"""Entry point: `successor-lens COMMAND ...`. User errors print one line and exit 2; anything else
is a bug and keeps its traceback (exit 1)."""

from __future__ import annotations

import argparse
import errno
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
    organism_cmd,
    probe_cmd,
    roles_cmd,
    run_cmd,
    train_cmd,
    tune_cmd,
    wild_cmd,
)
from successor_lens.errors import UserError

COMMANDS = {
    "run": run_cmd, "heads": heads_cmd, "train": train_cmd, "mine": mine_cmd, "probe": probe_cmd, "atlas": atlas_cmd,
    "wild": wild_cmd, "roles": roles_cmd, "edit": edit_cmd, "compare": compare_cmd, "convert": convert_cmd,
    "organism": organism_cmd, "tune": tune_cmd,
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


FILESYSTEM_FIXES = {
    errno.ENOSPC: "free space on that disk, or pass a folder on another one",
    errno.EDQUOT: "free space within your quota, or pass a folder on another disk",
    errno.EROFS: "pass a folder on a writable file system (the model cache follows $SUCCESSOR_LENS_CACHE)",
    errno.ENAMETOOLONG: "pass a shorter path",
    errno.ENOTDIR: "a file stands where a folder is needed: pass another path",
    errno.EACCES: "pass a path you can write to",
    errno.EPERM: "pass a path you can write to",
    errno.ELOOP: "a link points to itself: pass another path",
}
"""File-system errors that are the machine's or the user's, not a bug: one line naming the path and the fix."""


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("WANDB_MODE", "disabled")
    args = build_parser().parse_args(argv)
    args._argv = list(sys.argv[1:] if argv is None else argv)
    if hasattr(args, "threads"):  # a command that runs a model: threads for the cores it may use, not the machine's
        from successor_lens.threads import set_threads

        set_threads(args.threads)
    if getattr(args, "verify_cache", False):
        from successor_lens.models import fingerprints

        fingerprints.FULL_CHECK = True
    try:
        if getattr(args, "model_seed", None) is not None:  # a generated control drawn with another seed is another model name
            from successor_lens.models.controls import seeded

            args.model = seeded(args.model, args.model_seed)
        code = args._run(args)
    except UserError as err:
        return _fail(args.command, str(err))
    except OSError as err:
        if err.errno not in FILESYSTEM_FIXES:
            raise
        where = f"{err.filename}: " if err.filename else ""
        return _fail(args.command, f"{where}{err.strerror}: {FILESYSTEM_FIXES[err.errno]}")
    except KeyboardInterrupt:
        print(f"successor-lens {args.command}: interrupted; the folder is as a kill would leave it (finished stages kept, "
              "the stopped one discarded): rerun the same command to go on", file=sys.stderr)
        return 130
    return code or 0


def _fail(command: str, message: str) -> int:
    print(f"successor-lens {command}: error: {' '.join(message.split())}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
