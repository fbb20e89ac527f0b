"""`successor-lens atlas --sae`: the atlas of one saved or pretrained dictionary alone, in a folder of its own."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from transformer_lens import HookedTransformer

from successor_lens.artifacts.atlas import SAEEntry, collect
from successor_lens.artifacts.atlas_config import AtlasConfig
from successor_lens.artifacts.atlas_site import write_atlas
from successor_lens.artifacts.neuronpedia import build_exports
from successor_lens.artifacts.report import summary_lines
from successor_lens.errors import ConfigError
from successor_lens.features.mine_config import MineConfig
from successor_lens.features.mine_run import item_acts, item_table
from successor_lens.features.mining import mine
from successor_lens.filenames import ATLAS
from successor_lens.io import safe_component
from successor_lens.probes.scan import scan_heads
from successor_lens.runner.folders import run_folder
from successor_lens.runner.stages import metrics_of
from successor_lens.sae_train.dictionary import Dictionary, as_sae, parameters_digest, weights_digest
from successor_lens.tasks import Task, build_token_set


def atlas_for_dictionary(
    model: HookedTransformer, dictionary, out: str | Path, cfg: AtlasConfig | None = None, head: str | None = None,
    tasks: list[Task] | None = None, scan_tasks: list[Task] | None = None, mine_cfg: MineConfig | None = None,
) -> tuple[Path, list[str]]:
    """The atlas of one dictionary (a `load_dictionary` result or an sae-lens SAE): scan, mining of its
    latents, latent pages."""
    cfg, mine_cfg = cfg or AtlasConfig(), mine_cfg or MineConfig()
    if not isinstance(dictionary, Dictionary):
        dictionary = Dictionary(as_sae(dictionary), {}, "an SAE in memory")
    sae = dictionary.sae.to("cpu")
    hook = sae.cfg.metadata.hook_name
    if sae.cfg.d_in != model.cfg.d_model:
        raise ConfigError(f"{dictionary.source}: d_in {sae.cfg.d_in} but {model.cfg.model_name} has d_model {model.cfg.d_model}: pass the right --model")
    scan = scan_heads(model, build_token_set(model.tokenizer, scan_tasks))
    heads_json = scan.to_json()
    table = item_table(model, tasks)
    acts = item_acts(model, table, hook)
    mined = mine(sae, acts, table, mine_cfg)
    sae_id = safe_component(hook.replace("blocks.", "L").replace(".hook_", "-").replace("hook_", "") if hook else "sae",
                            f"{dictionary.source}: hook name", "set the dictionary's metadata.hook_name to a TransformerLens hook name")
    identity = {"weights_sha256": weights_digest(dictionary.source) if Path(dictionary.source).is_dir() else None,
                "parameters_sha256": parameters_digest(sae)}
    entry = SAEEntry(sae_id, sae, dictionary.source, dict(mined.latent_class), metrics_of(dictionary), {**mined.summary(), **identity})
    doc = collect(model, [entry], heads_json, None, None, cfg, tasks, scan_tasks, head or heads_json["best_head"],
                  run_config={"sae": dictionary.source, **identity, "mine": asdict(mine_cfg)}, acts_by_hook={hook: acts})
    exports = build_exports(model, [entry], cfg, head or heads_json["best_head"], tasks)
    with run_folder(out, "atlas", "atlas_for_dictionary"):
        index = write_atlas(doc, Path(out) / ATLAS, exports=exports)
    return index, summary_lines(doc)
