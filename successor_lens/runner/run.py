"""The main job: head scan -> activations -> SAEs -> mining -> in-context DLA and the head choice ->
probes -> atlas (with summary.json), with a stage cache.

Each stage has a key (`run_config.stage_keys`). A stage whose key matches the manifest it left last
time (`.stages/NAME.json`, written only after all of its files are written) and whose files are all
as it left them is skipped; any other stage runs. `force` reruns the named stages and every stage
that reads them (`stage_cache.dependents`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from transformer_lens import HookedTransformer

from successor_lens.artifacts.atlas_schema import load_atlas
from successor_lens.artifacts.records import HEADS_RECORD, MINE_RECORD
from successor_lens.artifacts.report import summary_lines
from successor_lens.artifacts.summary import lean_lines
from successor_lens.display import html_card
from successor_lens.errors import ConfigError
from successor_lens.filenames import ATLAS, ATLAS_JSON, INDEX
from successor_lens.models.lean import LeanModel
from successor_lens.models.loading import LazyModel
from successor_lens.models.provenance import model_fingerprint
from successor_lens.progress import honours_progress
from successor_lens.runner.folders import run_folder
from successor_lens.runner.run_config import RunConfig, stage_keys
from successor_lens.runner.stage_cache import STAGES, WHOLE_MODEL, StageCache, cached_line, dependents
from successor_lens.runner.stages import StageBodies
from successor_lens.sae_train.runtime import Runtime


@dataclass
class PipelineResult:
    out: Path
    atlas: Path | None
    """The atlas's index.html (None when `run --lean` left the atlas stage to a run with the whole model)."""
    ran: list[str]
    cached: list[str]
    seconds: dict[str, float]
    summary: list[str]
    keys: dict[str, str] = field(default_factory=dict)
    """Each stage's cache key (`run_config.stage_keys`)."""
    skipped: list[str] = field(default_factory=list)
    """Stages `run --lean` did not run (`WHOLE_MODEL`)."""

    def __repr__(self) -> str:
        below = sum("NOT above its null" in line for line in self.summary)
        left = f"; not run {', '.join(self.skipped)}" if self.skipped else ""
        return (f"PipelineResult({self.out}: ran {', '.join(self.ran) or 'nothing'}; cached {', '.join(self.cached) or 'nothing'}{left}; "
                f"{len(self.summary)} summary lines, {below} NOT above their null; atlas {self.atlas})")

    def _repr_html_(self) -> str:
        rows = [[stage, "ran" if stage in self.ran else "cached" if stage in self.cached else "not run", self.seconds.get(stage, 0.0)]
                for stage in STAGES if stage in {*self.cached, *self.ran, *self.skipped}]
        return html_card(f"successor-lens run: {self.out}", ["stage", "", "seconds"], rows, [*self.summary, f"atlas: {self.atlas}"])


def model_key(model: HookedTransformer | LazyModel | LeanModel) -> str:
    """The model's content hash in the stage keys: the one recorded at load (`registry.source_fingerprint`,
    also what a `LazyModel` knows before loading), else a hash of the weights of a model built in code
    or edited since it was loaded."""
    if isinstance(model, HookedTransformer):
        weights = model_fingerprint(model)
        loaded = getattr(model, "successor_lens_fingerprint", None)
        return loaded if loaded and getattr(model, "successor_lens_weights", None) == weights else weights
    return model.fingerprint


@honours_progress
def run_pipeline(
    model: HookedTransformer | LazyModel | LeanModel, out: str | Path, config: RunConfig | None = None, runtime: Runtime | None = None,
    force: tuple[str, ...] = (), progress: bool = True, log: Callable[[str], None] = print,
) -> PipelineResult:
    """Run (or reuse) every stage; returns which stages ran and the summary lines. `model` is a loaded
    model, a `LazyModel` (loaded only if a stage has to run) or a `LeanModel` (never loaded whole:
    the `WHOLE_MODEL` stages are left, and said so, unless cached)."""
    out, config = Path(out), config or RunConfig()
    unknown = [s for s in force if s not in STAGES and s != "all"]
    if unknown:
        raise ConfigError(f"unknown stage {unknown[0]!r} for --force: use one of {', '.join(STAGES)} or all")
    forced = set(STAGES) if "all" in force else {d for s in force for d in dependents(s)}
    with run_folder(out, "run", "run_pipeline"):
        bodies = StageBodies(model, out, config, runtime or Runtime("cpu"), progress)
        cache = StageCache(out)
        keys = stage_keys(model_key(model), config)
        ran, cached, seconds = [], [], {}
        lean, skipped = isinstance(model, LeanModel), []
        for i, stage in enumerate(STAGES):
            if stage not in forced and cache.fresh(stage, keys[stage]):
                cached.append(stage)
                seconds[stage] = 0.0
                log(cached_line(i, (cache.manifest(stage) or {}).get("seconds", 0.0)))
                continue
            if lean and stage in WHOLE_MODEL:
                skipped.append(stage)
                log(f"[{i + 1}/{len(STAGES)}] {stage:<11} not run: it needs the whole model (run without --lean to make it)")
                continue
            log(f"[{i + 1}/{len(STAGES)}] {stage:<11} running ...")
            cache.invalidate(stage)  # before any write: a kill from here on leaves this stage and those that read it stale
            start = time.perf_counter()
            outputs = getattr(bodies, stage)()
            seconds[stage] = time.perf_counter() - start
            cache.record(stage, keys[stage], outputs, seconds[stage])
            ran.append(stage)
            log(f"[{i + 1}/{len(STAGES)}] {stage:<11} done in {seconds[stage]:.1f}s")
        if skipped:
            summary = [*lean_lines(HEADS_RECORD.read(out), MINE_RECORD.read(out)),
                       f"not run without the whole model: {', '.join(skipped)}; `successor-lens run` without --lean makes them "
                       "and reuses the stages above"]
            return PipelineResult(out, None, ran, cached, seconds, summary, keys, skipped)
        doc = load_atlas(out / ATLAS / ATLAS_JSON)
    return PipelineResult(out, out / ATLAS / INDEX, ran, cached, seconds, summary_lines(doc), keys)
