"""hsenet-search: cross-modal chest-CT ⇄ report search on the HSENet model family."""

__version__ = "0.1.0"
