"""successor-lens: SAE feature analysis of how language models represent ordinal tokens.

The Python API, imported lazily (so `import successor_lens` and the CLI's `--help` stay fast)::

    import successor_lens as sl

    model = sl.load_model("planted-gpt2")                       # or "organism-gpt2", "smollm2-135m", "gpt2", "./my-checkpoint"
    scan = sl.scan_heads(model)                                 # the standard tasks' items in its tokenizer
    run = sl.train_sae(model, "mlp0", sl.TrainConfig(steps=300), "runs/api", sl.Runtime("cpu"))
    result = sl.run(model, "runs/api-run")                      # the whole job, cached stages

See README.md, "Python API".
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

LAYERS = ("base", "sae_train", "features", "probes", "artifacts", "runner", "cli")
"""The package in the order a run flows: a module imports only from its own layer or earlier ones.
"base" is every module at the package's root and the `models/` package (the model sources, tasks,
sites, corpus, nulls, the paper's figures, file names, I/O and errors); each other layer is the
subpackage of that name (`__main__` belongs to the CLI). tests/test_layering.py reads the tree and
holds every module to this order."""

_EXPORTS: dict[str, tuple[str, str]] = {
    # models and tasks
    "load_model": ("successor_lens.models.loading", "load_model"),
    "model_shape": ("successor_lens.models.loading", "model_shape"),
    "model_provenance": ("successor_lens.models.provenance", "model_provenance"),
    "build_token_set": ("successor_lens.tasks", "build_token_set"),
    "standard_tasks": ("successor_lens.tasks", "standard_tasks"),
    "Task": ("successor_lens.tasks", "Task"),
    # the successor-head scan
    "scan_heads": ("successor_lens.probes.scan", "scan_heads"),
    "ScanConfig": ("successor_lens.probes.probe_configs", "ScanConfig"),
    # SAEs
    "train_sae": ("successor_lens.sae_train.train_run", "train_sae"),
    "TrainConfig": ("successor_lens.sae_train.train_config", "TrainConfig"),
    "Runtime": ("successor_lens.sae_train.runtime", "Runtime"),
    "load_dictionary": ("successor_lens.sae_train.dictionary", "load_dictionary"),
    "save_dictionary": ("successor_lens.sae_train.dictionary", "save_dictionary"),
    "spliced_loss": ("successor_lens.sae_train.spliced", "spliced_loss"),
    # mod-10 features
    "item_table": ("successor_lens.features.mine_run", "item_table"),
    "item_acts": ("successor_lens.features.mine_run", "item_acts"),
    "mine": ("successor_lens.features.mining", "mine"),
    "mining_null": ("successor_lens.features.mining", "mining_null"),
    "MineConfig": ("successor_lens.features.mine_config", "MineConfig"),
    # probes, arithmetic, edits
    "run_probes": ("successor_lens.probes.probe_run", "probe_model"),
    # artefacts and the whole job
    "write_atlas": ("successor_lens.artifacts.atlas_site", "write_atlas"),
    "compare_runs": ("successor_lens.artifacts.compare", "compare_runs"),
    "run": ("successor_lens.runner.run", "run_pipeline"),
    "RunConfig": ("successor_lens.runner.run_config", "RunConfig"),
    "UserError": ("successor_lens.errors", "UserError"),
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'successor_lens' has no attribute {name!r}")
    module, attr = _EXPORTS[name]
    value = getattr(import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from successor_lens.artifacts.atlas_site import write_atlas  # noqa: F401
    from successor_lens.artifacts.compare import compare_runs  # noqa: F401
    from successor_lens.errors import UserError  # noqa: F401
    from successor_lens.features.mine_config import MineConfig  # noqa: F401
    from successor_lens.features.mine_run import item_acts, item_table  # noqa: F401
    from successor_lens.features.mining import mine, mining_null  # noqa: F401
    from successor_lens.models.loading import load_model, model_shape  # noqa: F401
    from successor_lens.models.provenance import model_provenance  # noqa: F401
    from successor_lens.probes.probe_configs import ScanConfig  # noqa: F401
    from successor_lens.probes.probe_run import probe_model as run_probes  # noqa: F401
    from successor_lens.probes.scan import scan_heads  # noqa: F401
    from successor_lens.runner.run import run_pipeline as run  # noqa: F401
    from successor_lens.runner.run_config import RunConfig  # noqa: F401
    from successor_lens.sae_train.dictionary import load_dictionary, save_dictionary  # noqa: F401
    from successor_lens.sae_train.runtime import Runtime  # noqa: F401
    from successor_lens.sae_train.spliced import spliced_loss  # noqa: F401
    from successor_lens.sae_train.train_config import TrainConfig  # noqa: F401
    from successor_lens.sae_train.train_run import train_sae  # noqa: F401
    from successor_lens.tasks import Task, build_token_set, standard_tasks  # noqa: F401
