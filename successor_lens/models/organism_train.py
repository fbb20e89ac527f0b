"""Training the model organism `organism-gpt2` (docs/models.md, "The model organism").

A small GPT-2-architecture model over the real GPT-2 vocabulary, trained here by gradient descent,
deterministically from a seed, on an offline corpus rich in ordinal sequences. Nobody plants a
mechanism: whether a successor head emerges is for the method to find and ablation to confirm.

- The corpus (`organism_corpus`): documents generated from a seed by a few templates (comma lists
  of every task, numbered lines, "Chapter n" sections, dated diary entries, counting prose), with
  sentences of the Python docs (the shipped corpus, from Debian's python3-doc) as the prose around them, and whole Python
  docs paragraphs. Prose is kept only where every token is among the `PROSE_VOCAB` commonest, so
  the model uses a few thousand of GPT-2's 50,257 tokens.
- The model is trained over that compact vocabulary (`OrganismConfig`); `organism.py` places its
  rows at their GPT-2 ids when it loads (every other token: a zero embedding and a logit of
  `UNUSED_LOGIT`).
- Batches are a function of (seed, step) alone, so a run killed at any step and resumed from its last
  checkpoint ends bit-identical to one that never stopped.
"""

from __future__ import annotations

import datetime
import hashlib
import math
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from successor_lens.errors import ConfigError
from successor_lens.models.organism_config import BOS, OrganismConfig, compact_config
from successor_lens.tasks import DAY_PREFIXES, DAYS, LETTERS, MONTH_PREFIXES, MONTHS, NUMBER_WORDS, ORDINALS, ROMAN

PROSE_VOCAB = 1500
"""Prose sentences are kept only when every token is among this many commonest prose tokens."""


# ---------------------------------------------------------------- corpus

_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def prose_sentences(paragraphs: list[str], tokenizer, vocab: int = PROSE_VOCAB) -> tuple[list[str], list[str]]:
    """(sentences, paragraphs) of the prose whose every token is among the `vocab` commonest
    tokens of the prose: plain English of a small vocabulary, in the docs' order."""
    sentences = [s.strip() for p in paragraphs for s in _SENTENCE.split(" ".join(p.split())) if 20 <= len(s.strip()) <= 200]
    ids = [tokenizer.encode(" " + s) for s in sentences]
    counts = Counter(t for row in ids for t in row)
    common = {t for t, _ in counts.most_common(vocab)}
    kept = [s for s, row in zip(sentences, ids) if set(row) <= common]
    paras = [" ".join(p.split()) for p in paragraphs]
    kept_paras = [p for p in paras if 40 <= len(p) <= 600 and set(tokenizer.encode(" " + p)) <= common]
    return kept, kept_paras


LIST_TASKS = {
    "numbers": ([str(n) for n in range(0, 501)], False),
    "number_words": (NUMBER_WORDS, False),
    "ordinals": (ORDINALS, False),
    "days": (DAYS, True),
    "day_prefixes": (DAY_PREFIXES, True),
    "months": (MONTHS, True),
    "month_prefixes": (MONTH_PREFIXES, True),
    "letters": (LETTERS, False),
    "roman": (ROMAN, False),
}
"""Every ordinal task of the paper (tasks.py), as (items, cyclic)."""
HEADINGS = ("Chapter", "Section", "Step", "Part", "Lesson", "Exercise", "Item", "Page", "Level", "Round")
SEPARATORS = (", ", ", ", ", ", ",", "; ", " ", " - ", "\n")


def _sequence(rng: random.Random, items: list[str], cyclic: bool, length: int) -> list[str]:
    start = rng.randrange(len(items) if cyclic else max(1, len(items) - length + 1))
    return [items[(start + i) % len(items)] for i in range(length if cyclic else min(length, len(items) - start))]


def _case(rng: random.Random, items: list[str]) -> list[str]:
    form = rng.random()
    if form < 0.15:
        return [s.lower() for s in items]
    if form < 0.25 and items and items[0].isalpha() and len(items[0]) > 1:
        return [s.capitalize() for s in items]
    return items


