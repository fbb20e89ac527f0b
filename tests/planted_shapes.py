"""Llama- and Gemma-shaped planted models: a known successor head that only the right reading finds.

Unlike `planted-gpt2` (norm gains 1, an MLP0 that is linear), these carry what real models have and
what a wrong convention trips on:
- RMSNorm with non-uniform gains everywhere (ln1, ln2, and Gemma's ln1_post/ln2_post); each
  planted weight undoes its norm's gains, so the plant is exact only through the norms;
- grouped-query attention (the successor and copying heads in different key-value groups);
- a gated MLP0 that writes each item's code only after its input norm (and post-norm);
- a layer-0 attention that writes a large random vector (the paper's MLP0 form leaves it out);
- a copying head beside the successor head (the readout's own control);
- a digit-splitting tokenizer (numbers past 9 split, so only 0..9 are scored);
- unembedding columns of frequent tokens aligned with every item's output (full-vocabulary
  top-1 picks them, the task-restricted top-1 does not).
"""

from __future__ import annotations

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from successor_lens.tasks import Task

DIGITS = [str(i) for i in range(10)]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"]
FREQUENT = ["the", ",", "."]
WORDS = DIGITS + DAYS + MONTHS + FREQUENT + [" "]
TASKS = [Task("numbers", tuple(str(n) for n in range(30)), tuple(range(30))),
         Task("days", tuple(DAYS), tuple(range(1, 8)), cyclic=True),
         Task("months", tuple(MONTHS), tuple(range(1, 13)), cyclic=True)]
SUCCESSOR_HEAD, COPYING_HEAD = (1, 0), (1, 3)
"""(layer, head): in different key-value groups (4 query heads on 2 groups; Gemma: 1 group, so
the copying head sits in layer 2 there)."""


class DigitTokenizer:
    """Whole words from a list; a digit string splits into its digits (as Llama's and Gemma's do)."""

    unk_token_id = None
    bos_token_id = None
    padding_side = "right"

    def __init__(self):
        self.vocab = {w: i for i, w in enumerate(WORDS)}
        self.inverse = dict(enumerate(WORDS))

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        if text in self.vocab:
            return [self.vocab[text]]
        if text.isdigit():
            return [self.vocab[c] for c in text]
        return [self.vocab[" "] if c == " " else self.vocab["the"] for c in text]

    def __len__(self) -> int:
        return len(WORDS)

    def decode(self, ids) -> str:
        ids = [ids] if isinstance(ids, int) else list(ids)
        return "".join(self.inverse.get(int(i), "?") for i in ids)


def successors() -> dict[int, int]:
    tok = DigitTokenizer()
    succ = {tok.vocab[a]: tok.vocab[b] for a, b in zip(DIGITS, DIGITS[1:])}
    for words in (DAYS, MONTHS):
        succ.update({tok.vocab[a]: tok.vocab[b] for a, b in zip(words, words[1:] + words[:1])})
    return succ


def config(shape: str) -> HookedTransformerConfig:
    gemma = shape == "gemma"
    return HookedTransformerConfig(
        n_layers=3, d_model=128, d_head=64, n_heads=4, n_key_value_heads=1 if gemma else 2, d_mlp=128, d_vocab=len(WORDS), n_ctx=32,
        act_fn="gelu_pytorch_tanh" if gemma else "silu", gated_mlp=True, normalization_type="RMS", positional_embedding_type="rotary",
        use_normalization_before_and_after=gemma, original_architecture="Gemma3ForCausalLM" if gemma else "LlamaForCausalLM",
        model_name=f"planted-{shape}-shaped", seed=0,
    )


