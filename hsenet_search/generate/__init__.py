"""LLM loading and retrieval-augmented report drafting."""
