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

from .checks import check_draft, complete, failed, label_votes, positive_labels, sentence_key

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
    :mod:`hsenet_search.generate.checks`; ``merge``: what the LLM merge kept, LLM mode only; ``composer``:
    the grounded composer that wrote it, grounded and LLM modes only)."""

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
    composer: str = ""

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
                text = _finished(text)
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


COMPOSERS = ("anchored", "sections")
# An impression sentence that calls the study normal (dropped when the draft reports a finding).
_NORMAL_STATEMENT = re.compile(
    r"\bnormal\b|within normal|unremarkable"
    r"|no (?:significant |acute |active )?(?:pathologic|abnormal|finding)",
    re.IGNORECASE,
)


def anchor_case(cases: Sequence[RetrievedCase]) -> RetrievedCase:
    """The report the ``anchored`` composer starts from: the nearest case with findings."""
    return next((c for c in cases if c.findings.strip()), cases[0])


def _system_of_label(label: str) -> int | None:
    return next((i for i, (labels, _, _) in enumerate(SYSTEMS) if label in labels), None)


def _system_of_text(text: str) -> int | None:
    """The first :data:`SYSTEMS` entry whose cue words ``text`` holds, or ``None``."""
    matches = (i for i, (_, _, cue) in enumerate(SYSTEMS) if cue and re.search(cue, text, re.IGNORECASE))
    return next(matches, None)


def _finished(text: str) -> str:
    return text if complete(text) else text.rstrip(" ,;:") + "."  # CT-RATE omits some final stops


class _Composer:
    """What both composers share: the neighbours' sentences, the label vote, and the sentences used so far
    (a sentence enters a draft once)."""

    def __init__(self, cases: Sequence[RetrievedCase], min_fraction: float):
        self.cases = cases
        self.agreed = agreed_labels(cases, min_fraction)
        self.wanted = set(self.agreed)
        self.pool, self.holders = _candidates(cases)
        self.voters = {label: tuple(c.case_id for c in cases if label in c.labels) for label in self.agreed}
        self.used: set[str] = set()

    def sentence(self, text: str, section: str, labels, template_sources: tuple[str, ...] = ()):
        """``text`` as a traced draft sentence, or ``None`` when the draft already holds it."""
        key = sentence_key(text)
        if key in self.used:
            return None
        self.used.add(key)
        sources = tuple(self.holders.get(key, ()))
        origin = "retrieved" if sources else "template"
        return Sentence(text, section, sources or template_sources, _ordered(labels), origin)

    def add(self, text: str, section: str, labels, template_sources: tuple[str, ...], out: list[Sentence]):
        if (made := self.sentence(text, section, labels, template_sources)) is not None:
            out.append(made)

    def best(self, section: str, label: str | None, cue: str | None = None) -> _Candidate | None:
        """For ``label``: the first unused neighbour sentence (rank order) reporting it and nothing outside
        the agreed labels; for ``label=None``: the unused sentence without a finding that matches ``cue``
        and that most neighbours hold (rank order breaks ties)."""
        fits = [
            c
            for c in self.pool
            if c.section == section
            and sentence_key(c.text) not in self.used
            and (
                c.labels <= self.wanted and label in c.labels
                if label
                else not c.labels and cue and re.search(cue, c.text, re.IGNORECASE)
            )
        ]
        if label is None:
            fits.sort(key=lambda c: -len(self.holders[sentence_key(c.text)]))
        return fits[0] if fits else None

    def finding(self, label: str) -> tuple[str, frozenset[str]]:
        """A findings sentence for an agreed ``label``: a neighbour's (:meth:`best`), else the stock one."""
        found = self.best("findings", label)
        return (found.text, found.labels) if found else (LABEL_TEXT[label][0], frozenset({label}))

    def conclude(self, impression: list[Sentence], concluded: set[str]) -> None:
        """Add an impression sentence per agreed label not yet ``concluded`` (a neighbour's, else the stock
        phrase); with no agreed label and no impression, the neighbours' most common normal impression."""
        for label in self.agreed:
            if label in concluded:
                continue
            found = self.best("impression", label)
            text, labels = (found.text, found.labels) if found else (_phrase(label), {label})
            self.add(text, "impression", labels, self.voters[label], impression)
            concluded |= set(labels)
        if not self.agreed and not impression:
            normal_cases = tuple(c.case_id for c in self.cases if not c.labels)
            normals = [c for c in self.pool if c.section == "impression" and not c.labels]
            found = max(normals, key=lambda c: len(self.holders[sentence_key(c.text)]), default=None)
            self.add(found.text if found else NORMAL_IMPRESSION, "impression", (), normal_cases, impression)