def organism_documents(seed: int, n: int, sentences: list[str], paragraphs: list[str]) -> Iterator[str]:
    """`n` documents generated from `seed`: the same text for the same arguments, on any machine."""
    rng = random.Random(seed)
    say = (lambda: rng.choice(sentences)) if sentences else (lambda: "It was a quiet morning.")
    kinds: list[tuple[float, Callable[[], str]]] = []

    def comma_list() -> str:
        name = rng.choice(list(LIST_TASKS))
        items, cyclic = LIST_TASKS[name]
        seq = _sequence(rng, list(items), cyclic, rng.randint(3, 12))
        if name in ("number_words", "ordinals", "letters", "days", "months"):
            seq = _case(rng, seq)
        sep = rng.choice(SEPARATORS)
        text = sep.join(seq)
        return f"{say()} {text}" if rng.random() < 0.3 else text

    def numbered_lines() -> str:
        start = rng.randrange(0, 490)
        mark = rng.choice((".", ")", ":"))
        return "\n".join(f"{start + i}{mark} {say()}" for i in range(rng.randint(3, 6)))

    def headings() -> str:
        head = rng.choice(HEADINGS)
        style = rng.random()
        if style < 0.6:
            start = rng.randrange(0, 495)
            labels = [str(start + i) for i in range(rng.randint(2, 5))]
        elif style < 0.8:
            labels = _sequence(rng, list(ROMAN if rng.random() < 0.5 else LETTERS), False, rng.randint(2, 5))
        else:
            labels = _sequence(rng, NUMBER_WORDS, False, rng.randint(2, 5))
            labels = [w.capitalize() for w in labels]
        return "\n\n".join(f"{head} {label}. {say()}" for label in labels)

    def diary() -> str:
        day = datetime.date(2000, 1, 1) + datetime.timedelta(days=rng.randrange(365 * 30))
        short = rng.random() < 0.3
        lines = []
        for _ in range(rng.randint(2, 5)):
            weekday, month = DAYS[day.weekday()], MONTHS[day.month - 1]
            if short:
                weekday, month = weekday[:3], month[:3]
            lines.append(f"{weekday}, {day.day} {month} {day.year}. {say()}")
            day += datetime.timedelta(days=1)
        return "\n".join(lines)

    def ordinal_prose() -> str:
        start = rng.randrange(0, len(ORDINALS) - 3)
        words = ORDINALS[start : start + rng.randint(2, 4)]
        return " ".join(f"The {w} {rng.choice(('step', 'line', 'item', 'time', 'day', 'part'))} is next. {say()}" for w in words)

    def counting() -> str:
        start = rng.randrange(0, 495)
        unit = rng.choice(("apples", "lines", "bytes", "times", "items", "files", "days", "steps"))
        return " ".join(f"After {start + i} {unit}, {say().lower()}" for i in range(rng.randint(2, 4)))

    def prose() -> str:
        return rng.choice(paragraphs) if paragraphs else say()

    kinds = [(0.40, comma_list), (0.12, numbered_lines), (0.12, headings), (0.10, diary), (0.06, ordinal_prose),
             (0.08, counting), (0.12, prose)]
    weights = [w for w, _ in kinds]
    for _ in range(n):
        yield rng.choices(kinds, weights)[0][1]()


def organism_corpus(config: OrganismConfig, prose: list[str], tokenizer) -> tuple[list[list[int]], str]:
    """The corpus's documents as GPT-2 token ids, and its sha256 (of the text, documents joined by
    the end-of-text token): deterministic in (config.seed, config.documents, the prose)."""
    sentences, paragraphs = prose_sentences(prose, tokenizer)
    texts = list(organism_documents(config.seed, config.documents, sentences, paragraphs))
    sha = hashlib.sha256("<|endoftext|>".join(texts).encode()).hexdigest()
    return [tokenizer.encode(t) for t in texts], sha


