"""Retrieval-only report drafting: the nearest case's report, and the label-vote composer.

Retrieved cases arrive in rank order (most similar first), as the search engine returns them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from hsenet_search.data.labels import LABELS
from hsenet_search.data.report_text import sentences
from hsenet_search.errors import QueryError

from .checks import check_draft, complete, label_votes, positive_labels, sentence_key

NORMAL_IMPRESSION = "Thoracic CT examination within normal limits."

# label -> (findings sentence used when no neighbour sentence fits, impression phrase)
LABEL_TEXT: dict[str, tuple[str, str]] = {
    "Medical material": (
        "Medical material (catheter, surgical material) is observed in the study area.",
        "Medical material (catheter, surgical material)",
    ),
    "Arterial wall calcification": (
        "Atherosclerotic calcifications are observed in the wall of the thoracic aorta.",
        "Atherosclerotic changes in the thoracic aorta",
    ),
    "Cardiomegaly": ("The heart size is increased (cardiomegaly).", "Cardiomegaly"),
    "Pericardial effusion": ("Pericardial effusion is observed.", "Pericardial effusion"),
    "Coronary artery wall calcification": (
        "Calcified atherosclerotic plaques are observed in the coronary arteries.",
        "Coronary artery calcifications",
    ),
    "Hiatal hernia": ("A hiatal hernia is observed.", "Hiatal hernia"),
    "Lymphadenopathy": (
        "Lymph nodes of pathological size are observed in the mediastinum.",
        "Mediastinal lymphadenopathy",
    ),
    "Emphysema": ("Emphysematous changes are observed in both lungs.", "Emphysema in both lungs"),
    "Atelectasis": ("Atelectatic changes are observed in both lungs.", "Atelectasis"),
    "Lung nodule": ("Nodules are observed in the lung parenchyma.", "Lung nodules"),
    "Lung opacity": ("Ground-glass opacities are observed in the lung parenchyma.", "Lung opacities"),
    "Pulmonary fibrotic sequela": (
        "Fibrotic sequela changes are observed in the lung parenchyma.",
        "Pulmonary fibrotic sequelae",
    ),
    "Pleural effusion": ("Pleural effusion is observed.", "Pleural effusion"),
    "Mosaic attenuation pattern": (
        "A mosaic attenuation pattern is observed in both lungs.",
        "Mosaic attenuation pattern",
    ),
    "Peribronchial thickening": ("Peribronchial thickening is observed.", "Peribronchial thickening"),
    "Consolidation": ("Consolidation areas are observed in the lung parenchyma.", "Consolidation"),
    "Bronchiectasis": ("Bronchiectatic changes are observed in both lungs.", "Bronchiectasis"),
    "Interlobular septal thickening": ("Interlobular septal thickening is observed.", "Interlobular septal thickening"),
}

_LUNG_LABELS = (
    "Emphysema",
    "Atelectasis",
    "Lung nodule",
    "Lung opacity",
    "Pulmonary fibrotic sequela",
    "Mosaic attenuation pattern",
    "Peribronchial thickening",
    "Consolidation",
    "Bronchiectasis",
    "Interlobular septal thickening",
)

# Body systems in CT-RATE reading order: (labels reported there, CT-RATE negative statement or None,
# words that tell a neighbour's sentence is about that system).
SYSTEMS: tuple[tuple[tuple[str, ...], str | None, str | None], ...] = (
    (("Medical material",), None, None),
    ((), "Trachea and both main bronchi are open.", r"\btrache|\bmain bronch"),
    (
        ("Cardiomegaly", "Arterial wall calcification", "Coronary artery wall calcification"),
        "Mediastinal main vascular structures, heart contour, size are normal.",
        r"\bheart\b|\bcardiac|vascular struct",
    ),
    (("Pericardial effusion",), "Pericardial effusion-thickening was not observed.", r"pericard"),
    (
        ("Hiatal hernia",),
        "Thoracic esophagus calibration was normal and no significant tumoral wall thickening was detected.",
        r"esophag|hiatal",
    ),
    (
        ("Lymphadenopathy",),
        "No enlarged lymph nodes in prevascular, pre-paratracheal, subcarinal or bilateral "
        "hilar-axillary pathological dimensions were detected.",
        r"lymph",
    ),
    (
        _LUNG_LABELS,
        "When examined in the lung parenchyma window; aeration of both lungs is normal and no nodular "
        "or infiltrative lesion is detected in the lung parenchyma.",
        r"\blungs?\b|parenchym|aeration",
    ),
    (("Pleural effusion",), "Pleural effusion-thickening was not detected.", r"pleura"),
)


@dataclass(frozen=True)
class RetrievedCase:
    """One retrieved neighbour: its id, similarity score, report sections and positive label names."""

    case_id: str
    score: float
    findings: str
    impression: str
    labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class Sentence:
    """One sentence of a draft: its section, the retrieved cases whose reports hold it (``sources``), the
    labels the labeler finds in it, and its ``origin``: ``retrieved`` (a neighbour's sentence), ``template``
    (the composer's stock sentence for a voted label or a normal system; ``sources`` are the voting cases) or
    ``llm`` (written by the LLM and found in no neighbour's report; ``sources`` are the cases behind the
    composer sentences it rewrites)."""

    text: str
    section: str
    sources: tuple[str, ...]
    labels: tuple[str, ...]
    origin: str


@dataclass
class Draft:
    """A drafted report and what grounded it (``labels``: the labels the neighbours agree on; ``checks``: see
    :mod:`hsenet_search.generate.checks`; ``merge``: what the LLM merge kept, LLM mode only)."""

    findings: str
    impression: str
    retrieved: list[str]
    labels: list[str]
    llm: str
    mode: str
    warnings: list[str] = field(default_factory=list)
    sentences: list[Sentence] = field(default_factory=list)
    checks: dict = field(default_factory=dict)
    merge: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)


def check_cases(cases: Sequence[RetrievedCase]) -> None:
    if not cases:
        raise QueryError("no retrieved cases to draft a report from")


def agreed_labels(cases: Sequence[RetrievedCase], min_fraction: float = 0.5) -> list[str]:
    """Labels carried by at least ``min_fraction`` of the neighbours, one plain vote per neighbour.

    Votes are not score-weighted: scores are metric-dependent (cosine, inner product, distance) and the
    neighbours are already the k most similar. Known labels come in CT-RATE order, others after them A-Z.
    """
    check_cases(cases)
    if not 0.0 < min_fraction <= 1.0:
        raise QueryError(f"min_fraction must be in (0, 1], got {min_fraction}")
    counts: dict[str, int] = {}
    for case in cases:
        for label in set(case.labels):
            counts[label] = counts.get(label, 0) + 1
    agreed = {label for label, n in counts.items() if n >= min_fraction * len(cases)}
    known = [label for label in LABEL_TEXT if label in agreed]
    return known + sorted(agreed - set(known))


def draft_nearest(cases: Sequence[RetrievedCase]) -> Draft:
    """The nearest case's findings and impression verbatim."""
    check_cases(cases)
    nearest = cases[0]
    result = Draft(
        nearest.findings.strip(),
        nearest.impression.strip(),
        [c.case_id for c in cases],
        agreed_labels(cases),
        "none (nearest report)",
        "nearest",
    )
    if not result.findings:
        vote = draft_vote(cases)
        result.findings = vote.findings
        result.impression = result.impression or vote.impression
        result.warnings.append(f"nearest case {nearest.case_id} has no findings; used the label-vote findings")
    return result


def _pick_sentences(cases: Sequence[RetrievedCase], agreed: list[str], labels_of) -> dict[str, str]:
    """For each agreed label, the first neighbour sentence (in rank order) that reports it and reports no
    label outside ``agreed``; a sentence reporting several agreed labels covers all of them."""
    wanted, chosen = set(agreed), {}
    for case in cases:
        for sentence in sentences(case.findings):
            found = labels_of(sentence)
            if found and found <= wanted and not found <= set(chosen):
                for label in found - set(chosen):
                    chosen[label] = sentence
    return chosen


def draft_vote(cases: Sequence[RetrievedCase], min_fraction: float = 0.5) -> Draft:
    """Label-vote composer: a finding sentence per agreed label (a real neighbour sentence when the labeler
    finds one, else a template), CT-RATE negative statements for systems without findings, and an impression
    listing the agreed findings (or a normal impression)."""
    agreed = agreed_labels(cases, min_fraction)
    picked = _pick_sentences(cases, agreed, lambda text: set(positive_labels(text)))
    findings: list[str] = []
    placed: set[str] = set()

    def add(label: str) -> None:
        sentence = picked.get(label) or LABEL_TEXT.get(label, (f"{label} is observed.", ""))[0]
        if sentence not in findings:
            findings.append(sentence)
        placed.add(label)

    for labels, negative, _ in SYSTEMS:
        present = [label for label in agreed if label in labels]
        for label in present:
            add(label)
        if not present and negative:
            findings.append(negative)
    for label in agreed:
        if label not in placed:
            add(label)
    phrases = [LABEL_TEXT[label][1] if label in LABEL_TEXT else label for label in agreed]
    impression = ". ".join(phrases) + "." if phrases else NORMAL_IMPRESSION
    return Draft(" ".join(findings), impression, [c.case_id for c in cases], agreed, "none (label vote)", "vote")


# ------------------------------------------------------------------------------------- grounded composer


@dataclass(frozen=True)
class _Candidate:
    """A neighbour's sentence with the labels the labeler finds in it."""

    text: str
    section: str
    labels: frozenset[str]


def _candidates(cases: Sequence[RetrievedCase]) -> tuple[list[_Candidate], dict[str, list[str]]]:
    """Every neighbour sentence once (rank order, findings before impression) and, per sentence key, the ids
    of the cases whose reports hold it."""
    pool, holders = [], {}
    for section in ("findings", "impression"):
        for case in cases:
            for text in sentences(getattr(case, section)):
                text = text if complete(text) else text.rstrip(" ,;:") + "."  # CT-RATE omits some final stops
                key = sentence_key(text)
                if key not in holders:
                    holders[key] = []
                    pool.append(_Candidate(text, section, frozenset(positive_labels(text))))
                if case.case_id not in holders[key]:
                    holders[key].append(case.case_id)
    return pool, holders


def attribute(text: str, section: str, cases: Sequence[RetrievedCase], *, unknown: str = "llm") -> list[Sentence]:
    """Split ``text`` into sentences and trace each to the neighbours whose reports hold it (same words);
    a sentence held by none gets ``origin=unknown``."""
    _, holders = _candidates(cases)
    out = []
    for part in sentences(text):
        sources = tuple(holders.get(sentence_key(part), ()))
        out.append(Sentence(part, section, sources, tuple(positive_labels(part)), "retrieved" if sources else unknown))
    return out


def finish(result: Draft, cases: Sequence[RetrievedCase]) -> Draft:
    """Fill ``sentences`` (when the mode did not) and ``checks`` from the draft's text."""
    if not result.sentences:
        result.sentences = attribute(result.findings, "findings", cases, unknown="template") + attribute(
            result.impression, "impression", cases, unknown="template"
        )
    result.checks = check_draft(
        [s.text for s in result.sentences if s.section == "findings"],
        [s.text for s in result.sentences if s.section == "impression"],
        cases,
        result.labels,
    )
    return result


def draft_grounded(cases: Sequence[RetrievedCase], min_fraction: float = 0.5) -> Draft:
    """Grounded composer: a report assembled sentence by sentence from the neighbours' reports.

    Findings follow the CT-RATE reading order of :data:`SYSTEMS`. For each label the neighbours agree on,
    the first neighbour sentence (rank order) that reports it and nothing outside the agreed labels; for a
    system without agreed findings that the neighbours cover, the negative sentence most of them use for it (a
    sentence about the system in which the labeler finds nothing); then every other sentence without a
    finding that at least ``min_fraction`` of the neighbours hold verbatim (upper abdomen, bones, ...), unless
    it is about a system with an agreed finding. Labels too few neighbours
    carry are left out (listed in ``checks.label_agreement.left_out``). The impression takes, per agreed
    label, a neighbour impression sentence reporting it (else the stock phrase), or the neighbours' most
    common normal impression; it therefore reports the same labels as the findings (checked).
    """
    agreed = agreed_labels(cases, min_fraction)
    pool, holders = _candidates(cases)
    votes = label_votes(cases)
    voters = {label: tuple(c.case_id for c in cases if label in c.labels) for label in agreed}
    wanted = set(agreed)
    findings: list[Sentence] = []
    covered: set[str] = set()
    used: set[str] = set()

    def add(text: str, section: str, labels, template_sources: tuple[str, ...], out: list[Sentence]) -> None:
        key = sentence_key(text)
        if key in used:
            return
        used.add(key)
        sources = tuple(holders.get(key, ()))
        out.append(
            Sentence(
                text, section, sources or template_sources, _ordered(labels), "retrieved" if sources else "template"
            )
        )

    def best(section: str, label: str | None, cue: str | None = None) -> _Candidate | None:
        fits = [
            c
            for c in pool
            if c.section == section
            and sentence_key(c.text) not in used
            and (
                c.labels <= wanted and label in c.labels
                if label
                else not c.labels and cue and re.search(cue, c.text, re.IGNORECASE)
            )
        ]
        if label is None:  # the phrasing most neighbours share; rank order breaks ties
            fits.sort(key=lambda c: -len(holders[sentence_key(c.text)]))
        return fits[0] if fits else None

    for labels, _, cue in SYSTEMS:
        present = [label for label in agreed if label in labels]
        for label in present:
            if label in covered:
                continue
            found = best("findings", label)
            if found is not None:
                add(found.text, "findings", found.labels, voters[label], findings)
                covered |= found.labels
            else:
                add(LABEL_TEXT[label][0], "findings", {label}, voters[label], findings)
                covered.add(label)
        found = best("findings", None, cue) if not present and cue else None
        if found is not None:  # a system the neighbours cover: their explicit negative
            add(found.text, "findings", (), (), findings)
    for label in agreed:  # labels outside the known systems
        if label not in covered:
            add(f"{label} is observed.", "findings", {label}, voters[label], findings)
            covered.add(label)
    abnormal_cues = [cue for labels, _, cue in SYSTEMS if cue and set(labels) & wanted]
    for c in pool:  # other statements without a finding that most neighbours make (abdomen, bones, ...)
        if (
            c.section == "findings"
            and not c.labels
            and len(holders[sentence_key(c.text)]) >= min_fraction * len(cases)
            and not any(re.search(cue, c.text, re.IGNORECASE) for cue in abnormal_cues)
        ):
            add(c.text, "findings", (), (), findings)

    impression: list[Sentence] = []
    concluded: set[str] = set()
    for label in agreed:
        if label in concluded:
            continue
        found = best("impression", label)
        text, labels = (found.text, found.labels) if found else (_phrase(label), {label})
        add(text, "impression", labels, voters[label], impression)
        concluded |= set(labels)
    if not agreed:
        normal_cases = tuple(c.case_id for c in cases if not c.labels)
        normals = [c for c in pool if c.section == "impression" and not c.labels]
        found = max(normals, key=lambda c: len(holders[sentence_key(c.text)]), default=None)  # first of ties
        add(found.text if found else NORMAL_IMPRESSION, "impression", (), normal_cases, impression)
    result = Draft(
        " ".join(s.text for s in findings),
        " ".join(s.text for s in impression),
        [c.case_id for c in cases],
        agreed,
        "none (grounded composer)",
        "grounded",
        sentences=findings + impression,
    )
    left_out = {label: n for label, n in votes.items() if label not in wanted}
    if left_out:
        result.warnings.append(
            "left out (too few neighbours agree): "
            + ", ".join(f"{label} ({n}/{len(cases)})" for label, n in left_out.items())
        )
    return finish(result, cases)


def _phrase(label: str) -> str:
    return (LABEL_TEXT[label][1] if label in LABEL_TEXT else label) + "."


def _ordered(labels) -> tuple[str, ...]:
    return tuple(sorted(labels, key=lambda label: LABELS.index(label) if label in LABELS else len(LABELS)))
