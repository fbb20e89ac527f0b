"""The main job: head scan -> in-context DLA and the head choice -> activations -> SAEs -> mining ->
probes -> atlas (with summary.json), with a stage cache.

Each stage has a key: a hash of its config, the model's weights, this package's source and the
keys of the stages before it. A stage whose key matches the manifest it left last time
(`.stages/NAME.json`, written only after all of its files are written) and whose files all exist is
skipped; any other stage runs. `force` reruns the named stages and every stage after them.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from transformer_lens import HookedTransformer

from successor_lens.artifacts.atlas import AtlasConfig, SAEEntry, collect
from successor_lens.artifacts.export import build_exports
from successor_lens.artifacts.report import extras, summary_lines, write_mine, write_probe, write_scan
from successor_lens.artifacts.site import write_atlas
from successor_lens.artifacts.stages import STAGES, StageCache, cached_line
from successor_lens.artifacts.summary import build_summary
from successor_lens.corpus import context_corpus, corpus_digest
from successor_lens.errors import ConfigError, check_int
from successor_lens.features.mining import MineConfig
from successor_lens.features.pipeline import FEATURES_FILE, load_directions, mine_model
from successor_lens.io import code_digest, digest, provenance, write_json, write_text
from successor_lens.models import LazyModel, model_fingerprint, model_provenance
from successor_lens.probes.heads import ScanConfig, check_head, parse_head_name, scan_heads
from successor_lens.probes.pipeline import incontext_choice, probe_model
from successor_lens.rundir import run_folder
from successor_lens.sae_train.dictionary import load_dictionary, weights_digest
from successor_lens.sae_train.pipeline import activations_for, default_train_config, train_sae
from successor_lens.sae_train.runtime import Runtime
from successor_lens.tasks import Task, build_token_set


@dataclass
class RunConfig:
    scan: ScanConfig = field(default_factory=ScanConfig)
    seeds: int = 3
    """MLP0 dictionaries trained with seeds 0..seeds-1 (the recurrence check); the embedding gets one."""
    steps: int | None = None
    """Training steps per dictionary (default: the succession default)."""
    mine: MineConfig = field(default_factory=MineConfig)
    head: str | None = None
    """Head for the arithmetic and the latents' logit effects (default: chosen from the OV score
    and in-context DLA together, `probes/choice.py`)."""
    seed: int = 0
    """Seed of the probes' controls and splits."""
    atlas: AtlasConfig = field(default_factory=AtlasConfig)
    tasks: list[Task] | None = None
    """Item tasks for the dictionaries, mining and probes (default: numbers 0..500 and the rest)."""
    scan_tasks: list[Task] | None = None
    """Tasks of the head scan (default: the standard set, numbers 1..200)."""

    def __post_init__(self):
        check_int("--seeds", self.seeds, 1, 64, "train at least one MLP0 dictionary (2 or more for the recurrence check)")
        if self.steps is not None:
            check_int("--steps", self.steps, 1)
        check_int("seed", self.seed, 0)
        if self.head is not None:
            parse_head_name(self.head)

    def check(self, shape) -> None:
        """Checks against the model's shape (a `ModelShape`), before it loads."""
        if self.head is not None:
            check_head(self.head, shape)

    def sae_names(self) -> dict[str, tuple[str, int]]:
        names = {f"mlp0-s{s}": ("mlp0", s) for s in range(self.seeds)}
        names["embed-s0"] = ("embed", 0)
        return names


STAGE_CONFIG: dict[str, Callable[[RunConfig], dict]] = {
    "heads": lambda c: {"scan": asdict(c.scan), "tasks": c.scan_tasks},
    "incontext": lambda c: {"head": c.head},
    "activations": lambda c: {"tasks": c.tasks},
    "saes": lambda c: {"seeds": c.seeds, "steps": c.steps},
    "mine": lambda c: {"mine": asdict(c.mine)},
    "probes": lambda c: {"seed": c.seed},
    "atlas": lambda c: _atlas_key(c),
}


def _atlas_key(c: RunConfig) -> dict:
    """The atlas stage's config with its corpus resolved (None and the name it stands for are one key)
    and the corpus's content hash."""
    corpus = context_corpus(c.atlas.corpus)
    return {"atlas": {**asdict(c.atlas), "corpus": corpus}, "corpus": corpus_digest(corpus), "tasks": c.tasks}


@dataclass
class PipelineResult:
    out: Path
    atlas: Path
    ran: list[str]
    cached: list[str]
    seconds: dict[str, float]
    summary: list[str]
    keys: dict[str, str] = field(default_factory=dict)
    """Each stage's cache key (`StageCache.remember`)."""


