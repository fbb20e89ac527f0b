"""Which head does what, and where in-context succession happens (docs/method.md, "Head roles").

- OV roles: each head's top-1 among its task's items at index offsets -2..+2 (copying 0,
  successor +1, predecessor -1, +2, -2), read on the residual the head reads for a token (the
  "residual" effective embedding: the token's residual entering the head's layer after a
  one-token prefix). Null: the tasks' chance level, one-sided binomial, Bonferroni over every
  head and offset.
- Attention roles: previous-token score (attention from each position to the one before, on
  random token sequences) and induction score (on a random sequence repeated, attention from the
  second copy to the token after the same token's first occurrence). Null: what uniform causal
  attention puts on the same positions; a head has the role when its score is above ROLE_BAR and
  ROLE_RATIO x that null.
- Activation patching on the in-context succession prompts: each head's output at the last
  position is patched from a corrupted prompt (same task and token length, other items, another
  answer) into the clean run; its effect is the share of the clean-minus-corrupted logit
  difference (clean answer vs corrupted answer) it removes. Null: no effect, a one-sided t-test over
  the prompts, Bonferroni over every head; a head "carries" succession with at least MIN_EFFECT.
- For the heads that carry the succession: their OV map applied to the residual they actually read
  in context (their layer's resid_pre at the position they attend to most from the last position):
  top-1 among the task's candidates is the answer (succession) or the attended item (copying).
  Null: chance among the candidates.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from scipy import stats
from torch import Tensor
from transformer_lens import HookedTransformer

try:  # transformer-lens 3.x
    from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache
except ImportError:  # transformer-lens 2.x (the pin allows >=2.16.1)
    from transformer_lens.past_key_value_caching import (  # type: ignore[no-redef]
        HookedTransformerKeyValueCache as TransformerLensKeyValueCache,
    )
from transformer_lens.utilities import get_act_name

from successor_lens.nulls import ALPHA, rate_vs_chance
from successor_lens.probes.circuit import OVCircuit
from successor_lens.probes.head_id import head_name
from successor_lens.probes.incontext import Prompt, encode_prompt
from successor_lens.probes.probe_configs import ScanConfig
from successor_lens.probes.scan import top_in_task
from successor_lens.tasks import TokenSet

OV_ROLES = {0: "copying", 1: "successor", -1: "predecessor", 2: "+2", -2: "-2"}
ROLE_BAR, ROLE_RATIO = 0.4, 4.0
"""An attention role needs a score above ROLE_BAR and ROLE_RATIO x uniform attention's."""
SEQ_LEN, N_SEQS = 24, 16
MIN_EFFECT = 0.05
"""A head carries in-context succession when patching it removes a significant share of at least
this much of the answer's margin (smaller effects are significant over many prompts but carry little)."""


@torch.no_grad()
def ov_roles(model: HookedTransformer, token_set: TokenSet, embedding: str = "residual") -> dict[str, dict]:
    """Per head: top-1 rate at each offset among the task's items, its chance level and verdict."""
    top_LHN = top_in_task(model, token_set, ScanConfig(embedding=embedding)).cpu()
    n_tasks = {t: len(token_set.of_task(t)) for t in token_set.task_names}
    L, H = top_LHN.shape[:2]
    out: dict[str, dict] = {head_name(layer, head): {} for layer in range(L) for head in range(H)}
    for k, role in OV_ROLES.items():
        pairs = [(r, t) for r, t in token_set.offset_pairs(k) if not token_set.tasks[token_set.items[r].task].held_out]
        if not pairs:
            continue
        rows, targets = torch.tensor([r for r, _ in pairs]), torch.tensor([t for _, t in pairs])
        chance = sum(1 / n_tasks[token_set.items[r].task] for r, _ in pairs) / len(pairs)
        hits_LH = (top_LHN[:, :, rows] == targets).sum(-1)
        for layer in range(L):
            for head in range(H):
                v = rate_vs_chance(int(hits_LH[layer, head]), len(pairs), chance, comparisons=L * H * len(OV_ROLES))
                out[head_name(layer, head)][role] = {"rate": v.value, "chance": chance, "above": v.above}
    return out


