"""The head scan at the paper's largest shapes on this machine: the lean path (`heads --lean`, one
layer at a time from the safetensors shards) against the full TransformerLens path, measured in the
same run where the full path fits in memory; and `run --lean` (the scan, the vocabulary-level
activations, SAE training and mining, from the embeddings and layer 0 alone) on each shape.

    python bench/scale_models.py [--shapes pythia-1.4b llama-2-7b] [--dtype bf16] [--full pythia-1.4b] [--run-steps 300] [--keep DIR]

Random-weight checkpoints of the real shapes are generated (normal, std 0.02; norms 1) into a
temporary Hugging Face cache under the official names, with a small byte-level BPE tokenizer, so
`--model EleutherAI/pythia-1.4b` takes exactly the hub path. Disk needed, in the checkpoint's dtype
(bf16): Pythia-1.4B 2.8 GB, Llama-2-7B 13.5 GB (`--keep DIR` keeps them). Each scan runs in a fresh
process: its wall time and peak resident memory (ru_maxrss of that child alone) are its own.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHAPES = {
    "pythia-1.4b": ("EleutherAI/pythia-1.4b", {
        "architectures": ["GPTNeoXForCausalLM"], "model_type": "gpt_neox", "hidden_size": 2048, "num_hidden_layers": 24,
        "num_attention_heads": 16, "intermediate_size": 8192, "vocab_size": 50304, "max_position_embeddings": 2048,
        "rotary_pct": 0.25, "rotary_emb_base": 10000, "use_parallel_residual": True, "hidden_act": "gelu", "layer_norm_eps": 1e-5,
        "tie_word_embeddings": False, "bos_token_id": 0, "eos_token_id": 0}),
    "llama-2-7b": ("meta-llama/Llama-2-7b-hf", {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 32,
        "num_attention_heads": 32, "num_key_value_heads": 32, "intermediate_size": 11008, "vocab_size": 32000,
        "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "hidden_act": "silu", "tie_word_embeddings": False,
        "rope_theta": 10000.0, "bos_token_id": 1, "eos_token_id": 2}),
}
COMMIT = "0" * 40


def tokenizer(vocab: int = 4000):
    """A byte-level BPE trained on the task items (digits split, as Llama's), deterministic."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from successor_lens.tasks import standard_tasks

    words = [item for task in standard_tasks() for item in task.items]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([" ".join(words)] * 50, trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<s>", "</s>"], show_progress=False,
                                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="</s>")


def write_checkpoint(hf_home: Path, repo: str, config: dict) -> tuple[Path, float]:
    """A random checkpoint of `config`'s shape, one bf16 shard per layer, in the cache layout; (folder, GB)."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoConfig, AutoModelForCausalLM

    root = hf_home / "hub" / ("models--" + repo.replace("/", "--"))
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(COMMIT)
    folder = root / "snapshots" / COMMIT
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({**config, "torch_dtype": "bfloat16"}))
    tokenizer().save_pretrained(folder)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder)).state_dict().items()}
    if config["model_type"] == "gpt_neox":  # the name the checkpoints on the hub use (transformers 5 renames it on load)
        shapes = {("embed_out.weight" if k == "lm_head.weight" else k): s for k, s in shapes.items()}
    g = torch.Generator().manual_seed(0)
    groups: dict[str, dict[str, tuple]] = {}
    for key, shape in shapes.items():
        parts = key.split(".")
        layer = next((parts[i + 1] for i, p in enumerate(parts) if p in ("layers", "h") and parts[i + 1].isdigit()), "rest")
        groups.setdefault(layer, {})[key] = shape
    weight_map, size = {}, 0
    for n, (_, group) in enumerate(sorted(groups.items(), key=lambda kv: (kv[0] == "rest", int(kv[0]) if kv[0].isdigit() else 0))):
        name = f"model-{n + 1:05d}-of-{len(groups):05d}.safetensors"
        tensors = {}
        for key, shape in group.items():
            is_norm = len(shape) == 1 and ("norm" in key or "ln" in key)
            t = torch.ones(shape) if is_norm and key.endswith("weight") else (torch.zeros(shape) if len(shape) == 1 else torch.randn(shape, generator=g) * 0.02)
            tensors[key] = t.to(torch.bfloat16)
            size += tensors[key].numel() * 2
            weight_map[key] = name
        save_file(tensors, str(folder / name), metadata={"format": "pt"})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": size}, "weight_map": weight_map}))
    return folder, size / 1e9


def measure(cmd: list[str], env: dict) -> tuple[float, float, str]:
    """(wall s, peak resident GB, last line) of `cmd` in a fresh child that runs it alone."""
    probe = ("import resource, subprocess, sys, time; t = time.time(); r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
             "print(time.time() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, r.returncode); "
             "sys.stderr.write(r.stdout[-1500:] + r.stderr[-1500:])")
    done = subprocess.run([sys.executable, "-c", probe, *cmd], capture_output=True, text=True, env=env)
    wall, rss_kb, rc = done.stdout.split()
    if rc != "0":
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr}")
    lines = [line for line in done.stderr.splitlines() if line.startswith(("lean scan", "L"))]
    return float(wall), int(rss_kb) / 1e6, lines[0] if lines else ""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    p.add_argument("--full", nargs="*", default=["pythia-1.4b"], help="shapes also scanned by the full path (fp32 weights, loaded whole)")
    p.add_argument("--dtype", default="bf16", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--run-steps", type=int, default=300, help="SAE training steps of the `run --lean` measured on each shape (0: skip it)")
    p.add_argument("--keep", default=None, help="a folder to keep the generated Hugging Face cache in")
    args = p.parse_args()
    hf_home = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="successor-lens-scale-"))
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    floor_wall, floor, _ = measure([sys.executable, "-c", "import torch, transformers, transformer_lens, successor_lens.probes.scan"], env)
    rows = [["(imports only)", "python + torch + transformers", f"{floor_wall:.0f}", f"{floor:.2f}", "the floor every path pays"]]
    try:
        for shape in args.shapes:
            repo, config = SHAPES[shape]
            start = time.time()
            folder, gb = write_checkpoint(hf_home, repo, config)
            print(f"{shape}: wrote {gb:.1f} GB of random bf16 weights in {time.time() - start:.0f} s ({folder})", flush=True)
            base = [sys.executable, "-m", "successor_lens", "heads", "--model", repo, "--top", "1"]
            out = Path(tempfile.mkdtemp(prefix="runs-", dir=hf_home))  # new folders each time: a kept cache never answers `run` from its stages
            wall, rss, line = measure([*base, "--lean", "--dtype", args.dtype, "--out", str(out / f"{shape}-lean")], env)
            rows.append([shape, f"lean ({args.dtype})", f"{wall:.0f}", f"{rss:.2f}", line])
            print("  ", rows[-1], flush=True)
            if shape in args.full:
                wall, rss, _ = measure([*base, "--out", str(out / f"{shape}-full")], env)
                rows.append([shape, "full TransformerLens (fp32)", f"{wall:.0f}", f"{rss:.2f}", ""])
                print("  ", rows[-1], flush=True)
                same = [json.loads((out / f"{shape}-{k}" / "heads.json").read_text())["top_heads"][:3] for k in ("lean", "full")]
                print(f"   top heads lean {[h['head'] for h in same[0]]} full {[h['head'] for h in same[1]]}", flush=True)
            if args.run_steps:
                cmd = [sys.executable, "-m", "successor_lens", "run", "--model", repo, "--lean", "--dtype", args.dtype, "--seeds", "1",
                       "--steps", str(args.run_steps), "--null-draws", "3", "--out", str(out / f"{shape}-run")]
                wall, rss, _ = measure(cmd, env)
                found = json.loads((out / f"{shape}-run" / "mine.json").read_text())["figures"]["classes_found"]
                rows.append([shape, f"run --lean ({args.dtype})", f"{wall:.0f}", f"{rss:.2f}",
                             f"scan, activations, 2 SAEs x {args.run_steps} steps, mining: {found['value']:.0f} classes vs null "
                             f"{found['null']:.1f} ({'above' if found['above'] else 'NOT above'}: random weights)"])
                print("  ", rows[-1], flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(hf_home, ignore_errors=True)
    print(f"\n{'shape':12} {'path':28} {'wall s':>7} {'peak RSS GB':>12}  note")
    for shape, path, wall, rss, line in rows:
        print(f"{shape:12} {path:28} {wall:>7} {rss:>12}  {line}")
    print(f"(this machine: {os.cpu_count()} cores, {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB)")


if __name__ == "__main__":
    main()