def _compose_sections(ctx: _Composer, min_fraction: float) -> tuple[list[Sentence], list[Sentence]]:
    """The ``sections`` composer's findings and impression (see :func:`draft_grounded`)."""
    findings: list[Sentence] = []
    covered: set[str] = set()
    for labels, _, cue in SYSTEMS:
        present = [label for label in ctx.agreed if label in labels]
        for label in present:
            if label not in covered:
                text, found = ctx.finding(label)
                ctx.add(text, "findings", found, ctx.voters[label], findings)
                covered |= found
        negative = ctx.best("findings", None, cue) if not present and cue else None
        if negative is not None:  # a system the neighbours cover: their explicit negative
            ctx.add(negative.text, "findings", (), (), findings)
    for label in ctx.agreed:  # labels outside the known systems
        if label not in covered:
            ctx.add(f"{label} is observed.", "findings", {label}, ctx.voters[label], findings)
            covered.add(label)
    abnormal_cues = [cue for labels, _, cue in SYSTEMS if cue and set(labels) & ctx.wanted]
    for c in ctx.pool:  # other statements without a finding that most neighbours make (abdomen, bones, ...)
        if (
            c.section == "findings"
            and not c.labels
            and len(ctx.holders[sentence_key(c.text)]) >= min_fraction * len(ctx.cases)
            and not any(re.search(cue, c.text, re.IGNORECASE) for cue in abnormal_cues)
        ):
            ctx.add(c.text, "findings", (), (), findings)
    impression: list[Sentence] = []
    ctx.conclude(impression, set())
    return findings, impression


def _compose_anchored(ctx: _Composer) -> tuple[list[Sentence], list[Sentence]]:
    """The ``anchored`` composer's findings and impression (see :func:`draft_grounded`)."""
    anchor = anchor_case(ctx.cases)
    # findings: (position, sentence); an added sentence sorts right after the anchor sentence it follows
    placed: list[tuple[tuple[int, int], Sentence]] = []
    dropped: dict[int, int] = {}  # system -> position of the first anchor sentence dropped there
    kept_systems: dict[int, int] = {}  # position -> system of the kept anchor sentence
    for i, text in enumerate(sentences(anchor.findings)):
        text, labels = _finished(text), set(positive_labels(text))
        system = _system_of_label(min(labels, key=LABELS.index)) if labels else _system_of_text(text)
        if labels - ctx.wanted:  # asserts a finding too few neighbours agree on
            if system is not None:
                dropped.setdefault(system, i)
            continue
        if (made := ctx.sentence(text, "findings", labels)) is not None:
            placed.append(((i, 0), made))
            if system is not None:
                kept_systems[i] = system
    covered = {label for _, s in placed for label in s.labels}
    missing = [label for label in ctx.agreed if label not in covered]
    contradicted = {_system_of_label(label) for label in missing} - {None}
    for position, made in list(placed):  # the anchor's negatives for a system that gets a finding go
        if not made.labels and kept_systems.get(position[0]) in contradicted:
            placed.remove((position, made))
            dropped.setdefault(kept_systems.pop(position[0]), position[0])

    def slot(system: int | None) -> tuple[int, int]:
        """Where an added sentence about ``system`` goes: in place of a dropped anchor sentence about it,
        else after the last kept anchor sentence about an earlier system (reading order), else first."""
        extra = len(placed) + 1
        if system in dropped:
            return dropped[system], extra
        before = [p for p, s in kept_systems.items() if system is not None and s <= system]
        return (max(before), extra) if before else (-1, extra)

    for label in missing:
        if label in covered:
            continue
        text, labels = ctx.finding(label) if label in LABEL_TEXT else (f"{label} is observed.", {label})
        if (made := ctx.sentence(text, "findings", labels, ctx.voters[label])) is not None:
            placed.append((slot(_system_of_label(label)), made))
            covered |= set(labels)
    for system, (labels, _, cue) in enumerate(SYSTEMS):  # normal systems the anchor no longer covers
        if cue and not set(labels) & ctx.wanted and system not in kept_systems.values():
            negative = ctx.best("findings", None, cue)
            if negative is not None and (made := ctx.sentence(negative.text, "findings", ())) is not None:
                placed.append((slot(system), made))
    findings = [s for _, s in sorted(placed, key=lambda item: item[0])]

    impression: list[Sentence] = []
    for text in sentences(anchor.impression):
        text, labels = _finished(text), set(positive_labels(text))
        if labels - ctx.wanted:
            continue
        if (
            not labels and ctx.agreed and (_NORMAL_STATEMENT.search(text) or _system_of_text(text) in contradicted)
        ):  # "no pathological finding", or a negative about a system that now has a finding
            continue
        ctx.add(text, "impression", labels, (), impression)
    ctx.conclude(impression, {label for s in impression for label in s.labels})
    return findings, impression