def heads(shape: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """(successor head, copying head): in different key-value groups, or layers for Gemma's one group."""
    return (SUCCESSOR_HEAD, (2, 1)) if shape == "gemma" else (SUCCESSOR_HEAD, COPYING_HEAD)


RATIO = {"ln1": 4.0, "ln2_post": 2.0, "ln1_post": 2.0}
"""How much more each norm amplifies the successor pathway (S coordinates) than the predecessor
pathway (P coordinates). The head writes the predecessor at weight 1 and the successor at weight
C[shape]: the successor wins only when every norm is applied (C x product of ratios = 2), and the
predecessor wins when any one is left out (0.5)."""
C = {"llama": 2 / RATIO["ln1"], "gemma": 2 / (RATIO["ln1"] * RATIO["ln2_post"] * RATIO["ln1_post"])}


def _set_ov(model: HookedTransformer, layer: int, head: int, W_VO: torch.Tensor) -> None:
    """Factor W_VO [d, d] through d_head (grouped heads: the head's key-value group gets W_V)."""
    U, S, Vh = torch.linalg.svd(W_VO)
    E = model.cfg.d_head
    assert int((1e-6 * S[0] < S).sum()) <= E, "the planted OV circuit does not fit d_head"
    attn = model.blocks[layer].attn
    group = head // (model.cfg.n_heads // model.cfg.n_key_value_heads)
    attn._W_V[group] = U[:, :E] * S[:E].sqrt()
    attn._b_V[group].zero_()
    attn.W_O[head] = S[:E].sqrt()[:, None] * Vh[:E]


def _set_gains(model: HookedTransformer, gen: torch.Generator, P, S, out_P, out_S) -> None:
    """Random gains (0.5..2) on every norm; where a pathway's codes live, the S coordinates get
    RATIO x the P coordinates' gain."""
    d = model.cfg.d_model
    random_gains = lambda: torch.exp(torch.rand(d, generator=gen) * 1.4 - 0.7)  # noqa: E731

    def gains(p_rows: torch.Tensor, s_rows: torch.Tensor, ratio: float) -> torch.Tensor:
        g = random_gains()
        g[p_rows.argmax(-1)] = 0.7
        g[s_rows.argmax(-1)] = 0.7 * ratio
        return g

    blocks = model.blocks
    for block in blocks:
        for name in ("ln1", "ln2", "ln1_post", "ln2_post"):
            if hasattr(block, name):
                getattr(block, name).w.copy_(random_gains())
    post = model.cfg.use_normalization_before_and_after
    for layer in (1, 2):
        blocks[layer].ln1.w.copy_(gains(P, S, RATIO["ln1"]))
        if post:
            blocks[layer].ln1_post.w.copy_(gains(out_P, out_S, RATIO["ln1_post"]))
    if post:
        blocks[0].ln2_post.w.copy_(gains(P, S, RATIO["ln2_post"]))


def _plant_mlp0(model: HookedTransformer, P, S, const) -> None:
    """MLP0 (gated): the gate reads the shared direction (the same large value for every item),
    the inputs read each code, the outputs write it back: MLP0(item i) = a (P_i + S_i)."""
    mlp, w2 = model.blocks[0].mlp, model.blocks[0].ln2.w
    for W in (mlp.W_gate, mlp.W_in, mlp.W_out, mlp.b_in, mlp.b_out):
        W.zero_()
    n = len(P)
    for k in range(n):
        for code, col in ((P[k], k), (S[k], n + k)):
            mlp.W_in[:, col] = code / w2  # undoes ln2's gains
            mlp.W_gate[:, col] = 3 * const / w2
            mlp.W_out[col] = code


@torch.no_grad()
def build(shape: str, seed: int = 0) -> HookedTransformer:
    """A planted model of `shape` ("llama" or "gemma")."""
    cfg = config(shape)
    torch.manual_seed(seed)
    model = HookedTransformer(cfg, tokenizer=None, move_to_device=False)
    model.tokenizer = DigitTokenizer()  # type: ignore[assignment]
    gen = torch.Generator().manual_seed(seed + 1)
    d, V = cfg.d_model, cfg.d_vocab
    n = len(DIGITS) + len(DAYS) + len(MONTHS)  # item tokens are 0..n-1
    eye = torch.eye(d)
    P, S = eye[:n], eye[n : 2 * n]  # input codes: predecessor and successor pathways
    const = eye[2 * n]
    out_P, out_S = eye[2 * n + 1 : 3 * n + 1], eye[3 * n + 1 : 4 * n + 1]

    _set_gains(model, gen, P, S, out_P, out_S)

    # Embeddings: both pathways' codes and a shared direction, the same norm for every item.
    W_E = torch.randn(V, d, generator=gen) * 0.2
    W_E[:n] = P + S + 2 * const
    model.embed.W_E.copy_(W_E)

    _plant_mlp0(model, P, S, const)

    # Layer-0 attention: for a token alone it writes 20 P_i, which the paper's MLP0 form leaves out.
    blocks = model.blocks
    rms_E = float((W_E[0].pow(2).mean() + cfg.eps).sqrt())
    W_VO0 = sum(torch.outer(P[i] + S[i], P[i]) for i in range(n)) * 10 * rms_E / blocks[0].ln1.w[:, None]
    if cfg.use_normalization_before_and_after:
        W_VO0 = W_VO0 / blocks[0].ln1_post.w[None, :]
    for head in range(cfg.n_heads):
        blocks[0].attn.W_O[head].zero_()
    _set_ov(model, 0, 0, W_VO0)

    # The successor head: P_i -> out_P[pred(i)] (weight 1), S_i -> out_S[succ(i)] (weight C);
    # the copying head: P_i -> out_P[i], S_i -> out_S[i].
    succ = successors()
    pred = {b: a for a, b in succ.items()}
    succession, copying = heads(shape)
    W_succ = sum(torch.outer(P[i], out_P[pred[i]]) for i in pred) + C[shape] * sum(torch.outer(S[i], out_S[succ[i]]) for i in succ)
    W_copy = sum(torch.outer(P[i], out_P[i]) + torch.outer(S[i], out_S[i]) for i in range(n))
    for (layer, head), W_VO in ((succession, W_succ), (copying, W_copy)):
        for other in range(cfg.n_heads):
            if (layer, other) not in (succession, copying):
                blocks[layer].attn.W_O[other].zero_()
        _set_ov(model, layer, head, W_VO)
    for layer in range(cfg.n_layers):
        blocks[layer].attn.b_O.zero_()

    # Unembedding: item j is read on both its output codes; the frequent tokens on every item's.
    W_U = torch.randn(d, V, generator=gen) * 0.01
    W_U[:, :n] = (out_P + out_S).T
    for word in FREQUENT:
        W_U[:, WORDS.index(word)] = (out_P + out_S).sum(0)
    model.unembed.W_U.copy_(W_U)
    model.unembed.b_U.zero_()
    return model.eval()
