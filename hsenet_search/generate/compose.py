"""Retrieval-only report drafting: the nearest case's report, and the label-vote composer.

Retrieved cases arrive in rank order (most similar first), as the search engine returns them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from hsenet_search.data.report_text import sentences
from hsenet_search.errors import QueryError

NORMAL_IMPRESSION = "Thoracic CT examination within normal limits."

# label -> (findings sentence used when no neighbour sentence fits, impression phrase)
LABEL_TEXT: dict[str, tuple[str, str]] = {
    "Medical material": ("Medical material (catheter, surgical material) is observed in the study area.",
                         "Medical material (catheter, surgical material)"),
    "Arterial wall calcification": ("Atherosclerotic calcifications are observed in the wall of the thoracic aorta.",
                                    "Atherosclerotic changes in the thoracic aorta"),
    "Cardiomegaly": ("The heart size is increased (cardiomegaly).", "Cardiomegaly"),
    "Pericardial effusion": ("Pericardial effusion is observed.", "Pericardial effusion"),
    "Coronary artery wall calcification": ("Calcified atherosclerotic plaques are observed in the coronary arteries.",
                                           "Coronary artery calcifications"),
    "Hiatal hernia": ("A hiatal hernia is observed.", "Hiatal hernia"),
    "Lymphadenopathy": ("Lymph nodes of pathological size are observed in the mediastinum.",
                        "Mediastinal lymphadenopathy"),
    "Emphysema": ("Emphysematous changes are observed in both lungs.", "Emphysema in both lungs"),
    "Atelectasis": ("Atelectatic changes are observed in both lungs.", "Atelectasis"),
    "Lung nodule": ("Nodules are observed in the lung parenchyma.", "Lung nodules"),
    "Lung opacity": ("Ground-glass opacities are observed in the lung parenchyma.", "Lung opacities"),
    "Pulmonary fibrotic sequela": ("Fibrotic sequela changes are observed in the lung parenchyma.",
                                   "Pulmonary fibrotic sequelae"),
    "Pleural effusion": ("Pleural effusion is observed.", "Pleural effusion"),
    "Mosaic attenuation pattern": ("A mosaic attenuation pattern is observed in both lungs.",
                                   "Mosaic attenuation pattern"),
    "Peribronchial thickening": ("Peribronchial thickening is observed.", "Peribronchial thickening"),
    "Consolidation": ("Consolidation areas are observed in the lung parenchyma.", "Consolidation"),
    "Bronchiectasis": ("Bronchiectatic changes are observed in both lungs.", "Bronchiectasis"),
    "Interlobular septal thickening": ("Interlobular septal thickening is observed.",
                                       "Interlobular septal thickening"),
}

_LUNG_LABELS = ("Emphysema", "Atelectasis", "Lung nodule", "Lung opacity", "Pulmonary fibrotic sequela",
                "Mosaic attenuation pattern", "Peribronchial thickening", "Consolidation", "Bronchiectasis",
                "Interlobular septal thickening")

# Body systems in CT-RATE reading order: (labels reported there, CT-RATE negative statement or None).
SYSTEMS: tuple[tuple[tuple[str, ...], str | None], ...] = (
    (("Medical material",), None),
    ((), "Trachea and both main bronchi are open."),
    (("Cardiomegaly", "Arterial wall calcification", "Coronary artery wall calcification"),
     "Mediastinal main vascular structures, heart contour, size are normal."),
    (("Pericardial effusion",), "Pericardial effusion-thickening was not observed."),
    (("Hiatal hernia",), "Thoracic esophagus calibration was normal and no significant tumoral wall thickening "
                         "was detected."),
    (("Lymphadenopathy",), "No enlarged lymph nodes in prevascular, pre-paratracheal, subcarinal or bilateral "
                           "hilar-axillary pathological dimensions were detected."),
    (_LUNG_LABELS, "When examined in the lung parenchyma window; aeration of both lungs is normal and no nodular "
                   "or infiltrative lesion is detected in the lung parenchyma."),
    (("Pleural effusion",), "Pleural effusion-thickening was not detected."),
)

@dataclass(frozen=True)
class RetrievedCase:
    """One retrieved neighbour: its id, similarity score, report sections and positive label names."""

    case_id: str
    score: float
    findings: str
    impression: str
    labels: tuple[str, ...] = ()


@dataclass
class Draft:
    """A drafted report and what grounded it (``labels``: the labels the neighbours agree on)."""

    findings: str
    impression: str
    retrieved: list[str]
    labels: list[str]
    llm: str
    mode: str
    warnings: list[str] = field(default_factory=list)

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
    result = Draft(nearest.findings.strip(), nearest.impression.strip(), [c.case_id for c in cases],
                   agreed_labels(cases), "none (nearest report)", "nearest")
    if not result.findings:
        vote = draft_vote(cases)
        result.findings = vote.findings
        result.impression = result.impression or vote.impression
        result.warnings.append(f"nearest case {nearest.case_id} has no findings; used the label-vote findings")
    return result


def _sentence_labels():
    """``sentence -> set of positive labels`` through the report labeler, or None when it is unavailable."""
    try:
        from hsenet_search.data.labels import label_report
    except ImportError:
        return None
    return lambda text: {label for label, value in label_report(text).items() if value}


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
    warnings = []
    labels_of = _sentence_labels() if agreed else None
    picked = _pick_sentences(cases, agreed, labels_of) if labels_of is not None else {}
    if agreed and labels_of is None:
        warnings.append("report labeler unavailable; used template finding sentences")
    findings: list[str] = []
    placed: set[str] = set()

    def add(label: str) -> None:
        sentence = picked.get(label) or LABEL_TEXT.get(label, (f"{label} is observed.", ""))[0]
        if sentence not in findings:
            findings.append(sentence)
        placed.add(label)

    for labels, negative in SYSTEMS:
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
    return Draft(" ".join(findings), impression, [c.case_id for c in cases], agreed, "none (label vote)", "vote",
                 warnings)
