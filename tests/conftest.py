"""Shared fixtures: tiny TransformerLens models with planted structure, and the real embedded model."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):  # pytest -n N: the cores shared among the workers (and the processes a test starts)
    from successor_lens.threads import usable_cores  # (no torch import)

    os.environ["OMP_NUM_THREADS"] = str(max(1, usable_cores() // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))
# A Hugging Face cache of the tests' own (set before huggingface_hub is imported, which reads it
# once): the `hub_models` fixture fills it with tiny models under official names (hub_cache.py).
HF_HOME = tempfile.mkdtemp(prefix="successor-lens-hf-")
os.environ["HF_HOME"] = HF_HOME
atexit.register(shutil.rmtree, HF_HOME, True)

import pytest  # noqa: E402
import torch  # noqa: E402
from transformer_lens import HookedTransformer, HookedTransformerConfig  # noqa: E402

from successor_lens.tasks import Task  # noqa: E402


class WordTokenizer:
    """A tokenizer over a fixed word list; any other string splits into one token per character."""

    def __init__(self, words: list[str]):
        self.vocab = {w: i for i, w in enumerate(words)}
        self.inverse = dict(enumerate(words))
        self.unk_token_id = None
        self.bos_token_id = None
        self.padding_side = "right"

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        if text in self.vocab:
            return [self.vocab[text]]
        return [len(self.vocab) + (ord(c) % 7) for c in text]

    def __len__(self) -> int:
        return len(self.vocab) + 7  # the word list, then 7 character ids (encode)

    def decode(self, ids) -> str:
        ids = [ids] if isinstance(ids, int) else list(ids)
        return "".join(self.inverse.get(int(i), "?") for i in ids)


DIGITS = [str(i) for i in range(10)]
DAYS = [" Monday", " Tuesday", " Wednesday", " Thursday", " Friday", " Saturday", " Sunday"]
TINY_TASKS = [
    Task("numbers", tuple(DIGITS), tuple(range(10))),
    Task("days", tuple(d.strip() for d in DAYS), tuple(range(1, 8)), cyclic=True),
]


def tiny_config(n_kv_heads: int | None = None, d_vocab: int = 40, seed: int = 0) -> HookedTransformerConfig:
    return HookedTransformerConfig(
        n_layers=2, d_model=64, d_head=32, n_heads=4, d_mlp=128, d_vocab=d_vocab, n_ctx=32,
        act_fn="gelu", normalization_type="RMS", positional_embedding_type="rotary",
        n_key_value_heads=n_kv_heads, seed=seed, model_name="tiny-planted",
    )


@torch.no_grad()
def plant_successor_head(model: HookedTransformer, layer: int, head: int, rows: list[int], succ: dict[int, int]) -> None:
    """Set one head's OV circuit so that MLP0(token) maps onto the successor's unembedding.

    `rows` are token ids; `succ[t]` is the successor token of t. W_V W_O = X^+ T W_U^+ restricted
    to those tokens, factored through d_head by SVD (grouped heads: the head's KV group gets W_V).
    """
    block0 = model.blocks[0]
    ids = torch.tensor(rows)
    x_ND = block0.mlp(block0.ln2(model.W_E[ids][:, None]))[:, 0]
    x_ND = model.blocks[layer].ln1(x_ND[:, None])[:, 0]
    target_NN = torch.zeros(len(rows), len(rows))
    for i, t in enumerate(rows):
        if t in succ:
            target_NN[i, rows.index(succ[t])] = 1.0
    W_VO = torch.linalg.pinv(x_ND) @ target_NN @ torch.linalg.pinv(model.W_U[:, ids])
    U, S, Vh = torch.linalg.svd(W_VO)
    d_head = model.cfg.d_head
    W_V = U[:, :d_head] * S[:d_head].sqrt()
    W_O = S[:d_head].sqrt()[:, None] * Vh[:d_head]
    attn = model.blocks[layer].attn
    if model.cfg.n_key_value_heads:
        group = head // (model.cfg.n_heads // model.cfg.n_key_value_heads)
        attn._W_V[group] = W_V
    else:
        attn.W_V[head] = W_V
    attn.W_O[head] = W_O


SLOW_FIXTURES = {"embedded_model", "gemma_model"}
"""A test that loads a real model is in the slow tier, whichever module it is in."""


def pytest_collection_modifyitems(items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def tiny_tokenizer() -> WordTokenizer:
    return WordTokenizer(DIGITS + DAYS)


def make_planted(n_kv_heads: int | None, layer: int = 1, head: int = 2) -> HookedTransformer:
    words = DIGITS + DAYS
    model = HookedTransformer(tiny_config(n_kv_heads))
    model.eval()
    succ = {i: i + 1 for i in range(9)}
    day0 = len(DIGITS)
    succ.update({day0 + i: day0 + (i + 1) % 7 for i in range(7)})
    plant_successor_head(model, layer, head, list(range(len(words))), succ)
    return model


@pytest.fixture(scope="session")
def embedded_model():
    from successor_lens.models.loading import load_model

    return load_model()


@pytest.fixture(scope="session")
def gemma_model():
    """The second embedded model, Gemma 3 270M (converted on first use: about a minute)."""
    from successor_lens.models.loading import load_model

    return load_model("gemma3-270m")


HOSTILE = ["<script>alert(1)</script>", 'say "hi" & bye', "bell\x07"]
RUN_TASKS = [
    Task("numbers", tuple(DIGITS), tuple(range(10))),
    Task("number_words", tuple("one two three four five six seven eight nine ten".split()), tuple(range(1, 11))),
    Task("letters", tuple("ABCDEFGHIJ"), tuple(range(1, 11))),
    Task("hostile", tuple(HOSTILE), (1, 2, 3)),
]


def make_run_model() -> HookedTransformer:
    """A tiny model for the whole pipeline: a word tokenizer over RUN_TASKS (hostile token
    strings included) and a planted successor head L1H2 over every task."""
    words = [w for t in RUN_TASKS for w in t.items]
    model = HookedTransformer(tiny_config(d_vocab=len(words) + 8))
    model.eval()
    model.tokenizer = WordTokenizer(words)
    succ = {}
    for task in RUN_TASKS:
        ids = [words.index(w) for w in task.items]
        succ.update(zip(ids, ids[1:]))
    plant_successor_head(model, 1, 2, list(range(len(words))), succ)
    return model


FILLER = [" and", " the", " x", " then"]


@torch.no_grad()
def make_wild_model(k: float = 8.0) -> HookedTransformer:
    """Attention-only, no norms, learned positions: head L1H0 attends to its own position and
    writes the successor of the token there (copy-and-increment over the digits); layer 0 is
    silent and the other layer-1 heads keep their small random weights."""
    words = DIGITS + FILLER
    cfg = HookedTransformerConfig(n_layers=2, d_model=64, d_head=32, n_heads=4, d_vocab=len(words), n_ctx=32, attn_only=True,
                                  act_fn=None, normalization_type=None, positional_embedding_type="standard", seed=1, model_name="tiny-wild")
    model = HookedTransformer(cfg)
    model.eval()
    model.tokenizer = WordTokenizer(words)
    g = torch.Generator().manual_seed(2)
    V = len(words)
    model.embed.W_E.zero_()
    model.embed.W_E[:, :32] = torch.randn(V, 32, generator=g)
    model.pos_embed.W_pos.zero_()
    model.pos_embed.W_pos[:, 32:] = torch.eye(32)
    model.blocks[0].attn.W_O.zero_()
    attn = model.blocks[1].attn
    for W in (attn.W_Q, attn.W_K):
        W[0].zero_()
        W[0][32:] = 10 * torch.eye(32)
    succ = torch.zeros(V, V)
    for i in range(9):
        succ[i, i + 1] = k
    W_VO = torch.linalg.pinv(model.W_E) @ succ @ torch.linalg.pinv(model.W_U)
    U, S, Vh = torch.linalg.svd(W_VO)
    attn.W_V[0] = U[:, :32] * S[:32].sqrt()
    attn.W_O[0] = S[:32].sqrt()[:, None] * Vh[:32]
    attn.b_V.zero_()
    return model


def list_windows(n: int, length: int = 32, seed: int = 0) -> torch.Tensor:
    """Synthetic list text: runs of consecutive digits separated by filler words."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        row = []
        while len(row) < length:
            start = int(torch.randint(0, 6, (1,), generator=g))
            row += list(range(start, start + int(torch.randint(3, 5, (1,), generator=g))))
            row.append(10 + int(torch.randint(0, len(FILLER), (1,), generator=g)))
        rows.append(row[:length])
    return torch.tensor(rows)


def require_system_package(found: bool, what: str, install: str) -> None:
    """Skip when a Debian package the README lists is missing, unless CI says it must be there."""
    if found:
        return
    if os.environ.get("SUCCESSOR_LENS_REQUIRE_SYSTEM_PACKAGES"):
        pytest.fail(f"{what} is required here (SUCCESSOR_LENS_REQUIRE_SYSTEM_PACKAGES) but not installed: {install}")
    pytest.skip(f"{what} not installed: {install} (the CI installs it)")


@pytest.fixture(scope="session")
def hub_models():
    """The tests' Hugging Face cache, holding gpt2, EleutherAI/pythia-70m and 01-ai/Yi-6B (tiny, random)."""
    from hub_cache import fill

    return fill(HF_HOME)


PLANTED_SMALL = ["run", "--model", "planted-gpt2", "--seeds", "2", "--latents", "2", "--null-draws", "9", "--contexts", "8", "--steps", "30"]
"""A small whole run on `planted-gpt2`: the mechanics tests' run (the stage cache, kills, locks), not
its findings (test_controls.py runs the defaults). Built once per session: `planted_small_run`."""


@pytest.fixture(scope="session")
def planted_small_run(tmp_path_factory):
    """The `PLANTED_SMALL` run folder, built once per session; a test that changes it works on a
    copy (`copy_run`)."""
    from successor_lens.cli.main import main

    out = tmp_path_factory.mktemp("planted-small") / "run"
    assert main([*PLANTED_SMALL, "--out", str(out)]) == 0
    return out


def copy_run(folder, tmp_path):
    """A copy of a run folder at tmp_path/run (copy2 keeps the mtimes, so its stage cache holds)."""
    out = tmp_path / "run"
    shutil.copytree(folder, out)
    return out
