"""What the atlas shows and the export measures, light to import (no torch): the CLI takes its
defaults and help from it."""

from __future__ import annotations

from dataclasses import dataclass

from successor_lens.errors import check_int


@dataclass
class AtlasConfig:
    heads: int = 5
    """Heads with a page of their own (the top ones by succession score, plus the logit head)."""
    latents: int = 16384
    """Latent pages per dictionary at most (every latent of a dictionary up to this width; beyond it,
    class members first, most selective first, then the most active, and the index says how many
    have no page)."""
    top_tokens: int = 12
    """Top activating items listed per latent."""
    neighbours: int = 6
    """Decoder-direction neighbours listed per latent."""
    logit_tokens: int = 10
    """Tokens listed on each side of a latent's logit effect."""
    ov_items: int = 12
    """Items per task in a head's input -> output token map."""
    hist_bins: int = 24
    """Bars of the activation and logit histograms."""
    corpus: str | None = None
    """Where the export's contexts come from: python-docs, succession-lists, a text file or folder, or a
    hub dataset (None: python-docs, the shipped Python docs' prose)."""
    contexts: int = 128
    """Corpus windows every latent is measured on (the export's n_prompts_total; SAEDashboard's default
    is 24576, which the streaming harvest handles in the same memory: a CPU default stays small)."""
    context_tokens: int = 64
    """Tokens per corpus window (n_tokens_in_prompt; SAEDashboard's default is 128)."""
    top_contexts: int = 20
    """Top activating contexts exported per latent (SAEDashboard's top_acts_group_size): one per
    window, none repeating another's text."""
    n_quantiles: int = 5
    """Equal intervals of (0, max] the quantile groups are drawn from (SAEDashboard's n_quantiles)."""
    quantile_group_size: int = 5
    """Contexts per quantile group (SAEDashboard's quantile_group_size)."""
    context_before: int = 10
    """Tokens shown before the qualifying token of a context."""
    context_after: int = 4
    """Tokens shown after it."""
    export_batch: int = 128
    """Latents per export batch file (sae-dashboard's n_features_at_a_time)."""

    def __post_init__(self):
        check_int("--latents", self.latents, 1, 100_000)
        check_int("--contexts", self.contexts, 1, 1_000_000)
        check_int("--context-tokens", self.context_tokens, 2, 100_000)
        for name in ("heads", "top_tokens", "neighbours", "logit_tokens", "ov_items", "hist_bins", "top_contexts", "export_batch", "n_quantiles",
                     "quantile_group_size"):
            check_int(name, getattr(self, name), 1, 100_000)
        for name in ("context_before", "context_after"):
            check_int(name, getattr(self, name), 0, 100_000)