def used_tokens(docs: list[list[int]], tokenizer) -> list[int]:
    """The GPT-2 ids the organism has rows for: every corpus token, every item of the paper's tasks
    that is a single token (with and without a leading space), and BOS; sorted."""
    ids = {BOS} | {t for doc in docs for t in doc}
    for items, _ in LIST_TASKS.values():
        for item in items:
            for form in (item, " " + item, item.lower(), " " + item.lower()):
                row = tokenizer.encode(form)
                if len(row) == 1:
                    ids.add(row[0])
    return sorted(ids)


# ---------------------------------------------------------------- training

class Batches:
    """Training windows cut from the documents (each `BOS` + `seq_len - 1` tokens of the stream of
    documents joined by `BOS`), and batch `step` = a fixed function of (seed, step)."""

    def __init__(self, docs: list[list[int]], vocab: list[int], config: OrganismConfig):
        import torch

        row_of = {t: i for i, t in enumerate(vocab)}
        stream = [row_of[t] for doc in docs for t in (*doc, BOS)]
        body = config.seq_len - 1
        n = len(stream) // body
        if n < config.batch:
            raise ConfigError(f"the corpus makes {n} windows, fewer than a batch of {config.batch}: raise documents")
        windows = torch.tensor(stream[: n * body]).view(n, body)
        self.windows = torch.cat([torch.full((n, 1), row_of[BOS]), windows], 1)
        self.config = config

    def __call__(self, step: int):
        import torch

        per_epoch = len(self.windows) // self.config.batch
        epoch, k = divmod(step, per_epoch)
        order = torch.randperm(len(self.windows), generator=torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch))
        return self.windows[order[k * self.config.batch : (k + 1) * self.config.batch]]


def lr_at(config: OrganismConfig, step: int) -> float:
    """Linear warm-up, then cosine decay to a tenth."""
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    t = (step - config.warmup) / max(1, config.steps - config.warmup)
    return config.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def new_model(config: OrganismConfig, n_vocab: int):
    import torch
    from transformer_lens import HookedTransformer

    torch.manual_seed(config.seed)
    return HookedTransformer(compact_config(config, n_vocab), move_to_device=False)


def optimizer_for(model, config: OrganismConfig):
    import torch

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "W_pos" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "W_pos" not in n)]
    return torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay}, {"params": rest, "weight_decay": 0.0}],
                             lr=config.lr, betas=(0.9, 0.98))


def train_steps(model, optimizer, batches: Batches, config: OrganismConfig, start: int, stop: int,
                on_step: Callable[[int, float], Any] | None = None) -> list[float]:
    """Steps [start, stop) of training; the loss of each. Deterministic: the same model, optimizer
    state and step range give bit-identical weights, in any process (torch's deterministic
    algorithms: the embedding's backward otherwise accumulates in a thread-dependent order)."""
    import torch

    model.train()
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        losses = _steps(model, optimizer, batches, config, start, stop, on_step)
    finally:
        torch.use_deterministic_algorithms(previous)
        model.eval()
    return losses


def _steps(model, optimizer, batches: Batches, config: OrganismConfig, start: int, stop: int,
           on_step: Callable[[int, float], Any] | None) -> list[float]:
    import torch

    losses = []
    for step in range(start, stop):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(config, step)
        tokens = batches(step)
        loss = model(tokens, return_type="loss")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        if on_step is not None:
            on_step(step, losses[-1])
    return losses


CHECKPOINT, OPTIMIZER, STATE = "checkpoint.safetensors", "optimizer.pt", "train_state.json"
CURVE = "training_curve.png"
CHECKPOINT_EVERY = 250


def default_prose() -> list[str]:
    """The Python docs' paragraphs (the shipped corpus, the text python3-doc's sources give)."""
    from successor_lens.corpus import load_corpus

    return load_corpus()


