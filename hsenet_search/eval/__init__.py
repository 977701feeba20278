"""Retrieval, zero-shot, text and clinical-efficacy metrics."""