class _Stages:
    """The stage bodies; each returns the files it wrote. Later stages read earlier ones from disk.
    The model is loaded on first use (`model` may be a function that loads it), so a fully cached
    run never loads it."""

    def __init__(self, model, out: Path, config: RunConfig, runtime: Runtime, progress: bool):
        self._model, self.out, self.config, self.runtime, self.progress = model, out, config, runtime, progress

    @property
    def model(self) -> HookedTransformer:
        if not isinstance(self._model, HookedTransformer):
            self._model = self._model()
        return self._model

    def heads(self) -> list[Path]:
        token_set = build_token_set(self.model.tokenizer, self.config.scan_tasks)
        return write_scan(scan_heads(self.model, token_set, self.config.scan), self.model, self.out)

    def incontext(self) -> list[Path]:
        heads = json.loads((self.out / "heads.json").read_text())
        if self.config.head and self.config.head not in heads["heads"]:
            raise ConfigError(f"--head {self.config.head} is not a head of {self.model.cfg.model_name} "
                             f"({self.model.cfg.n_layers} layers x {self.model.cfg.n_heads} heads)")
        ov = {h: v["succession"] for h, v in heads["heads"].items()}
        measured = incontext_choice(self.model, ov, self.config.scan_tasks, self.config.head)
        doc = {"provenance": provenance(**model_provenance(self.model)), "n_prompts": measured.n_prompts,
               "in_context": measured.result.summary(ov) if measured.result else None, "choice": measured.choice.to_json()}
        return [write_json(self.out / "incontext.json", doc)]

    def activations(self) -> list[Path]:
        return [activations_for(self.model, site, "succession", self.out, tasks=self.config.tasks).folder for site in ("mlp0", "embed")]

    def saes(self) -> list[Path]:
        folders = []
        for name, (site, seed) in self.config.sae_names().items():
            cfg = default_train_config("succession", self.model.cfg.d_model, steps=self.config.steps, seed=seed)
            run = train_sae(self.model, site, cfg, self.out, self.runtime, progress=self.progress, name=f"saes/{name}", tasks=self.config.tasks)
            folders.append(run.folder)
        return folders

    def _sae_folders(self, site: str) -> list[str]:
        return [str(self.out / "saes" / n) for n, (s, _) in self.config.sae_names().items() if s == site]

    def mine(self) -> list[Path]:
        cfg, tasks = self.config.mine, self.config.tasks
        result = mine_model(self.model, self.out, self.runtime, self._sae_folders("mlp0"), cfg=cfg, tasks=tasks)
        embed = mine_model(self.model, self.out, self.runtime, self._sae_folders("embed"), cfg=cfg, site="embed", tasks=tasks, null_draws=0)
        written = write_mine(result, self.model, self.out)
        prov = provenance(**model_provenance(self.model), site="embed")
        written.append(write_json(self.out / "mine_embed.json", {"provenance": prov, **embed.to_json()}))
        return written

    def probes(self) -> list[Path]:
        directions = load_directions(self.out / FEATURES_FILE)
        head = json.loads((self.out / "incontext.json").read_text())["choice"]["head"]
        run = probe_model(self.model, directions, head, self.config.seed, self.config.tasks, self.config.scan_tasks)
        return write_probe(run, self.model, self.out)

    def atlas(self) -> list[Path]:
        read = lambda name: json.loads((self.out / name).read_text())  # noqa: E731
        mine_json, mine_embed, probe_json = read("mine.json"), read("mine_embed.json"), read("probe.json")
        summary = build_summary(self.model.cfg.model_name, read("heads.json"), read("incontext.json")["choice"], mine_json, probe_json)
        summary_path = write_json(self.out / "summary.json", {"provenance": provenance(**model_provenance(self.model)), **summary})
        entries = []
        for name, (site, seed) in self.config.sae_names().items():
            d = load_dictionary(self.out / "saes" / name)
            mined = (mine_json["per_sae"][seed] if site == "mlp0" else mine_embed["per_sae"][0])
            if mined.get("weights_sha256") != weights_digest(self.out / "saes" / name):
                raise RuntimeError(f"saes/{name} is not the dictionary mine.json describes: the stage cache let a stale stage through")
            latent_class = {int(l): int(c) for c, ls in mined["latents_per_class"].items() for l in ls}
            entries.append(SAEEntry(name, d.sae, d.source, latent_class, _metrics_of(d), mined))
        doc = collect(self.model, entries, read("heads.json"), probe_json, mine_json, self.config.atlas, self.config.tasks,
                      self.config.scan_tasks, probe_json["head"], run_config=_config_json(self.config))
        doc.update(extras(self.out), summary=summary)
        exports = build_exports(self.model, entries, self.config.atlas, probe_json["head"], self.config.tasks, self.config.seed, self.progress)
        index = write_atlas(doc, self.out / "atlas", self.progress, exports)
        report = self.out / "report.md"
        write_text(report, (self.out / "atlas" / "report.md").read_text())
        return [index, self.out / "atlas" / "atlas.json", report, summary_path]


