"""Probes: linear probes, successor-head scores, vector arithmetic, in-the-wild analysis."""
