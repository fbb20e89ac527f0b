"""Arguments shared by several commands, and the checks every command runs before the model loads."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from successor_lens.artifacts.atlas_config import AtlasConfig
from successor_lens.confighelp import field_docs
from successor_lens.errors import ConfigError
from successor_lens.models.registry import DEFAULT_MODEL


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL, type=model_name,
                   help=f"model name (default {DEFAULT_MODEL}, embedded, offline; its Hugging Face id too; or any TransformerLens name)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    add_dtype_argument(p)
    add_model_seed_argument(p)
    add_verify_cache_argument(p)
    add_threads_argument(p)


def add_threads_argument(p: argparse.ArgumentParser) -> None:
    """--threads, on every command that runs a model."""
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads for torch (default: the cores this process may "
                   "run on, from its CPU affinity; OMP_NUM_THREADS when set)")


def add_verify_cache_argument(p: argparse.ArgumentParser) -> None:
    """--verify-cache, on every command that loads a model."""
    p.add_argument("--verify-cache", action="store_true", help="hash every cached file in full (converted weights, "
                   "GGUF and checkpoint digests) instead of trusting hashes remembered by inode, size and mtime")


def add_model_seed_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model-seed", default=None, type=nonnegative_int, help="the seed a generated control (planted-gpt2, "
                   "random-gpt2, random-NAME) is drawn with (default 0): `random-gpt2 --model-seed 3` is the model random-gpt2-seed3, "
                   "with its own fingerprint and run folder (how the calibration bench measures false-positive rates)")


def add_dtype_argument(p: argparse.ArgumentParser) -> None:
    from successor_lens.models.registry import DTYPES

    p.add_argument("--dtype", default="fp32", choices=list(DTYPES), help="the precision the model's weights are rounded to and "
                   "held in, as a bf16 or fp16 checkpoint runs (the arithmetic stays fp32; recorded in every artefact's "
                   "provenance; the default run folder gets -bf16 or -fp16; default fp32)")


def model_name(text: str) -> str:
    """argparse type: a model name, an embedded model's Hugging Face id resolved to it (`canonical_name`)."""
    from successor_lens.models.registry import canonical_name

    return canonical_name(text)


def old_spelling(p: argparse.ArgumentParser, old: str, new: argparse.Action) -> None:
    """`old`, an earlier name of the option `new`, still accepted but hidden from help: one
    vocabulary of flags across commands (docs/commands.md, "Flags") without breaking scripts."""
    p.add_argument(old, dest=new.dest, type=new.type or str, default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def add_window_arguments(p: argparse.ArgumentParser, contexts: int, tokens: int, what: str = "corpus windows") -> None:
    """--contexts and --context-tokens, the same two words on every command that cuts corpus windows
    (`--ctx`, the old spelling on wild, edit and tune, still works)."""
    p.add_argument("--contexts", type=positive_int, default=contexts, help=f"{what} (default {contexts})")
    new = p.add_argument("--context-tokens", dest="ctx", metavar="N", type=positive_int, default=tokens, help=f"tokens per window (default {tokens})")
    old_spelling(p, "--ctx", new)


def config_option(p: argparse.ArgumentParser, cls: type, name: str, flag: str | None = None, help_suffix: str = "", **kwargs) -> argparse.Action:
    """An option whose default and help are a config dataclass field's (the one place they are written)."""
    field = {f.name: f for f in dataclasses.fields(cls)}[name]
    default = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
    text = field_docs(cls).get(name, "") + (f" ({help_suffix})" if help_suffix else "") + ("" if default is None else f" (default {default})")
    return p.add_argument(flag or "--" + name.replace("_", "-"), default=default, help=text, **kwargs)


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _int(text, 1)


def nonnegative_int(text: str) -> int:
    return _int(text, 0)


def _int(text: str, lo: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < lo:
        raise argparse.ArgumentTypeError(f"{value} must be >= {lo}")
    return value


def finite_float(text: str) -> float:
    """argparse type: a finite number (NaN and inf refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"{text} is not a finite number")
    return value


def resolve_device(name: str | None) -> str:
    """`--device` checked against what torch sees: cpu, cuda, cuda:N (or mps)."""
    import torch

    if name is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"--device {name!r} is not a device: use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name} was asked for but torch sees no CUDA device: use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {name}: torch sees {torch.cuda.device_count()} CUDA device(s): use cuda:0..cuda:{torch.cuda.device_count() - 1}")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError("--device mps was asked for but torch sees no MPS device: use --device cpu")
    elif device.type != "cpu":
        raise ConfigError(f"--device {name!r}: use cpu, cuda or cuda:N")
    return name


def check_ctx(ctx: int, shape, lo: int = 16) -> int:
    """Tokens per corpus window: at least `lo` (shorter windows leave no context to measure in) and at
    most the model's context length."""
    if not lo <= ctx <= shape.n_ctx:
        raise ConfigError(f"--context-tokens {ctx} is outside [{lo}, {shape.n_ctx}] ({shape.name} reads at most {shape.n_ctx} tokens; "
                          f"shorter than {lo} leaves no context): pick a length in that range")
    return ctx


def out_dir(args: argparse.Namespace) -> Path:
    """--out, else runs/MODEL (a local checkpoint folder: runs/ and its folder's name), -DTYPE added for
    weights rounded by --dtype (one model per run folder: the rounded weights are another model)."""
    from successor_lens.models.registry import source_kind

    if args.out:
        return Path(args.out)
    suffix = "" if args.dtype == "fp32" else f"-{args.dtype}"
    if source_kind(args.model) == "local":
        return Path("runs") / ((Path(args.model).expanduser().resolve().name or "local-model") + suffix)
    return Path("runs") / (args.model.replace("/", "_") + suffix)


def print_table(header: list[str], rows: list[list], file=None) -> None:
    cells = [[str(c) for c in header]] + [[f"{c:.3f}" if isinstance(c, float) else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for n, row in enumerate(cells):
        print("  ".join(c.rjust(w) if n and i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))), file=file)
        if n == 0:
            print("  ".join("-" * w for w in widths), file=file)


CORPUS_CHOICES = ("a text file or folder, a hub dataset name, python-docs (the default: the Python docs' prose, shipped), "
                  "python3-doc (the system's copy) or succession-lists")


def add_corpus_argument(p: argparse.ArgumentParser, what: str = "the corpus windows") -> None:
    p.add_argument("--corpus", default=None, help=f"where {what} come from: {CORPUS_CHOICES}")


def add_context_arguments(p: argparse.ArgumentParser) -> None:
    add_corpus_argument(p, "the atlas's latent contexts")
    config_option(p, AtlasConfig, "contexts", type=positive_int)
    config_option(p, AtlasConfig, "context_tokens", type=positive_int)


def corpus_choice(source: str | None) -> str:
    """The corpus a command reads, checked (and the default resolved) before any model loads."""
    from successor_lens.corpus import context_corpus

    return context_corpus(source)


def context_options(args: argparse.Namespace) -> dict:
    """The atlas's corpus options (`corpus_choice`)."""
    return {"corpus": corpus_choice(args.corpus), "contexts": args.contexts, "context_tokens": args.context_tokens}