@torch.no_grad()
def attention_roles(model: HookedTransformer, seed: int = 0) -> dict[str, dict]:
    """Per head: previous-token and induction scores beside uniform attention's, on random tokens."""
    gen = torch.Generator().manual_seed(seed)
    half = SEQ_LEN // 2
    seqs = torch.randint(0, model.cfg.d_vocab, (N_SEQS, half), generator=gen)
    ids = torch.cat([seqs, seqs], 1).to(model.W_E.device)
    names = {get_act_name("pattern", layer) for layer in range(model.cfg.n_layers)}
    _, cache = model.run_with_cache(ids, names_filter=lambda n: n in names)
    q = torch.arange(1, 2 * half)
    uniform_prev = float((1 / (q + 1)).mean())
    q_ind = torch.arange(half, 2 * half)
    uniform_ind = float((1 / (q_ind + 1)).mean())
    out = {}
    for layer in range(model.cfg.n_layers):
        pattern = cache[get_act_name("pattern", layer)].cpu()  # [batch, heads, query, key]
        prev = pattern[:, :, q, q - 1].mean((0, 2))
        induction = pattern[:, :, q_ind, q_ind - half + 1].mean((0, 2))
        for head in range(model.cfg.n_heads):
            out[head_name(layer, head)] = {
                "previous-token": _attention_role(float(prev[head]), uniform_prev),
                "induction": _attention_role(float(induction[head]), uniform_ind),
            }
    return out


def _attention_role(score: float, uniform: float) -> dict:
    return {"score": score, "uniform": uniform, "above": score > ROLE_BAR and score > ROLE_RATIO * uniform}


