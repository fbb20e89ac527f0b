"""The `successor-lens` command: thin wrappers that parse, call the stages, and write artefacts."""
