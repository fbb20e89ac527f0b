"""A Hugging Face cache without a network: tiny random-weight models saved under official hub names,
laid out as `huggingface_hub` stores downloads (`hub/models--ORG--NAME/snapshots/COMMIT/`), so
`HookedTransformer.from_pretrained` takes exactly the path it takes online after a download.

- `gpt2`: GPT-2 architecture with the real GPT-2 tokenizer (the BPE files vendored in
  `successor_lens/data/gpt2/`), so " 0".." 500" are single tokens as in the paper.
- `EleutherAI/pythia-70m` (GPT-NeoX) and `01-ai/Yi-6B` (Llama architecture, a name TransformerLens
  configures from the checkpoint's config.json): small byte-level BPE tokenizers trained with
  `tokenizers` on the task words and the offline corpus, digits split one by one (like Llama's).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

COMMIT = "0" * 40


def snapshot(hf_home: Path, repo: str) -> Path:
    """The snapshot folder of `repo` in the cache at `hf_home` (created, with refs/main)."""
    root = Path(hf_home) / "hub" / ("models--" + repo.replace("/", "--"))
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(COMMIT)
    folder = root / "snapshots" / COMMIT
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def gpt2_tokenizer():
    from successor_lens.models.planted import gpt2_tokenizer as vendored

    tok = vendored()
    tok.bos_token = tok.eos_token = tok.unk_token = "<|endoftext|>"
    return tok


def bpe_tokenizer(vocab_size: int = 4000, split_digits: bool = True, bos: str = "<s>", eos: str = "</s>"):
    """A byte-level BPE trained on the task items and some prose, deterministic."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from successor_lens.tasks import standard_tasks

    words = [item for task in standard_tasks() for item in task.items]
    text = [" ".join(words)] * 50 + [" ".join(w.strip() for w in words)] * 20
    text += ["The first step, the second step and the third step. In 1999 and 2024, on Monday the 3rd of May."] * 20
    tokenizer = Tokenizer(models.BPE())
    pre = [pre_tokenizers.ByteLevel(add_prefix_space=False)]
    if split_digits:
        pre.insert(0, pre_tokenizers.Digits(individual_digits=True))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(pre)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[bos, eos], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tokenizer.train_from_iterator(text, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=bos, eos_token=eos, unk_token=eos)


def save(hf_home: Path, repo: str, model, tokenizer) -> Path:
    folder = snapshot(hf_home, repo)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_gpt2(seed: int = 0):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(n_layer=2, n_embd=64, n_head=4, n_positions=256, n_ctx=256, vocab_size=50257)  # n_ctx: as in the real config.json
    return GPT2LMHeadModel(cfg).eval(), gpt2_tokenizer()


def tiny_pythia(seed: int = 0):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    tok = bpe_tokenizer(split_digits=False, bos="<|endoftext|>", eos="<|endoftext|>")
    torch.manual_seed(seed)
    cfg = GPTNeoXConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256, vocab_size=len(tok),
                        max_position_embeddings=256, rotary_pct=0.25, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    return GPTNeoXForCausalLM(cfg).eval(), tok


def tiny_llama(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = bpe_tokenizer()
    torch.manual_seed(seed)
    cfg = LlamaConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=128,
                      vocab_size=len(tok), max_position_embeddings=256, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    return LlamaForCausalLM(cfg).eval(), tok


def tiny_gemma3(seed: int = 0):
    """Gemma 3 text architecture (local folders only: TransformerLens configures Gemma 3 hub names from
    its own table of the real sizes)."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    tok = bpe_tokenizer(bos="<bos>", eos="<eos>")
    torch.manual_seed(seed)
    cfg = Gemma3TextConfig(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=1, head_dim=16, intermediate_size=128,
                           vocab_size=len(tok), max_position_embeddings=256, sliding_window=4, layer_types=["sliding_attention", "sliding_attention", "full_attention"],
                           bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id)
    cfg.architectures = ["Gemma3ForCausalLM"]
    return Gemma3ForCausalLM(cfg).eval(), tok


MODELS = {"gpt2": tiny_gpt2, "EleutherAI/pythia-70m": tiny_pythia, "01-ai/Yi-6B": tiny_llama}


def fill(hf_home: Path, repos=tuple(MODELS)) -> Path:
    for repo in repos:
        save(hf_home, repo, *MODELS[repo]())
    return Path(hf_home)


if __name__ == "__main__":
    import sys

    print(json.dumps([str(save(Path(sys.argv[1]), r, *MODELS[r]())) for r in MODELS]))
