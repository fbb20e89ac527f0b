"""Generated control models at the paper's scale: `planted-gpt2` (a known answer) and `random-gpt2` (a null).

Both are GPT-2-architecture HookedTransformers over the real GPT-2 vocabulary (50,257 tokens; the
BPE files ship in `successor_lens/data/gpt2/`, MIT licence), so " 0".." 500" are single tokens as
in the paper. They are built deterministically from a seed in seconds, with no download.

`planted-gpt2` (docs/method.md, "Known-answer control"):
- The embedding of each task item is a sum of orthonormal directions: its class (index mod 10),
  its decade (index // 10), its task and, for leading-space items, a space direction; the last
  item of a cyclic task also gets a wrap direction of its own. Every planted direction is
  orthogonal to the all-ones vector, so LayerNorm only rescales it.
- MLP0 is exactly the identity on its normalised input (GELU(x) - GELU(-x) = x), so the MLP0
  output of an item is its planted vector, rescaled.
- Head PLANTED_HEAD reads it and writes the successor: class c -> class' c+1 (weight ALPHA),
  decade d -> decade' d, wrap -> the first item of the task. The carry (29 -> 30) lives in the
  unembedding: an item with index = 0 mod 10 also reads the previous decade (weight GAMMA), which
  only a class-0 output (from a class-9 input) can use. Its query and key weights are zero, so
  in context it attends uniformly to the positions so far.
- Every other weight is TransformerLens's random initialisation.
"""

from __future__ import annotations

import json
from importlib import resources

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from successor_lens.models.attributes import note
from successor_lens.tasks import build_token_set, sae_tasks, standard_tasks

PLANTED_HEAD = (2, 1)
"""(layer, head) of the planted successor head."""
ALPHA, GAMMA = 3.0, 2.0
"""Class weight of the head's output, and the carry weight of class-0 unembeddings (1 < GAMMA < ALPHA + 1)."""
AMPLITUDE = {"class": 3.0, "decade": 2.0, "task": 1.5, "space": 1.0, "wrap": 2.0}


def gpt2_tokenizer():
    """The real GPT-2 tokenizer from the vendored BPE files (offline)."""
    from transformers import GPT2TokenizerFast

    folder = resources.files("successor_lens") / "data" / "gpt2"
    vocab = json.loads((folder / "encoder.json").read_text(encoding="utf-8"))
    merges = [tuple(line.split()) for line in (folder / "vocab.bpe").read_text(encoding="utf-8").split("\n")[1:] if line.strip()]
    return GPT2TokenizerFast(vocab=vocab, merges=merges)