def draft_grounded(cases: Sequence[RetrievedCase], min_fraction: float = 0.5, composer: str = "anchored") -> Draft:
    """Grounded composer: a report assembled sentence by sentence from the neighbours' reports.

    Labels carried by at least ``min_fraction`` of the neighbours are *agreed*; the others are left out
    (listed in ``checks.label_agreement.left_out`` and a warning). Two composers:

    * ``anchored`` (default): the nearest neighbour's report (the first with findings), sentence by
      sentence: a sentence reporting a label outside the agreed ones is dropped, and so is a sentence
      without a finding about an organ system (:data:`SYSTEMS`) that gets an agreed finding the anchor
      lacks; repeated sentences go. Each agreed label the anchor lacks gets the first neighbour sentence
      (rank order) that reports it and nothing outside the agreed labels (else a template), in place of
      the dropped sentence about its system (else in reading order); a normal system the anchor no longer
      covers gets the negative sentence most neighbours use for it. The impression keeps the anchor's
      sentences that report only agreed labels (without "normal" statements when there is a finding) and
      adds, per agreed label it lacks, a neighbour impression sentence reporting it (else a stock phrase).
      A draft failing a check (:mod:`checks`) is replaced by the ``sections`` draft, with a warning.
    * ``sections``: findings in the CT-RATE reading order of :data:`SYSTEMS`: per agreed label the first
      neighbour sentence that reports it (as above); per system without agreed findings that the
      neighbours cover, the negative sentence most of them use; then every other sentence without a
      finding that at least ``min_fraction`` of the neighbours hold verbatim (upper abdomen, bones, ...),
      unless it is about a system with an agreed finding. The impression: per agreed label, a neighbour
      impression sentence reporting it (else the stock phrase), or the neighbours' most common normal
      impression.
    """
    check_cases(cases)
    if composer not in COMPOSERS:
        raise QueryError(f"unknown composer {composer!r}; expected one of {', '.join(COMPOSERS)}")
    ctx = _Composer(cases, min_fraction)
    parts = _compose_anchored(ctx) if composer == "anchored" else _compose_sections(ctx, min_fraction)
    result = _grounded_draft(ctx, *parts)
    result.composer = composer
    if composer == "anchored" and (problems := failed(result.checks)):
        result = draft_grounded(cases, min_fraction, "sections")
        result.warnings.append(f"anchored composer failed {', '.join(problems)}; used the sections composer")
    return result


def _grounded_draft(ctx: _Composer, findings: list[Sentence], impression: list[Sentence]) -> Draft:
    result = Draft(
        " ".join(s.text for s in findings),
        " ".join(s.text for s in impression),
        [c.case_id for c in ctx.cases],
        ctx.agreed,
        "none (grounded composer)",
        "grounded",
        sentences=findings + impression,
    )
    left_out = {label: n for label, n in label_votes(ctx.cases).items() if label not in ctx.wanted}
    if left_out:
        result.warnings.append(
            "left out (too few neighbours agree): "
            + ", ".join(f"{label} ({n}/{len(ctx.cases)})" for label, n in left_out.items())
        )
    return finish(result, ctx.cases)


def _phrase(label: str) -> str:
    return (LABEL_TEXT[label][1] if label in LABEL_TEXT else label) + "."


def _ordered(labels) -> tuple[str, ...]:
    return tuple(sorted(labels, key=lambda label: LABELS.index(label) if label in LABELS else len(LABELS)))
