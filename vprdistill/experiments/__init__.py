"""Experiments built from the toolkit's parts: the demo, the ablations, and their reports."""