def _fingerprint(model) -> str:
    """The model's content hash in the stage keys: the one recorded at load (`models.source_fingerprint`,
    also what a `LazyModel` knows before loading), else a hash of the weights of a model built in code."""
    if isinstance(model, HookedTransformer):
        weights = model_fingerprint(model)
        loaded = getattr(model, "successor_lens_fingerprint", None)
        return loaded if loaded and getattr(model, "successor_lens_weights", None) == weights else weights  # edited since: its weights
    return model.fingerprint


def _config_json(config: RunConfig) -> dict:
    return json.loads(json.dumps(asdict(config), default=str))


def run_pipeline(
    model: HookedTransformer | LazyModel, out: str | Path, config: RunConfig = RunConfig(), runtime: Runtime | None = None,
    force: tuple[str, ...] = (), progress: bool = True, log: Callable[[str], None] = print,
) -> PipelineResult:
    """Run (or reuse) every stage; returns which stages ran and the summary lines. `model` is a loaded
    model or a `LazyModel` (loaded only if a stage has to run)."""
    out = Path(out)
    unknown = [s for s in force if s not in STAGES and s != "all"]
    if unknown:
        raise ConfigError(f"unknown stage {unknown[0]!r} for --force: use one of {', '.join(STAGES)} or all")
    first_forced = min([STAGES.index(s) for s in force if s in STAGES] + ([0] if "all" in force else []), default=len(STAGES))
    with run_folder(out, "run", "run_pipeline"):
        stages = _Stages(model, out, config, runtime or Runtime("cpu"), progress)
        cache = StageCache(out)
        base = {"model": _fingerprint(model), "code": code_digest()}
        ran, cached, seconds, upstream, keys = [], [], {}, [], {}
        for i, stage in enumerate(STAGES):
            key = digest({**base, "stage": stage, "config": STAGE_CONFIG[stage](config), "upstream": upstream})
            upstream, keys[stage] = upstream + [key], key
            if i < first_forced and cache.fresh(stage, key):
                cached.append(stage)
                seconds[stage] = 0.0
                log(cached_line(i, cache.manifest(stage)["seconds"]))
                continue
            log(f"[{i + 1}/{len(STAGES)}] {stage:<11} running ...")
            cache.invalidate(stage)  # before any write: a kill from here on leaves this and later stages stale
            start = time.perf_counter()
            outputs = getattr(stages, stage)()
            seconds[stage] = time.perf_counter() - start
            cache.record(stage, key, outputs, seconds[stage])
            ran.append(stage)
            log(f"[{i + 1}/{len(STAGES)}] {stage:<11} done in {seconds[stage]:.1f}s")
        doc = json.loads((out / "atlas" / "atlas.json").read_text())
    return PipelineResult(out, out / "atlas" / "index.html", ran, cached, seconds, summary_lines(doc), keys)


def atlas_for_dictionary(
    model: HookedTransformer, dictionary, out: str | Path, cfg: AtlasConfig = AtlasConfig(), head: str | None = None,
    tasks: list[Task] | None = None, scan_tasks: list[Task] | None = None, mine_cfg: MineConfig = MineConfig(),
) -> tuple[Path, list[str]]:
    """The atlas of one dictionary (`load_dictionary` result): scan, mining of its latents, latent pages."""
    from successor_lens.features.mining import mine
    from successor_lens.features.pipeline import item_acts, item_table

    sae = dictionary.sae.to("cpu")
    hook = sae.cfg.metadata.hook_name
    if sae.cfg.d_in != model.cfg.d_model:
        raise ConfigError(f"{dictionary.source}: d_in {sae.cfg.d_in} but {model.cfg.model_name} has d_model {model.cfg.d_model}: pass the right --model")
    scan = scan_heads(model, build_token_set(model.tokenizer, scan_tasks))
    heads_json = scan.to_json()
    table = item_table(model, tasks)
    acts = item_acts(model, table, hook)
    mined = mine(sae, acts, table, mine_cfg)
    sae_id = hook.replace("blocks.", "L").replace(".hook_", "-").replace("hook_", "") if hook else "sae"
    entry = SAEEntry(sae_id, sae, dictionary.source, dict(mined.latent_class), _metrics_of(dictionary), mined.summary())
    doc = collect(model, [entry], heads_json, None, None, cfg, tasks, scan_tasks, head or heads_json["best_head"],
                  run_config={"sae": dictionary.source, "mine": asdict(mine_cfg)}, acts_by_hook={hook: acts})
    exports = build_exports(model, [entry], cfg, head or heads_json["best_head"], tasks)
    with run_folder(out, "atlas", "atlas_for_dictionary"):
        index = write_atlas(doc, Path(out) / "atlas", exports=exports)
    return index, summary_lines(json.loads((index.parent / "atlas.json").read_text()))


def _metrics_of(dictionary) -> dict | None:
    source = Path(dictionary.source)
    path = source / "metrics.json"
    if not path.is_file():
        return None
    metrics = json.loads(path.read_text())
    metrics.pop("log10_density", None)
    return metrics
