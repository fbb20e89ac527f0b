"""Every file and folder name a run folder, an atlas or a `compare` folder holds, in one place.

Stages write and read their artefacts by these names only (a test checks that no other module
spells one out). Layouts of other libraries (sae-lens's `cfg.json`, sparsify's `sae.safetensors`,
...) belong to `sae_train/formats.py`, not here.
"""

from __future__ import annotations

# --- owning a folder (runner/folders.py)
MARKER = ".successor-lens.json"
"""Marks a folder this package owns, and its kind."""
LOCK = ".successor-lens.lock"
HOLDER = ".successor-lens.holder.json"
STAGES = ".stages"
"""The stage cache's manifests (runner/stage_cache.py)."""

# --- a run folder, stage by stage
HEADS = "heads.json"
HEADS_PNG = "heads.png"
HEADS_COPYING_PNG = "heads_copying.png"
INCONTEXT = "incontext.json"
ACTIVATIONS = "activations"
ACTIVATIONS_META = "meta.json"
CHECKPOINTS = "checkpoints"
SAES = "saes"
MINE = "mine.json"
MINE_EMBED = "mine_embed.json"
MINE_PNG = "mine_classes.png"
FEATURES = "features.safetensors"
PROBE = "probe.json"
PROBE_PNG = "probe_accuracy.png"
ARITHMETIC_PNG = "arithmetic.png"
OFFSET_PNG = "offset_profile.png"
SUMMARY = "summary.json"
REPORT = "report.md"
REPORT_HTML = "report.html"
"""report.md rendered as a page of the atlas."""
WILD = "wild.json"
ROLES = "roles.json"
ROLES_PNG = "roles_patching.png"
WILD_PNG = "wild_categories.png"
INCONTEXT_PNG = "incontext_dla.png"
EDITS = "edits"
TUNE = "tune"
"""`tune`'s folder: one folder per goal, and the content-keyed records of every evaluation."""
TUNE_JSON = "tune.json"
PARETO_PNG = "pareto.png"
CHOSEN_EDIT = "chosen_edit.json"
"""The recommended edit as a spec `successor-lens edit --spec` replays."""
TUNE_RECORDS = "records"
EXPORT_JSON = "successor-lens-export.json"
"""`edit --export-model`'s record in the exported Hugging Face folder: the source, the edits, the files."""
DECISION_HTML = "decision.html"
"""The atlas's decision page for a non-specialist (one per tuned goal: decision-GOAL.html)."""

# --- a saved dictionary (beside sae-lens's own files)
PROVENANCE = "provenance.json"
METRICS = "metrics.json"

# --- the atlas
ATLAS = "atlas"
ATLAS_JSON = "atlas.json"
ATLAS_SCHEMA = "atlas.schema.json"
INDEX = "index.html"
IMAGES = "images"
NEURONPEDIA = "neuronpedia"
RUN_SETTINGS = "run_settings.json"
SKIPPED = "skipped_indexes.json"

# --- the model cache (models/: $SUCCESSOR_LENS_CACHE)
CONVERSION_META = "meta.json"
CONVERSION_WEIGHTS = "weights.safetensors"
FILE_DIGESTS = "file_digests.json"

# --- compare
COMPARE_MD = "compare.md"
COMPARE_JSON = "compare.json"
COMPARE_PNG = "succession_scores.png"
