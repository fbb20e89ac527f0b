"""Artifacts: plots, the feature atlas and reports. The math never imports this package."""
