"""The bodies of the main job's stages: heads -> activations -> saes -> mine -> incontext -> probes
-> atlas. Each returns the files it wrote; later stages read earlier ones from disk through their
typed records (`artifacts/records.py`). The model is loaded on first use, so a fully cached run
never loads it."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from transformer_lens import HookedTransformer

from successor_lens.artifacts.atlas import SAEEntry, collect
from successor_lens.artifacts.atlas_site import write_atlas
from successor_lens.artifacts.neuronpedia import build_exports
from successor_lens.artifacts.records import HEADS_RECORD, INCONTEXT_RECORD, MINE_EMBED_RECORD, MINE_RECORD, PROBE_RECORD, recorded_heads
from successor_lens.artifacts.stage_files import extras, write_mine, write_probe, write_scan
from successor_lens.artifacts.summary import build_summary
from successor_lens.errors import ConfigError, UserError
from successor_lens.features.mine_run import load_directions, mine_model
from successor_lens.filenames import ATLAS, ATLAS_JSON, FEATURES, INCONTEXT, METRICS, MINE_EMBED, REPORT, SAES, SUMMARY
from successor_lens.io import provenance, read_json, write_json, write_text
from successor_lens.models.lean import LeanModel
from successor_lens.models.provenance import model_provenance
from successor_lens.probes.edits import ablation_effect
from successor_lens.probes.head_choice import incontext_choice
from successor_lens.probes.probe_run import probe_model
from successor_lens.probes.scan import scan_heads, scan_lean
from successor_lens.runner.run_config import RunConfig
from successor_lens.sae_train.dictionary import load_dictionary, weights_digest
from successor_lens.sae_train.harvest import activations_for
from successor_lens.sae_train.runtime import Runtime
from successor_lens.sae_train.train_config import default_train_config
from successor_lens.sae_train.train_run import train_sae
from successor_lens.tasks import build_token_set


class StageBodies:
    """One method per stage, named as the stage. `model` is a loaded model or a function that loads
    it; a `LeanModel` gives the front of the model (embeddings, layer 0, unembedding), which serves
    every stage but the `WHOLE_MODEL` ones, and the head scan reads its checkpoint a layer at a time."""

    def __init__(self, model, out: Path, config: RunConfig, runtime: Runtime, progress: bool):
        self._model, self.out, self.config, self.runtime, self.progress = model, out, config, runtime, progress
        self.lean = model if isinstance(model, LeanModel) else None

    @property
    def model(self) -> HookedTransformer:
        if not isinstance(self._model, HookedTransformer):
            self._model = self._model()
        return self._model

    def heads(self) -> list[Path]:
        if self.lean is not None:
            checkpoint = self.lean.checkpoint
            result = scan_lean(checkpoint, build_token_set(checkpoint.tokenizer, self.config.scan_tasks), self.config.scan)
            return write_scan(result, checkpoint.stand_in(self.lean.source()), self.out)  # provenance: what the scan read
        token_set = build_token_set(self.model.tokenizer, self.config.scan_tasks)
        return write_scan(scan_heads(self.model, token_set, self.config.scan), self.model, self.out)

    def incontext(self) -> list[Path]:
        heads = HEADS_RECORD.read(self.out)
        if self.config.head and self.config.head not in heads["heads"]:
            raise ConfigError(f"--head {self.config.head} is not a head of {self.model.cfg.model_name} "
                              f"({self.model.cfg.n_layers} layers x {self.model.cfg.n_heads} heads)")
        ov = {h: v["succession"] for h, v in heads["heads"].items()}
        measured = incontext_choice(self.model, ov, self.config.scan_tasks, self.config.head, self.config.seed)
        ablation = (ablation_effect(self.model, measured.held_out, measured.choice.head, self.config.seed)
                    if measured.held_out else None)
        doc = {"provenance": provenance(**model_provenance(self.model)), "n_prompts": measured.n_prompts,
               "in_context": measured.result.summary(ov) if measured.result else None, "choice": measured.choice.to_json(),
               "ablation": ablation}
        return [write_json(self.out / INCONTEXT, doc)]

    def activations(self) -> list[Path]:
        return [activations_for(self.model, site, "succession", self.out, tasks=self.config.tasks).folder for site in ("mlp0", "embed")]

    def saes(self) -> list[Path]:
        folders = []
        for name, (site, seed) in self.config.sae_names().items():
            cfg = default_train_config("succession", self.model.cfg.d_model, steps=self.config.steps, seed=seed)
            run = train_sae(self.model, site, cfg, self.out, self.runtime, progress=self.progress, name=f"{SAES}/{name}", tasks=self.config.tasks)
            assert run is not None  # one process: it saves the dictionary
            folders.append(run.folder)
        return folders

    def _sae_folders(self, site: str) -> list[str]:
        return [str(self.out / SAES / n) for n, (s, _) in self.config.sae_names().items() if s == site]

    def mine(self) -> list[Path]:
        cfg, tasks = self.config.mine, self.config.tasks
        result = mine_model(self.model, self.out, self.runtime, self._sae_folders("mlp0"), cfg=cfg, tasks=tasks)
        embed = mine_model(self.model, self.out, self.runtime, self._sae_folders("embed"), cfg=cfg, site="embed", tasks=tasks, null_draws=0)
        written = write_mine(result, self.model, self.out)
        prov = provenance(**model_provenance(self.model), site="embed")
        written.append(write_json(self.out / MINE_EMBED, {"provenance": prov, **embed.to_json()}))
        return written

    def probes(self) -> list[Path]:
        directions = load_directions(self.out / FEATURES)
        head, = recorded_heads(self.out / INCONTEXT, [INCONTEXT_RECORD.read(self.out)["choice"]["head"]], self.model, "`successor-lens run`")
        run = probe_model(self.model, directions, head, self.config.seed, self.config.tasks, self.config.scan_tasks, run_folder=self.out)
        return write_probe(run, self.model, self.out)

    def summary(self) -> dict[str, Any]:
        """summary.json's figures and verdicts from the stages before the atlas (the calibration bench reads them too)."""
        incontext = INCONTEXT_RECORD.read(self.out)
        return build_summary(self.model.cfg.model_name, HEADS_RECORD.read(self.out), incontext["choice"], MINE_RECORD.read(self.out),
                             PROBE_RECORD.read(self.out), incontext.get("ablation"))

    def atlas(self) -> list[Path]:
        heads, mine_json, mine_embed, probe_json = (HEADS_RECORD.read(self.out), MINE_RECORD.read(self.out), MINE_EMBED_RECORD.read(self.out),
                                                    PROBE_RECORD.read(self.out))
        summary = self.summary()
        summary_path = write_json(self.out / SUMMARY, {"provenance": provenance(**model_provenance(self.model)), **summary})
        entries = []
        for name, (site, seed) in self.config.sae_names().items():
            d = load_dictionary(self.out / SAES / name)
            mined = mine_json["per_sae"][seed] if site == "mlp0" else mine_embed["per_sae"][0]
            if mined.get("weights_sha256") != weights_digest(self.out / SAES / name):
                raise RuntimeError(f"{SAES}/{name} is not the dictionary mine.json describes: the stage cache let a stale stage through")
            latent_class = {int(l): int(c) for c, ls in mined["latents_per_class"].items() for l in ls}
            entries.append(SAEEntry(name, d.sae, f"{SAES}/{name}", latent_class, metrics_of(d), mined))  # relative: the folder can move
        doc = collect(self.model, entries, heads, probe_json, mine_json, self.config.atlas, self.config.tasks,
                      self.config.scan_tasks, probe_json["head"], run_config=json.loads(json.dumps(asdict(self.config), default=str)),
                      run_folder=self.out)
        doc.update(extras(self.out), summary=summary)
        exports = build_exports(self.model, entries, self.config.atlas, probe_json["head"], self.config.tasks, self.config.seed, self.progress)
        index = write_atlas(doc, self.out / ATLAS, self.progress, exports)
        report = write_text(self.out / REPORT, (self.out / ATLAS / REPORT).read_text())
        return [index, self.out / ATLAS / ATLAS_JSON, report, summary_path]


def metrics_of(dictionary) -> dict[str, Any]:
    """A dictionary folder's metrics.json (written at training), without the per-latent densities,
    and `trained_on`: what its provenance says it was trained on."""
    path = Path(dictionary.source) / METRICS
    metrics = (read_json(path, "dictionary metrics", dict, UserError, "delete it, or re-train the dictionary", max_bytes=64 << 20)
               if path.is_file() else {})
    metrics.pop("log10_density", None)
    return {**metrics, "trained_on": trained_on(dictionary.provenance)}


def trained_on(provenance: dict) -> dict:
    """{"data": what a dictionary was trained on, in words; "corpus": the corpus, when in context}."""
    source = provenance.get("token_source")
    if source == "succession":
        return {"data": "the succession task items, each token alone (out of context)", "corpus": None}
    if source == "vocab":
        return {"data": "every vocabulary token alone (out of context)", "corpus": None}
    if source == "corpus":
        return {"data": f"corpus {provenance.get('corpus') or 'python-docs'}, in context", "corpus": provenance.get("corpus") or "python-docs"}
    return {"data": "data this package has no record of (a dictionary made elsewhere)", "corpus": None}
