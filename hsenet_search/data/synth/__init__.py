"""Synthetic CT-RATE generator: chest phantoms, rendered abnormalities, CT-RATE-style reports."""
