"""Synthetic CT-RATE generator: chest phantoms, rendered abnormalities, CT-RATE-style reports."""

from __future__ import annotations

from .generator import ScanPlan, SynthSummary, generate_dataset, plan_dataset, render_scan

__all__ = ["ScanPlan", "SynthSummary", "generate_dataset", "plan_dataset", "render_scan"]