def corrupted_pairs(model: HookedTransformer, prompts: list[Prompt]) -> list[tuple[Prompt, Prompt]]:
    """(clean, corrupted): prompts of the same task and token length with another answer, paired
    half a group apart (so their items do not overlap when the group is long enough)."""
    groups: dict[tuple[str, int], list[Prompt]] = {}
    for p in prompts:
        groups.setdefault((p.task, encode_prompt(model, p).shape[1]), []).append(p)
    pairs = []
    for group in groups.values():
        for i, clean in enumerate(group):
            other = group[(i + max(1, len(group) // 2)) % len(group)]
            if other.answer != clean.answer:
                pairs.append((clean, other))
    return pairs


@dataclass
class Patching:
    effect: Tensor
    """[layers, heads] share of the clean-minus-corrupted logit difference the head's patch removes."""
    p: Tensor
    """[layers, heads] one-sided p-value of a positive effect over the prompts."""
    above: Tensor
    """[layers, heads] bool: p below ALPHA / (layers x heads) and an effect of at least MIN_EFFECT."""
    n_pairs: int
    total: float
    """Mean clean-minus-corrupted logit difference."""


@torch.no_grad()
def patch_heads(model: HookedTransformer, pairs: list[tuple[Prompt, Prompt]]) -> Patching:
    """Each head's output at the last position patched from the corrupted prompt into the clean one."""
    L, H = model.cfg.n_layers, model.cfg.n_heads
    z_names = {get_act_name("z", layer) for layer in range(L)}
    drops: list[Tensor] = []  # per length group: [L, H, n]
    totals: list[Tensor] = []
    by_len: dict[int, list[tuple[Prompt, Prompt]]] = {}
    for pair in pairs:
        by_len.setdefault(encode_prompt(model, pair[0]).shape[1], []).append(pair)
    for group in by_len.values():
        clean = torch.cat([encode_prompt(model, c) for c, _ in group]).to(model.W_E.device)
        corrupt = torch.cat([encode_prompt(model, k) for _, k in group]).to(model.W_E.device)
        a = torch.tensor([c.answer for c, _ in group])
        b = torch.tensor([k.answer for _, k in group])
        n = len(group)

        def diff(logits: Tensor, a: Tensor = a, b: Tensor = b) -> Tensor:
            """Per prompt: clean answer's logit minus the corrupted answer's, at the last position."""
            last = logits[:, -1]
            return (last.gather(-1, a.repeat(len(last) // len(a))[:, None].to(last.device))
                    - last.gather(-1, b.repeat(len(last) // len(b))[:, None].to(last.device)))[:, 0].cpu()
        clean_logits = model(clean, return_type="logits")
        assert isinstance(clean_logits, Tensor)
        corrupt_logits, cache = model.run_with_cache(corrupt, names_filter=lambda name: name in z_names)
        assert isinstance(corrupt_logits, Tensor)
        ld_clean = diff(clean_logits)
        totals.append(ld_clean - diff(corrupt_logits))
        drop = torch.zeros(L, H, n)
        batch = clean.repeat(H, 1)  # one copy of the clean prompts per head of the layer
        # The patch is at the last position, so every earlier position is the clean run's: its
        # keys and values are computed once (a frozen cache) and each patched run is one token.
        prefix_kv = TransformerLensKeyValueCache.init_cache(model.cfg, model.cfg.device, len(batch))
        model(batch[:, :-1], past_kv_cache=prefix_kv, attention_mask=torch.ones_like(batch[:, :-1]))  # no pads: never guess them from pad_token_id
        prefix_kv.freeze()
        for layer in range(L):
            z_corrupt = cache[get_act_name("z", layer)][:, -1]  # [n, heads, d_head]

            def patch(z, hook, z_corrupt=z_corrupt, n=n):
                for head in range(H):
                    z[head * n : (head + 1) * n, -1, head] = z_corrupt[:, head]
                return z

            logits = model.run_with_hooks(batch[:, -1:], return_type="logits", past_kv_cache=prefix_kv, attention_mask=torch.ones_like(batch[:, -1:]),
                                          fwd_hooks=[(get_act_name("z", layer), patch)])
            assert isinstance(logits, Tensor)
            drop[layer] = ld_clean.repeat(H).view(H, n) - diff(logits).view(H, n)
        drops.append(drop)
    drop_LHN = torch.cat(drops, -1)
    total = float(torch.cat(totals).mean())
    effect = drop_LHN.mean(-1) / (total if abs(total) > 1e-9 else float("nan"))
    p = torch.ones(L, H)
    if drop_LHN.shape[-1] > 1:
        for layer in range(L):
            for head in range(H):
                x = drop_LHN[layer, head].numpy()
                if x.std() > 0:
                    p[layer, head] = float(stats.ttest_1samp(x, 0.0, alternative="greater").pvalue)
    return Patching(effect, p, (p < ALPHA / (L * H)) & (effect >= MIN_EFFECT), drop_LHN.shape[-1], total)


@torch.no_grad()
def ov_in_context(model: HookedTransformer, pairs: list[tuple[Prompt, Prompt]], layer: int, head: int) -> dict:
    """The head's OV map on the residual it reads in context: at the position it attends to most
    from the last position, its layer's resid_pre, through its OV circuit to the task's candidates."""
    names = {get_act_name("pattern", layer), get_act_name("resid_pre", layer)}
    succession = copying = last_item = n = 0
    chance: list[float] = []
    by_len: dict[int, list[Prompt]] = {}
    for clean, _ in pairs:
        by_len.setdefault(encode_prompt(model, clean).shape[1], []).append(clean)
    for group in by_len.values():
        ids_NP = torch.cat([encode_prompt(model, p) for p in group]).to(model.W_E.device)
        _, cache = model.run_with_cache(ids_NP, names_filter=lambda name: name in names)
        where_N = cache[get_act_name("pattern", layer)][:, head, -1].argmax(-1)
        resid_ND = cache[get_act_name("resid_pre", layer)][torch.arange(len(group)), where_N]
        for k, prompt in enumerate(group):
            candidates = torch.tensor(prompt.candidates)
            top = candidates[int(OVCircuit.from_model(model, layer, head, candidates).logits(resid_ND[k][None])[0].argmax())]
            ids, where = ids_NP[k].tolist(), int(where_N[k])
            succession += int(top == prompt.answer)
            copying += int(top == ids[where])
            last_item += int(ids[where] in prompt.candidates and where == max(i for i, t in enumerate(ids) if t in prompt.candidates))
            chance.append(1 / len(prompt.candidates))
            n += 1
    level = sum(chance) / n if n else 0.0
    succ = rate_vs_chance(succession, n, level)
    return {"head": head_name(layer, head), "n": n, "succession": succ.value, "succession_above_chance": succ.above, "chance": level,
            "copying": copying / n if n else None, "reads_last_item": last_item / n if n else None}


def describe(name: str, ov: dict, attention: dict, patching: dict | None) -> str:
    """One head's roles in plain words (only the roles above their nulls)."""
    parts = [f"{role} {v['rate']:.2f} (chance {v['chance']:.2f})" for role, v in ov.items() if v["above"]]
    parts += [f"{role} {v['score']:.2f} (uniform {v['uniform']:.2f})" for role, v in attention.items() if v["above"]]
    if patching and patching["above"]:
        parts.append(f"carries in-context succession: patching it removes {patching['effect']:.1%} of the answer's margin")
    return f"{name}: " + ("; ".join(parts) if parts else "no role above its null")


def head_roles(model: HookedTransformer, prompts: list[Prompt], token_set: TokenSet, seed: int = 0, top: int = 3) -> dict:
    """Everything above for one model: roles.json's body."""
    ov = ov_roles(model, token_set)
    attention = attention_roles(model, seed)
    pairs = corrupted_pairs(model, prompts)
    patching = patch_heads(model, pairs) if pairs else None
    H = model.cfg.n_heads
    per_head = {}
    for i, name in enumerate(ov):  # ov is in layer, head order
        layer, head = divmod(i, H)
        patched = ({"effect": float(patching.effect[layer, head]), "p": float(patching.p[layer, head]), "above": bool(patching.above[layer, head])}
                   if patching is not None else None)
        per_head[name] = {"ov": ov[name], "attention": attention[name], "patching": patched,
                          "words": describe(name, ov[name], attention[name], patched)}
    carriers: list[dict] = []
    if patching is not None:
        order = patching.effect.flatten().nan_to_num(float("-inf")).argsort(descending=True)[:top].tolist()
        carriers = [{**ov_in_context(model, pairs, *divmod(i, H)), "effect": float(patching.effect.flatten()[i]),
                     "above": bool(patching.above.flatten()[i])} for i in order]
    return {
        "heads": per_head,
        "patching": {"n_pairs": patching.n_pairs, "total_logit_diff": patching.total, "effect": patching.effect.tolist(),
                     "test": f"one-sided t-test over the prompts, alpha {ALPHA}/{model.cfg.n_layers * H} (Bonferroni), "
                             f"and at least {MIN_EFFECT:.0%} of the margin"} if patching else None,
        "carriers": carriers,
        "nulls": {"ov": "chance among the task's items, one-sided binomial, Bonferroni over heads x offsets",
                  "attention": f"score > {ROLE_BAR} and > {ROLE_RATIO:g}x uniform causal attention on the same positions",
                  "patching": f"no effect: one-sided t-test over the prompts, Bonferroni over heads; at least {MIN_EFFECT:.0%} of the margin",
                  "ov_in_context": "chance among the prompt's candidates, one-sided binomial"},
        "embedding": "residual",
    }