def digit_tokenizer():
    """The tokenizer of `planted-digits` and `random-digits`: one token for each item of the
    standard tasks (both variants: "Monday" and " Monday"), the digits and a few fillers, and every
    number split into its digits, as Llama's, Gemma's and SmolLM2's tokenizers split them (" 13" is
    " ", "1", "3"). Anything else is <unk>. Built in code (Hugging Face `tokenizers`), offline."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<unk>", "<s>", " ", "\n", "the", " the", "of", " of", "and", " and", ",", ".", ":", "-", *(str(d) for d in range(10))]
    for task in standard_tasks():
        if task.name != "numbers":
            words += [w for item in task.items for w in (item, " " + item)]
    vocab = {w: i for i, w in enumerate(dict.fromkeys(words))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r" ?[A-Za-z]+|[0-9]| ?[^\sA-Za-z0-9]+|\s"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>")


def control_config(name: str, seed: int = 0, d_vocab: int = 50257) -> HookedTransformerConfig:
    return HookedTransformerConfig(
        n_layers=4, d_model=256, d_head=128, n_heads=4, d_mlp=512, d_vocab=d_vocab, n_ctx=256,
        act_fn="gelu_new", normalization_type="LN", positional_embedding_type="standard",
        original_architecture="GPT2LMHeadModel", default_prepend_bos=True, model_name=name, seed=seed,
    )


@torch.no_grad()
def build_control(name: str, plant: bool, seed: int = 0, digits: bool = False, strength: float = 1.0, noise: float = 0.0) -> HookedTransformer:
    """A control model named `name`, in fp32 on the CPU, in eval mode: with the successor head
    planted (`planted-gpt2`, `planted-digits`) or every weight TransformerLens's random
    initialisation (`random-gpt2`, `random-digits`). `digits`: the digit-splitting `digit_tokenizer`
    instead of GPT-2's. `strength` scales the planted class amplitude and `noise` adds a random
    vector of that norm to each planted item (the calibration bench's graded plant; 1 and 0 are the
    controls as named)."""
    tokenizer = digit_tokenizer() if digits else gpt2_tokenizer()
    model = HookedTransformer(control_config(name, seed, len(tokenizer) if digits else 50257), move_to_device=False)
    model.tokenizer = tokenizer  # set after construction: TransformerLens would re-load it from the hub by name
    if plant:
        _plant(model, seed, strength, noise)
    which = "a digit-splitting word tokenizer (planted.digit_tokenizer)" if digits else "GPT-2 tokenizer from successor_lens/data/gpt2"
    graded = f", class amplitude x{strength:g}, item noise {noise:g}" if plant and (strength != 1.0 or noise) else ""
    note(model, successor_lens_source=f"generated control {name} (seed {seed}{graded}), {which}")
    return model.eval()


@torch.no_grad()
def build_random_like(name: str, base: str, seed: int = 0) -> HookedTransformer:
    """The whole-pipeline null `name`: embedded model `base`'s architecture (its config, tied
    embeddings) and its own tokenizer, every weight TransformerLens's random initialisation. What
    a digit-splitting tokenizer alone gives away shows up here as "findings"."""
    from successor_lens.models.embedded import EmbeddedSource

    source = EmbeddedSource()
    tokenizer = source.load(base).tokenizer  # the real model's tokenizer (its conversion cache)
    cfg = source.config(base)
    cfg.model_name, cfg.seed = name, seed
    torch.manual_seed(seed)
    model = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False)
    scale = cfg.d_model**0.5 if "gemma" in str(cfg.original_architecture).lower() else 1.0  # TransformerLens scales Gemma's W_E
    model.unembed.W_U.copy_(model.embed.W_E.T / scale)  # tied, as in both embedded models
    note(model, successor_lens_source=f"generated control {name} (seed {seed}): {base}'s architecture and tokenizer, random weights")
    return model.eval()


def _items(tokenizer) -> dict[int, tuple[str, int, bool, bool]]:
    """Token -> (base task, index, leading space, last of a cyclic task), the first task to claim it.

    Items of the SAE data (numbers 0..500) and of the scan (the standard tasks) are all planted;
    a token shared by two tasks (" May", Roman " I"/" V"/" X" and the letters) keeps the first.
    """
    claimed: dict[int, tuple[str, int, bool, bool]] = {}
    specs = {t.name: t for t in standard_tasks()}
    for task_set in (sae_tasks(), standard_tasks()):
        token_set = build_token_set(tokenizer, task_set)
        for item in token_set.items:
            if item.ids:  # split items are not planted (GPT-2 has single tokens for the paper's range)
                continue
            base = item.task.split(":")[0]
            spec = specs[base]
            last = spec.cyclic and item.index == max(spec.indices)
            claimed.setdefault(item.token, (base, item.index, not item.task.endswith(":nospace"), last))
    return claimed


def _orthonormal(n: int, d: int, gen: torch.Generator) -> torch.Tensor:
    """n orthonormal rows, each orthogonal to the all-ones vector (LayerNorm leaves them a pure rescale)."""
    if n > d - 1:
        raise ValueError(f"planting needs {n} directions but d_model {d} offers {d - 1}")
    ones = torch.ones(d, 1) / d**0.5
    q, _ = torch.linalg.qr(torch.cat([ones, torch.randn(d, n, generator=gen)], 1))
    return q[:, 1 : n + 1].T.contiguous()


def _plant(model: HookedTransformer, seed: int, strength: float = 1.0, noise: float = 0.0) -> None:
    items = _items(model.tokenizer)
    tasks = sorted({t for t, _, _, _ in items.values()})
    n_decades = max(i for _, i, _, _ in items.values()) // 10 + 1
    wraps = sorted(tok for tok, v in items.items() if v[3])
    first_of = {}
    for tok, (task, index, space, _) in items.items():
        if index == 1 and task in ("days", "day_prefixes", "months", "month_prefixes"):
            first_of[(task, space)] = tok
    d = model.cfg.d_model
    gen = torch.Generator().manual_seed(seed + 7)
    n_in = 10 + n_decades + len(tasks) + 1 + len(wraps)
    n_out = 10 + n_decades + len(wraps)
    basis = _orthonormal(n_in + n_out, d, gen)
    cls, dec, task_d, space_d, wrap_d = basis[:10], basis[10 : 10 + n_decades], basis[10 + n_decades : 10 + n_decades + len(tasks)], \
        basis[10 + n_decades + len(tasks)], basis[n_in - len(wraps) : n_in]
    cls_o, dec_o, wrap_o = basis[n_in : n_in + 10], basis[n_in + 10 : n_in + 10 + n_decades], basis[n_in + 10 + n_decades :]
    wrap_row = {tok: i for i, tok in enumerate(wraps)}

    # Embedding: planted vectors for items, random vectors of the same norm for every other token.
    W_E = torch.randn(model.cfg.d_vocab, d, generator=gen)
    W_E -= W_E.mean(-1, keepdim=True)
    A = AMPLITUDE
    norm = (A["class"] ** 2 + A["decade"] ** 2 + A["task"] ** 2) ** 0.5
    W_E *= norm / W_E.norm(dim=-1, keepdim=True)
    noise_gen = torch.Generator().manual_seed(seed + 11)
    for tok, (task, index, space, _) in items.items():
        v = strength * A["class"] * cls[index % 10] + A["decade"] * dec[index // 10] + A["task"] * task_d[tasks.index(task)]
        v = v + (A["space"] * space_d if space else 0) + (A["wrap"] * wrap_d[wrap_row[tok]] if tok in wrap_row else 0)
        if noise:
            e = torch.randn(d, generator=noise_gen)
            e -= e.mean()
            v = v + noise * e / e.norm()
        W_E[tok] = v
    model.embed.W_E.copy_(W_E)

    # MLP0: identity on its normalised input.
    mlp = model.blocks[0].mlp
    eye = torch.eye(d)
    mlp.W_in.copy_(torch.cat([eye, -eye], 1))
    mlp.W_out.copy_(torch.cat([eye, -eye], 0))
    for bias in (mlp.b_in, mlp.b_out):
        assert isinstance(bias, torch.Tensor)
        bias.zero_()

    # The successor head's OV circuit, factored through d_head.
    W_VO = ALPHA / A["class"] * cls.T @ cls_o.roll(-1, 0) + 1 / A["decade"] * dec.T @ dec_o
    W_VO += 1 / A["wrap"] * wrap_d.T @ wrap_o
    U, S, Vh = torch.linalg.svd(W_VO)
    r = model.cfg.d_head
    if int((S > 1e-6).sum()) > r:
        raise ValueError(f"the planted OV circuit has rank {int((S > 1e-6).sum())} > d_head {r}")
    layer, head = PLANTED_HEAD
    attn = model.blocks[layer].attn
    attn.W_V[head] = U[:, :r] * S[:r].sqrt()
    attn.W_O[head] = S[:r].sqrt()[:, None] * Vh[:r]
    attn.b_V[head].zero_()
    attn.W_Q[head].zero_()
    attn.W_K[head].zero_()

    # Unembedding: output codes for items (class', decade', carry from the previous decade, wrap).
    W_U = model.unembed.W_U
    W_U.mul_(0.1)
    for tok, (_task, index, _space, _) in items.items():
        col = cls_o[index % 10] + dec_o[index // 10]
        if index % 10 == 0 and index >= 10:
            col = col + GAMMA * dec_o[index // 10 - 1]
        W_U[:, tok] = col
    for tok in wraps:
        task, _, space, _ = items[tok]
        first = first_of.get((task, space))
        if first is not None:
            W_U[:, first] += GAMMA * 2 * wrap_o[wrap_row[tok]]
