"""Retrieval for drafting: the k most similar indexed cases of a scan, as ``RetrievedCase`` records."""

from __future__ import annotations

from pathlib import Path

from hsenet_search.data.report_text import join_report


def retrieved_cases(hits) -> list:
    """Search hits -> the drafting module's ``RetrievedCase`` records (case id = scan id)."""
    from .draft import RetrievedCase

    return [RetrievedCase(h.scan_id, h.score, h.findings, h.impression, tuple(h.labels)) for h in hits]


def ground(
    engine,
    path: str | Path,
    k: int,
    *,
    rescale: tuple[float, float] | None = None,
    exclude_scan: str | None = None,
    exclude_text: str | None = None,
) -> list:
    """The k nearest cases of the scan at ``path``; a scan's own case and identical report are excluded."""
    vector = engine.encode_volume(path, rescale=rescale)
    fetch = min(engine.volumes.ntotal, k + 10) if (exclude_scan or exclude_text) else k
    hits = engine.search_embedding(vector, fetch, target="volumes").hits
    own = (exclude_text or "").strip()
    kept = [h for h in hits if h.scan_id != exclude_scan and not (own and join_report(h.findings, h.impression) == own)]
    return retrieved_cases(kept[:k])
