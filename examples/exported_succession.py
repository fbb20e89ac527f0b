"""In-context succession accuracy of an exported model, measured with Hugging Face `transformers`
alone, beside the unedited checkpoint's and the hooked edit's on the same token ids.

    python examples/exported_succession.py EXPORT_DIR

EXPORT_DIR is a folder written by `successor-lens edit --spec S --export-model EXPORT_DIR`; its
`successor-lens-export.json` names the source model and the edits.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from successor_lens.artifacts.model_export import load_hf
from successor_lens.filenames import EXPORT_JSON
from successor_lens.models.loading import load_model
from successor_lens.models.registry import source_kind
from successor_lens.probes.edits import Edit, EditSet
from successor_lens.probes.incontext import encode_prompt, fitting, succession_prompts


@torch.no_grad()
def accuracy(forward, ids_list: list[torch.Tensor], answers: list[int]) -> float:
    hits = [int(forward(ids)[0, -1].argmax()) == a for ids, a in zip(ids_list, answers, strict=True)]
    return sum(hits) / len(hits)


def main(folder: str) -> None:
    record = json.loads((Path(folder) / EXPORT_JSON).read_text())
    name = record["provenance"]["source"]
    edits = [Edit(**e) for e in record["edits"]]
    hooked = load_model(name)
    prompts = fitting(hooked, succession_prompts(hooked.tokenizer))
    ids = [encode_prompt(hooked, p) for p in prompts]  # the ids TransformerLens runs, BOS as it prepends it
    answers = [p.answer for p in prompts]
    exported = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    original, _ = load_hf(name, source_kind(name))
    edit_set = EditSet(hooked, edits)
    rows = {
        "transformers, unedited checkpoint": accuracy(lambda x: original(x).logits, ids, answers),
        "transformers, exported folder": accuracy(lambda x: exported(x).logits, ids, answers),
        "TransformerLens, hooked edit": accuracy(lambda x: hooked.run_with_hooks(x, fwd_hooks=edit_set.hooks()), ids, answers),
    }
    print(f"{name}, edits {record['edits']}, {len(prompts)} succession prompts (top-1 over the vocabulary):")
    for label, value in rows.items():
        print(f"  {label:36s} {value:.3f}")


if __name__ == "__main__":
    main(sys.argv[1])
