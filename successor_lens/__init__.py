"""successor-lens: SAE feature analysis of how language models represent ordinal tokens."""

__version__ = "0.1.0"