def train_organism(out: Path, config: OrganismConfig, prose: list[str], log: Callable[[str], Any] = print) -> dict:
    """Train the organism into `out` (a folder the caller holds), resuming from its checkpoint when
    one of the same recipe and corpus is there; writes the compact weights and manifest that
    `organism.py` loads (`organism-gpt2.safetensors`, `manifest.json`) and the training curve."""
    import torch
    from safetensors.torch import load_file, save_file

    from successor_lens.io import atomic_path, digest, file_sha256, provenance, read_json, write_json
    from successor_lens.models.organism import MANIFEST, WEIGHTS, compact_state
    from successor_lens.models.planted import gpt2_tokenizer
    from successor_lens.progress import bar

    started = time.perf_counter()
    tokenizer = gpt2_tokenizer()
    docs, corpus_sha = organism_corpus(config, prose, tokenizer)
    vocab = used_tokens(docs, tokenizer)
    batches = Batches(docs, vocab, config)
    recipe = digest({"config": asdict(config), "corpus": corpus_sha, "vocab": vocab, "torch": torch.__version__})
    log(f"corpus: {len(docs)} documents, {sum(map(len, docs))} tokens (sha256 {corpus_sha[:12]}), {len(vocab)} distinct tokens")
    model = new_model(config, len(vocab))
    optimizer = optimizer_for(model, config)
    state = read_json(out / STATE, "training state") if (out / STATE).is_file() else None
    if state and state.get("recipe") == recipe and (out / CHECKPOINT).is_file():
        model.load_state_dict({**model.state_dict(), **load_file(str(out / CHECKPOINT))})
        optimizer.load_state_dict(torch.load(out / OPTIMIZER, weights_only=True))
        log(f"resuming at step {state['step']} of {config.steps}")
    else:
        state = {"recipe": recipe, "step": 0, "losses": [], "wall_s": 0.0}
    progress = bar(total=config.steps, initial=state["step"], desc="training organism-gpt2", unit="step")
    wall0 = state["wall_s"]
    while state["step"] < config.steps:
        stop = min(config.steps, (state["step"] // CHECKPOINT_EVERY + 1) * CHECKPOINT_EVERY)
        losses = train_steps(model, optimizer, batches, config, state["step"], stop,
                             lambda _, loss: (progress.update(1), progress.set_postfix(loss=f"{loss:.3f}")))
        state["losses"] += [round(x, 5) for x in losses]
        state["step"] = stop
        state["wall_s"] = round(wall0 + time.perf_counter() - started, 1)
        (out / STATE).unlink(missing_ok=True)  # the old state names the old checkpoint: invalid until both are rewritten
        with atomic_path(out / CHECKPOINT) as tmp:
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
        with atomic_path(out / OPTIMIZER) as tmp:
            torch.save(optimizer.state_dict(), tmp)
        write_json(out / STATE, state)
    progress.close()
    (out / MANIFEST).unlink(missing_ok=True)
    with atomic_path(out / WEIGHTS) as tmp:
        save_file(compact_state(model, vocab), str(tmp))
    curve = plot_curve(state["losses"], out / CURVE)
    manifest = provenance(
        model="organism-gpt2", config=asdict(config), weights_sha256=file_sha256([out / WEIGHTS]),
        weights_bytes=(out / WEIGHTS).stat().st_size, weights_dtype="float16", corpus_sha256=corpus_sha,
        corpus={"documents": len(docs), "tokens": sum(map(len, docs)), "distinct_tokens": len(vocab),
                "prose": "Python docs (python3-doc) sentences" if prose else "none (python3-doc not installed)"},
        tokens_seen=config.steps * config.batch * config.seq_len, train_wall_s=state["wall_s"],
        final_loss=sum(state["losses"][-50:]) / len(state["losses"][-50:]),
        loss_every_50=[round(sum(state["losses"][i:i + 50]) / len(state["losses"][i:i + 50]), 4) for i in range(0, len(state["losses"]), 50)],
        torch=torch.__version__, curve=curve.name,
    )
    write_json(out / MANIFEST, manifest)
    return manifest


def plot_curve(losses: list[float], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from successor_lens.io import atomic_path

    window = 50
    smooth = [sum(losses[max(0, i - window + 1) : i + 1]) / len(losses[max(0, i - window + 1) : i + 1]) for i in range(len(losses))]
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=120)
    ax.plot(losses, color="#bbb", lw=0.6, label="per step")
    ax.plot(smooth, color="#1f77b4", lw=1.5, label=f"mean of {window}")
    ax.set_xlabel("step")
    ax.set_ylabel("next-token loss (nats)")
    ax.set_title("organism-gpt2 training")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
