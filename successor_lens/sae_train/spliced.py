"""SAE quality the way users compare SAEs: the model's next-token loss with the reconstruction
spliced in at the SAE's hook, against the clean model and against zero ablation of that hook.

    loss_recovered = (zero - spliced) / (zero - clean)    (1: as good as the clean model, 0: as bad as ablation)
    kl_spliced     = mean over positions of KL(clean next-token distribution || spliced one)

as SAELens's evals report them (`ce_loss_score`, `kl_div_with_sae`). Measured on corpus windows,
every position but the last predicting the next token (BOS included when the model prepends one).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from transformer_lens import HookedTransformer


@dataclass
class SplicedLoss:
    clean: float
    """Next-token loss of the model as it is (nats per token)."""
    spliced: float
    """With the SAE's reconstruction in place of the hook's activation."""
    zero_ablated: float
    """With the hook's activation set to zero."""
    loss_recovered: float | None
    """(zero - spliced) / (zero - clean); None when ablation does not change the loss."""
    kl_spliced: float
    """Mean KL(clean || spliced) of the next-token distributions (nats)."""
    kl_zero: float
    """Mean KL(clean || zero-ablated)."""
    n_tokens: int

    def summary(self) -> str:
        rec = "n/a" if self.loss_recovered is None else f"{self.loss_recovered:.3f}"
        return (f"next-token loss clean {self.clean:.4f}, SAE spliced in {self.spliced:.4f}, zero-ablated {self.zero_ablated:.4f}: "
                f"loss recovered {rec}; KL to clean {self.kl_spliced:.4f} (zero ablation {self.kl_zero:.4f}) over {self.n_tokens} tokens")


@torch.no_grad()
def spliced_loss(model: HookedTransformer, sae, windows: Tensor, hook: str, batch: int = 8) -> SplicedLoss:
    """`sae` is anything with encode/decode over the hook's activations (an sae-lens SAE, or a `Dictionary`)."""
    return spliced_losses(model, [sae], windows, hook, batch)[0]


@torch.no_grad()
def spliced_losses(model: HookedTransformer, saes: list, windows: Tensor, hook: str | list[str], batch: int = 8) -> list[SplicedLoss]:
    """`spliced_loss` of several dictionaries, each on `hook` (one name for all, or one per
    dictionary): the clean pass is shared by all and the zero-ablated pass by those on one hook, so
    each further dictionary costs one forward pass per batch."""
    saes = [getattr(sae, "sae", sae) for sae in saes]
    hooks = [hook] * len(saes) if isinstance(hook, str) else list(hook)
    if len(hooks) != len(saes):
        raise ValueError(f"{len(saes)} dictionaries but {len(hooks)} hooks")
    device = model.W_E.device
    sums = [{"clean": 0.0, "spliced": 0.0, "zero": 0.0, "kl_spliced": 0.0, "kl_zero": 0.0} for _ in saes]
    n = 0

    def splice(sae):
        return lambda act, hook: sae.decode(sae.encode(act.float())).to(act.dtype)

    def zero(act, hook):
        return torch.zeros_like(act)

    for chunk in windows.split(batch):
        tokens = chunk.to(device)
        target = tokens[:, 1:]
        clean = _logp(model(tokens))
        clean_nll = _nll(clean, target)
        shared: dict[str, dict[str, float]] = {}
        for h in dict.fromkeys(hooks):
            zeroed = _logp(model.run_with_hooks(tokens, fwd_hooks=[(h, zero)]))
            shared[h] = {"clean": clean_nll, "zero": _nll(zeroed, target), "kl_zero": _kl(clean, zeroed)}
            del zeroed
        for sae, h, total in zip(saes, hooks, sums):
            spliced = _logp(model.run_with_hooks(tokens, fwd_hooks=[(h, splice(sae))]))
            for key, value in {**shared[h], "spliced": _nll(spliced, target), "kl_spliced": _kl(clean, spliced)}.items():
                total[key] += value
        n += target.numel()
    out = []
    for total in sums:
        clean_, spliced_, zero_ = total["clean"] / n, total["spliced"] / n, total["zero"] / n
        gap = zero_ - clean_
        out.append(SplicedLoss(clean_, spliced_, zero_, (zero_ - spliced_) / gap if abs(gap) > 1e-9 else None,
                               total["kl_spliced"] / n, total["kl_zero"] / n, n))
    return out


def _logp(logits: Tensor) -> Tensor:
    return F.log_softmax(logits[:, :-1].float(), -1)


def _nll(logp: Tensor, target: Tensor) -> float:
    return -logp.gather(-1, target[..., None]).sum().item()


def _kl(clean: Tensor, other: Tensor) -> float:
    return (clean.exp() * (clean - other)).sum().item()
