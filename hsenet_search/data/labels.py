"""The 18 CT-RATE abnormality labels and a rule-based labeler that extracts them from report text.

The labeler splits a report into sentences and clauses (findings and impression sentences both count), finds
label mentions with a clinical vocabulary per label, and drops mentions that are

* negated: "no pleural effusion", "pericardial effusion-thickening was not observed", "free of consolidation",
  "... not detected in the current examination", "... has disappeared";
* about another organ or meaning: a thyroid nodule is not a lung nodule, subcutaneous emphysema is not
  emphysema, contrast material is not medical material, a fibroatelectatic band is a fibrotic sequela and not
  atelectasis, calcification of the aortic valve is not arterial wall calcification;
* a bare question about the finding itself ("atelectasis?").

Hedged mentions ("suspicious for", "may be compatible with", "in favour of") count as positive, as in the
radiologist labels of the CT-RATE manual set. No parameters are learned from data.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hsenet_search.atomic import atomic_open
from hsenet_search.errors import DatasetError

from .report_text import clean_section, sentences

LABELS: tuple[str, ...] = (
    "Medical material",
    "Arterial wall calcification",
    "Cardiomegaly",
    "Pericardial effusion",
    "Coronary artery wall calcification",
    "Hiatal hernia",
    "Lymphadenopathy",
    "Emphysema",
    "Atelectasis",
    "Lung nodule",
    "Lung opacity",
    "Pulmonary fibrotic sequela",
    "Pleural effusion",
    "Mosaic attenuation pattern",
    "Peribronchial thickening",
    "Consolidation",
    "Bronchiectasis",
    "Interlobular septal thickening",
)

_LABEL_VALUES = {"0": 0, "1": 1, "0.0": 0, "1.0": 1, "false": 0, "true": 1}


def parse_label(cell: str) -> int | None:
    """A label cell as 0 or 1 (``0``/``1``, ``0.0``/``1.0``, ``false``/``true``); None for anything else,
    such as a fractional value (``0.7``) or an empty cell."""
    return _LABEL_VALUES.get(str(cell).strip().lower())


def _rx(*alternatives: str) -> re.Pattern[str]:
    """Compile word-bounded alternatives (case-insensitive; the text is lower-cased anyway)."""
    return re.compile(r"\b(?:" + "|".join(alternatives) + r")", re.IGNORECASE)


@dataclass(frozen=True)
class Cue:
    """One way a label is mentioned: a finding phrase, a context the clause must also have (optional) and a
    veto that cancels the phrase in its clause (another organ or another meaning, optional)."""

    mention: re.Pattern[str]
    context: re.Pattern[str] | None = None
    veto: re.Pattern[str] | None = None


def _cue(*mentions: str, context: Sequence[str] = (), veto: Sequence[str] = ()) -> Cue:
    return Cue(_rx(*mentions), _rx(*context) if context else None, _rx(*veto) if veto else None)


@dataclass(frozen=True)
class LabelRule:
    """The cues of one label (any positive, non-negated cue makes the label positive)."""

    label: str
    cues: tuple[Cue, ...]


_LUNG = (
    r"lung",
    r"pulmon",
    r"lobe",
    r"lobar",
    r"segment",
    r"lingul",
    r"parenchym",
    r"subpleural",
    r"apical",
    r"apex",
    r"bibasal",
    r"basal",
    r"fissur",
    r"hemithora",
)
_OTHER_ORGAN = (
    r"thyroid",
    r"liver",
    r"hepat",
    r"adrenal",
    r"kidney",
    r"renal",
    r"perirenal",
    r"perinephric",
    r"splen",
    r"spleen",
    r"pancrea",
    r"breast",
    r"mammar",
    r"axilla",
    r"bone",
    r"vertebra",
    r"subcutaneous",
    r"skin",
    r"gallbladder",
    r"stomach",
    r"gastric",
    r"colon",
    r"bowel",
    r"uter",
    r"ovar",
    r"prostat",
    r"peritone",
    r"omentum",
    r"omental",
    r"retroperitone",
    r"mesenter",
    r"abdominal wall",
    r"muscle",
    r"lymph node",
)
_CALCIFIC = (r"calci\w*", r"atheroma\w*", r"atherosclero\w*", r"atheromatous", r"plaques?")
# Non-coronary arteries (calcification of the aortic valve is not arterial wall calcification).
_VESSEL = (
    r"aort(?!ic valve)\w*",
    r"arcus",
    r"(?<!coronary )(?<!descending )(?<!circumflex )arter(?:y|ies|ial)",
    r"carotid",
    r"subclavian",
    r"brachiocephalic",
    r"innominate",
    r"(?<!coronary )vascular (?:structure|wall|system)\w*",
    r"(?<!coronary )vessels?",
)
_CORONARY = (r"coronar\w*", r"lad\b", r"rca\b", r"circumflex", r"descending arter")

RULES: tuple[LabelRule, ...] = (
    LabelRule(
        "Medical material",
        (
            _cue(
                r"catheters?",
                r"stents?\b",
                r"stenting",
                r"pacemakers?",
                r"pace maker",
                r"icd\b",
                r"defibrillator",
                r"electrodes?",
                r"(?:suture|surgical|metallic|metal|clip|prosthe\w*|postoperative|embolization|"
                r"pacemaker|stent|foreign|peg|coil) materials?",
                r"metallic (?:sutures?|clips?|densit\w*|wires?|artifacts?|implants?|screws?|plates?)",
                r"sternal (?:sutures?|wires?|cerclages?)",
                r"sternotomy (?:sutures?|wires?)",
                r"cerclage",
                r"clips?\b",
                r"port\b",
                r"prosthes[ie]s",
                r"prosthetic",
                r"valve replacement",
                r"(?:tracheostomy|tracheal) (?:cannula|tube)",
                r"cannula",
                r"(?:endotracheal|nasogastric|chest|thoracic|drainage|feeding|gastrostomy|jejunostomy|thoracostomy|"
                r"intubation) tubes?",
                r"(?:chest|surgical|thoracic|pleural|percutaneous|mediastinal|abdominal) drains?\b",
                r"peg\b",
                r"grafts?\b",
                r"evar\b",
                r"tevar\b",
                r"screws?\b",
                r"fixation (?:material|device|plate)s?",
                r"coils?\b",
                r"occluder",
                r"vena cava filter",
                r"filter in the (?:inferior )?vena cava",
                veto=(r"contrast material",),
            ),
        ),
    ),
    LabelRule(
        "Arterial wall calcification",
        (
            _cue(
                *_CALCIFIC,
                context=_VESSEL,
                veto=(
                    r"calcified (?:lymph|nodul|granulom)",
                    r"nodules? (?:with|containing) calcification",
                    r"pleural plaque",
                ),
            ),
        ),
    ),
    LabelRule(
        "Cardiomegaly",
        (
            _cue(
                r"cardiomegal\w*",
                r"heart (?:size|sizes|dimensions?|contours? and size)s? (?:is |are |was |were |has |have )?(?:been )?"
                r"(?:slightly |mildly |markedly |significantly |minimally )?(?:increased|enlarged|larger)",
                r"heart (?:is |was )?(?:slightly |mildly |markedly )?(?:enlarged|larger than normal)",
                r"enlarged heart",
                r"enlargement of the heart",
                r"increase[sd]? in (?:the )?heart size",
                r"(?:cardiothoracic (?:index|ratio)|ctr) (?:is |was |has )?(?:slightly |mildly )?increased",
                r"increase in (?:the )?(?:cardiothoracic (?:index|ratio)|ctr)",
                r"(?:cardiothoracic (?:index|ratio)|ctr) increase",
            ),
        ),
    ),
    LabelRule(
        "Pericardial effusion",
        (
            _cue(
                r"pericardial (?:\w+ )?(?:effusion|fluid)",
                r"pericardial thickening-effusion",
                r"hydropericard\w*",
                r"(?:effusion|fluid)[\w ,-]{0,90}(?:pericardial (?:space|area|cavity|recess|sac)|pericardium)",
                r"pericardial (?:and|or|,) (?:\w+ )?pleural (?:\w+ )?effusion",
                r"pericardial thickening-(?:\w+ )?effusion",
            ),
        ),
    ),
    LabelRule("Coronary artery wall calcification", (_cue(*_CALCIFIC, context=_CORONARY),)),
    LabelRule(
        "Hiatal hernia",
        (
            _cue(
                r"hiat\w* hernia",
                r"hernia\w*[\w ,-]{0,40}hiatus",
                r"hiatal",
                r"sliding type hernia",
                r"para-?esophageal hernia",
                r"(?:stomach|gastric)[\w ,-]{0,30}herniat\w*",
                r"herniat\w* of the stomach",
            ),
        ),
    ),
    LabelRule(
        "Lymphadenopathy",
        (
            _cue(
                r"lymph ?nod\w*(?! stations?)",
                r"lymphadenopath\w*",
                r"adenopath\w*",
                r"lap\b",
                veto=(
                    r"intramammar\w* lymph",
                    r"subpleural lymph",
                    r"intra-?(?:pulmonary|parenchymal) lymph",
                    r"fissur\w* lymph",
                    r"lymph node-nodule",
                ),
            ),
        ),
    ),
    LabelRule(
        "Emphysema",
        (
            _cue(
                r"emphysem\w*",
                r"bullae?\b",
                r"bullous",
                r"blebs?\b",
                veto=(
                    r"subcutaneous emphysema",
                    r"emphysema in the subcutaneous",
                    r"mediastinal emphysema",
                    r"soft tissue emphysema",
                    r"(?:fatty|fat) (?:planes|tissue)",
                ),
            ),
        ),
    ),
    LabelRule(
        "Atelectasis",
        (
            _cue(
                r"(?<!fibro)(?<!fibro )(?<!fibro-)atelecta\w*",
                r"collapsed? (?:lung|lobe)",
                r"(?:lung|lobe|lobar) collapse",
            ),
        ),
    ),
    LabelRule(
        "Lung nodule",
        (
            _cue(
                r"(?:micro)?nodules?\b",
                r"(?:micro)?nodular (?:lesion|formation|structure|appearance|opacit\w*)s?",
                r"(?:lung|pulmonary|parenchymal) mass(?:es)?",
                veto=(*_OTHER_ORGAN, r"trachea", r"mediastin\w*", r"in the pleura\b"),
            ),
        ),
    ),
    LabelRule(
        "Lung opacity",
        (
            _cue(r"ground[ -]glass\w*", r"frosted glass", veto=(r"ground[ -]glass (?:density )?nodul",)),
            _cue(r"opacit\w*", veto=_OTHER_ORGAN),
            _cue(
                r"(?:density|densities) increases?",
                r"increased densit\w*",
                r"increases? in (?:\w+ )?density",
                r"(?:dependent|depandant|subpleural|parenchymal|patchy|nodular|alveolar) densit\w*",
                context=_LUNG,
                veto=(
                    *_OTHER_ORGAN,
                    r"sequela",
                    r"fibrotic",
                    r"pleuroparenchymal",
                    r"pleural parenchymal",
                    r"atelecta",
                    r"consolidat",
                    r"linear",
                ),
            ),
        ),
    ),
    LabelRule(
        "Pulmonary fibrotic sequela",
        (
            _cue(
                r"fibro\w*",
                r"sequela\w*",
                r"parenchymal bands?",
                r"scar(?:s|ring)?\b",
                r"pleuroparenchymal",
                r"pleural parenchymal",
                r"traction bronchiectasis",
                r"(?:linear|band) (?:density|densities|opacit\w*)",
                context=(*_LUNG, r"pleuroparenchymal"),
                veto=(*_OTHER_ORGAN, r"rib", r"fibroadenom\w*", r"fibrous dysplasia"),
            ),
        ),
    ),
    LabelRule(
        "Pleural effusion",
        (
            _cue(
                r"pleural (?:\w+ )?effusion",
                r"pleural (?:effusion|thickening)-(?:effusion|thickening)",
                r"pleural (?:and|or|,) pericardial (?:\w+ )?(?:effusion|fluid)",
                r"pleural fluid",
                r"hydro(?:pneumo|pnomo)?thora\w*",
                r"empyema",
                r"(?:effusion|fluid)[\w ,-]{0,60}pleural (?:space|cavit|lea[fv]|area|sinus)\w*",
                r"(?:effusion|fluid) in (?:both|the (?:right|left)) hemithora\w*",
                veto=(r"joint effusion",),
            ),
            _cue(r"effusion\w*", veto=(r"pericard", r"joint", *_OTHER_ORGAN)),
        ),
    ),
    LabelRule("Mosaic attenuation pattern", (_cue(r"mosaic\w*"),)),
    LabelRule(
        "Peribronchial thickening",
        (
            _cue(
                r"peribronch\w*(?: \w+){0,3} (?:thicken\w*|thickness increases?|increases? in thickness|cuffing)",
                r"(?:thicken\w*|increases? in thickness|thickness increases?|calibration increases?)(?: \w+){0,4} "
                r"peribronch\w*",
            ),
        ),
    ),
    LabelRule("Consolidation", (_cue(r"consolidat\w*"),)),
    LabelRule("Bronchiectasis", (_cue(r"bronchiecta\w*", r"bronchiolecta\w*"),)),
    LabelRule(
        "Interlobular septal thickening",
        (
            _cue(
                r"(?:(?:interlobular|interlobar|intralobular) sept\w*|(?<!ventricular )(?<!atrial )septal|interseptal)"
                r"[\w -]{0,20}?(?:thicken\w*|thickness increases?|increases? in thickness)",
                r"(?:thicken\w*|thickness increases?|increases? in thickness)(?: \w+){0,4} "
                r"(?:interlobular |interlobar )?sept(?:a|um|al)\b",
                r"increase[sd]?(?: in)? (?:interlobular |interlobar )?septal thickness",
                r"interlobular sept\w* (?:clarification|prominence)",
                r"prominen\w*(?: \w+){0,3} interlobular sept",
                r"septal lines",
                r"kerley",
            ),
        ),
    ),
)
assert tuple(rule.label for rule in RULES) == LABELS

# ---------------------------------------------------------------------------------------------- negation

# A cue before the mention negates it ("no ...", "without ...", "free of ...").
_PRE_NEG = _rx(
    r"no(?! (?:significant |obvious |marked )?(?:change|difference|progression|regression|increase in (?:size|number)"
    r"|decrease))\b",
    r"without",
    r"free of",
    r"absence of",
    r"negative for",
    r"neither",
    r"nor\b",
    r"rule out",
    r"ruled out",
    r"there is not",
    r"there are not",
    r"not (?:any|seen|observed|detected)\b",
)
# A cue after the mention negates it ("... was not observed", "... not detected", "... is absent").
_POST_NEG = _rx(
    r"(?:is|are|was|were|has|have|had|could|can|did|does|do)?\s*(?:been\s+)?not\s+(?:be\s+)?(?:been\s+)?"
    r"(?:observed|detected|seen|noted|present|identified|found|visuali[sz]ed|determined|evident|demonstrated|"
    r"monitored|apparent|recogni[sz]ed|encountered|shown|described|reported|visible|distinguished|followed|"
    r"(?:pathologically )?enlarged|dilated|thickened)",
    r"(?:is|are|was|were|or) absent",
    r"(?:has|have) (?:completely )?(?:disappeared|resolved)",
    r"(?:has been|have been|was|were) removed",
    r"(?:is|are|was|were) not (?:in|of) pathological",
    r"(?:is|are|was|were) excluded",
)
# A clause saying that a finding of an earlier examination is gone negates every mention in it.
_RESOLVED = _rx(
    r"not (?:been )?(?:observed|detected|seen|present|visuali[sz]ed) (?:in|on) (?:the |this )?(?:current|present|"
    r"recent|last|control|this|follow)",
    r"disappeared",
    r"(?:completely|fully|totally) (?:regressed|resolved)",
    r"(?:complete|full|total) (?:regression|resolution)",
    r"no longer",
)
# Words that close the forward scope of a pre-negation cue (a new verb phrase or clause starts).
_PRE_STOP = re.compile(
    r"\b(?:is|are|was|were|has|have|there|but|however|although|except|apart from|other than|"
    r"whereas|while)\b"
)
# Words that close the backward scope of a post-negation cue.
_POST_STOP = re.compile(
    r"^\W*(?:\w+\W+){0,2}?,|\b(?:but|with|is|are|was|were|observed|detected|seen|noted|present|"
    r"increased|enlarged|decreased)\b"
)

_PLURAL = re.compile(r"\s*(?:were|are|have)\b")

_HEDGE = _rx(
    r"suspicious",
    r"suspected",
    r"possib\w*",
    r"probab\w*",
    r"may\b",
    r"might",
    r"could be",
    r"compatible with",
    r"consistent with",
    r"in favou?r of",
    r"differential",
    r"cannot be excluded",
    r"questionable",
    r"equivocal",
)

# The finding itself is questioned ("... atelectasis?"): too uncertain to count.
_QUESTIONED = re.compile(r"[\w-]*[\s)]*\?")

# ---------------------------------------------------------------------------------------------- text units

_CLAUSE_SPLIT = re.compile(r"[;:•·]|(?<=\?)|\s(?:but|however|whereas|although|apart from (?:this|these))\s")


def split_sentences(text: str) -> list[str]:
    """Split a report into sentences (quotes separate the findings and impression sections in CT-RATE)."""
    return [s.strip(" .") for s in sentences(text) if s.strip(" .")]


def _clauses(sentence: str) -> list[str]:
    return [c.strip() for c in _CLAUSE_SPLIT.split(sentence) if c.strip()]


def _negated(clause: str, start: int, end: int) -> bool:
    """True if the mention at ``clause[start:end]`` lies in the scope of a negation cue."""
    if _RESOLVED.search(clause):
        return True
    for cue in _PRE_NEG.finditer(clause, 0, start):
        between = clause[cue.end() : start]
        if not _PRE_STOP.search(between) and len(between.split()) <= 12:
            return True
    cue = _POST_NEG.search(clause, end)
    if cue is not None:
        between = clause[end : cue.start()]
        # "A and B were not seen" negates both; "A and B was not seen" only B.
        coordinated = re.search(r"\band\b", between) and not _PLURAL.match(cue.group(0))
        if not coordinated and not _POST_STOP.search(between) and len(between.split()) <= 25:
            return True
    return False


@dataclass(frozen=True)
class LabelEvidence:
    """One label mention: where it is, and whether it counted."""

    label: str
    sentence: str
    mention: str
    negated: bool
    hedged: bool
    questioned: bool

    @property
    def positive(self) -> bool:
        """Counts for the label: not negated and not itself a bare question ("atelectasis?")."""
        return not self.negated and not self.questioned


def explain_report(text: str) -> list[LabelEvidence]:
    """All label mentions found in ``text`` with their negation / hedge status (for debugging, CLI --explain)."""
    evidence: list[LabelEvidence] = []
    for sentence in split_sentences(text.lower()):
        for clause in _clauses(sentence):
            hedged = "?" in clause or bool(_HEDGE.search(clause))
            for rule in RULES:
                covered: list[tuple[int, int]] = []  # spans already reported for this label in this clause
                for cue in rule.cues:
                    matches = [
                        m
                        for m in cue.mention.finditer(clause)
                        if not any(a <= m.start() and m.end() <= b for a, b in covered)
                    ]
                    if not matches or (cue.veto is not None and cue.veto.search(clause)):
                        continue
                    if cue.context is not None and not cue.context.search(clause):
                        continue
                    for m in matches:
                        covered.append(m.span())
                        evidence.append(
                            LabelEvidence(
                                label=rule.label,
                                sentence=sentence,
                                mention=m.group(0),
                                negated=_negated(clause, m.start(), m.end()),
                                hedged=hedged,
                                questioned=bool(_QUESTIONED.match(clause, m.end())),
                            )
                        )
    return evidence


def positive_clauses(text: str) -> list[str]:
    """The clauses of ``text`` (original case) that carry at least one positive label mention."""
    return [
        clause
        for sentence in split_sentences(text)
        for clause in _clauses(sentence)
        if any(e.positive for e in explain_report(clause))
    ]


def label_report(text: str | None) -> dict[str, int]:
    """The 18 labels of one report as ``{label: 0/1}`` (an empty or missing report is all zeros)."""
    positive = {e.label for e in explain_report(text if isinstance(text, str) else "") if e.positive}
    return {label: int(label in positive) for label in LABELS}


def extract_labels(texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
    """Label many reports: an ``(N, 18)`` int8 matrix of 0/1 in :data:`LABELS` order.

    ``progress=True`` shows a progress bar (rich) on stderr.
    """
    rows: Iterable[str] = texts
    if progress:
        from rich.console import Console
        from rich.progress import track

        rows = track(texts, description="labelling reports", total=len(texts), console=Console(stderr=True))
    out = np.zeros((len(texts), len(LABELS)), dtype=np.int8)
    for i, text in enumerate(rows):
        out[i] = list(label_report(text).values())
    return out


def cv_folds(n: int, k: int = 5, seed: int = 0) -> np.ndarray:
    """Deterministic fold id (0..k-1) per row: a seeded permutation dealt round-robin into ``k`` folds."""
    folds = np.empty(n, dtype=np.int64)
    folds[np.random.default_rng(seed).permutation(n)] = np.arange(n) % k
    return folds


# ---------------------------------------------------------------------------------------------- CSV I/O

_ID_COLUMNS = ("AccessionNo", "VolumeName")


def read_reports_csv(path: str | Path) -> tuple[str, list[str], list[str]]:
    """Read a reports CSV; returns ``(id column name, ids, texts)`` in file order.

    Accepts a ``report_text`` column or ``Findings_EN`` / ``Impressions_EN`` (concatenated; "Not given." is
    empty) and an ``AccessionNo`` or ``VolumeName`` id column.
    """
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = list(reader.fieldnames or [])
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"cannot read reports CSV ({exc.__class__.__name__}: {exc})", path) from exc
    id_column = next((c for c in _ID_COLUMNS if c in columns), None)
    if id_column is None:
        raise DatasetError(f"no id column: expected one of {', '.join(_ID_COLUMNS)}; found {columns}", path)
    if "report_text" in columns:
        texts = [clean_section(r["report_text"]) for r in rows]
    elif "Findings_EN" in columns or "Impressions_EN" in columns:
        texts = []
        for r in rows:
            parts = [clean_section(r.get("Findings_EN")), clean_section(r.get("Impressions_EN"))]
            texts.append(' " '.join(p for p in parts if p))
    else:
        raise DatasetError(
            f"no report column: expected report_text or Findings_EN/Impressions_EN; found {columns}", path
        )
    return id_column, [r[id_column] or "" for r in rows], texts


def write_labels_csv(path: str | Path, id_column: str, ids: Sequence[str], labels: np.ndarray) -> None:
    """Write ``id_column`` + the 18 label columns (rows in the given order) atomically."""
    path = Path(path)
    labels = np.asarray(labels)
    if labels.shape != (len(ids), len(LABELS)):
        raise DatasetError(f"labels shape {labels.shape} does not match {len(ids)} ids x {len(LABELS)} labels", path)
    with atomic_open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([id_column, *LABELS])
        writer.writerows([i, *map(int, row)] for i, row in zip(ids, labels, strict=True))


def prevalence(labels: np.ndarray) -> dict[str, float]:
    """Fraction of positive rows per label."""
    labels = np.asarray(labels)
    if len(labels) == 0:
        return {label: 0.0 for label in LABELS}
    return {label: float(v) for label, v in zip(LABELS, labels.mean(axis=0), strict=True)}
