"""CT-RATE-style report text for a planned scan: a systematic findings walk with explicit negatives,
attribute-bearing descriptions ("series S image I" cites the 1-based axial slice), and an impression."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .abnormalities import Finding

NORMAL_IMPRESSION = "Thoracic CT examination within normal limits."


class _Writer:
    """Picks phrasings with the scan's random generator."""

    def __init__(self, rng: np.random.Generator, series: int):
        self.rng = rng
        self.series = series
        self.ref_style = int(rng.integers(3))

    def pick(self, options: Sequence[str], **kw) -> str:
        return options[int(self.rng.integers(len(options)))].format(**kw)

    def ref(self, f: Finding) -> str:
        if f.slice_index is None:
            return ""
        image = f.slice_index + 1
        return [
            f" (series {self.series} image {image})",
            f" (series {self.series}, image {image})",
            f" in series {self.series} image {image}",
        ][self.ref_style]


def _lung_where(f: Finding, w: _Writer, with_segment: bool = True) -> str:
    lobe = "upper lobe" if f.site == "upper" else f"{f.site} lobe"
    seg = f.params.get("segment") if with_segment else None
    if seg and "lingular" in seg:
        return w.pick(
            ["the {seg} segment of the left lung upper lobe", "the left lung upper lobe {seg} segment"], seg=seg
        )
    if seg:
        return w.pick(
            ["the {seg} segment of the {side} lung {lobe}", "the {side} lung {lobe} {seg} segment"],
            seg=seg,
            side=f.side,
            lobe=lobe,
        )
    return f"the {f.side} lung {lobe}"


def _zone_text(f: Finding) -> str:
    zone, side = f.site, f.side
    if side == "bilateral":
        return {
            "lower lobes": "the lower lobes of both lungs",
            "lower and middle lobes": "the middle lobe, lingula and lower lobes of both lungs",
            "upper lobes": "the upper lobes of both lungs",
            "both lungs diffusely": "both lungs diffusely",
        }[zone]
    if zone == "both lungs diffusely":
        return f"the {side} lung diffusely"
    if zone == "lower and middle lobes":
        return f"the {side} lung {'middle' if side == 'right' else 'lingular segments'} and lower lobe"
    return f"the {side} lung {zone[:-1]}"


def _join(items: Sequence[str]) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _nodule_sentence(f: Finding, w: _Writer) -> str:
    kind = {
        "solid": "solid",
        "ground-glass": "ground-glass density",
        "part-solid": "part-solid",
        "calcified": "calcified",
    }[f.kind]
    size = f"{f.size_mm:.0f} mm"
    adjective = "millimetric " if f.size_mm <= 4 else ""
    return w.pick(
        [
            "A {adj}{kind} nodule measuring {size} is observed in {where}{ref}.",
            "In {where}, there is a {adj}{kind} nodule {size} in diameter{ref}.",
            "A {size} {kind} nodule is seen in {where}{ref}.",
        ],
        adj=adjective,
        kind=kind,
        size=size,
        where=_lung_where(f, w),
        ref=w.ref(f),
    )


def _lung_sentences(fs: list[Finding], w: _Writer) -> list[str]:
    """Parenchymal findings, one group of sentences per label."""
    label = fs[0].label
    f = fs[0]
    if label == "Emphysema":
        sev = f.params["severity"]
        where = "both lungs" if f.side == "bilateral" else f"the {f.side} lung"
        out = [
            w.pick(
                [
                    "{Sev} {kind} emphysematous changes are observed in {where}, predominantly in the upper lobes.",
                    "There are {kind} emphysema areas in {where}, more prominent in the upper zones ({sev}).",
                    "{Sev} {kind} emphysema is present in the upper lobes of {where}.",
                ],
                Sev=sev.capitalize(),
                sev=sev,
                kind=f.kind,
                where=where,
            )
        ]
        if f.params["bullae"]:
            out.append(
                w.pick(
                    [
                        "A subpleural bulla measuring {size:.0f} mm is noted at the apex of the {side} lung{ref}.",
                        "There is an apical subpleural bulla of {size:.0f} mm in the {side} lung{ref}.",
                    ],
                    size=f.size_mm,
                    side=f.params["bulla_side"],
                    ref=w.ref(f),
                )
            )
        return out
    if label == "Lung nodule":
        return [_nodule_sentence(x, w) for x in fs]
    if label == "Lung opacity":
        return [
            w.pick(
                [
                    "Ground-glass opacity measuring about {size:.0f} mm is observed in {where}{ref}.",
                    "There is a patchy ground-glass density increase in {where}, approximately {size:.0f} mm"
                    " in size{ref}.",
                    "An area of ground-glass opacity ({size:.0f} mm) is seen in {where}{ref}.",
                ],
                size=x.size_mm,
                where=_lung_where(x, w),
                ref=w.ref(x),
            )
            for x in fs
        ]
    if label == "Consolidation":
        return [
            w.pick(
                [
                    "An area of consolidation with air bronchograms, measuring {size:.0f} mm, is observed in"
                    " {where}{ref}.",
                    "There is consolidation containing air bronchograms in {where}, about {size:.0f} mm in size{ref}.",
                    "Consolidation of {size:.0f} mm with air bronchogram is seen in {where}{ref}.",
                ],
                size=x.size_mm,
                where=_lung_where(x, w),
                ref=w.ref(x),
            )
            for x in fs
        ]
    if label == "Atelectasis":
        out = []
        for x in fs:
            if x.kind == "compressive":
                out.append(
                    w.pick(
                        [
                            "Compressive atelectasis is observed in the dependent part of the {side} lung"
                            " lower lobe{ref}.",
                            "Passive atelectasis is seen in the posterobasal {side} lung lower lobe{ref}.",
                        ],
                        side=x.side,
                        ref=w.ref(x),
                    )
                )
            else:
                out.append(
                    w.pick(
                        [
                            "Linear atelectasis is observed in {where}{ref}.",
                            "There is a band of subsegmental atelectasis in {where}{ref}.",
                            "Subsegmental linear atelectasis is seen in {where}{ref}.",
                        ],
                        where=_lung_where(x, w),
                        ref=w.ref(x),
                    )
                )
        return out
    if label == "Pulmonary fibrotic sequela":
        return [
            w.pick(
                [
                    "Pleuroparenchymal fibrotic sequela bands are observed in {where}{ref}.",
                    "Linear fibrotic sequelae extending to the pleura are seen in {where}{ref}.",
                    "There are fibrotic sequela densities in {where}{ref}.",
                ],
                where=_lung_where(x, w),
                ref=w.ref(x),
            )
            for x in fs
        ]
    zone = _zone_text(f)
    if label == "Mosaic attenuation pattern":
        return [
            w.pick(
                [
                    "A mosaic attenuation pattern is observed in {zone}.",
                    "Mosaic attenuation with regional density differences is present in {zone}"
                    " (small airway disease?).",
                    "There is a mosaic attenuation pattern in {zone}.",
                ],
                zone=zone,
            )
        ]
    if label == "Peribronchial thickening":
        return [
            w.pick(
                [
                    "Peribronchial thickening is observed in {zone}.",
                    "The bronchial walls are thickened (peribronchial thickening) in {zone}.",
                    "There is peribronchial wall thickening in {zone}.",
                ],
                zone=zone,
            )
        ]
    if label == "Bronchiectasis":
        return [
            w.pick(
                [
                    "{Kind} bronchiectasis is observed in {zone}; the dilated bronchi are wider than the"
                    " accompanying arteries.",
                    "There are {kind} bronchiectatic changes in {zone}.",
                    "{Kind} bronchiectasis with bronchial wall thickening is present in {zone}.",
                ],
                Kind=f.kind.capitalize(),
                kind=f.kind,
                zone=zone,
            )
        ]
    return [
        w.pick(
            [
                "Interlobular septal thickening is observed in {zone}, most prominent subpleurally.",
                "Smooth interlobular septal thickenings are present in {zone}.",
                "There is interlobular septal thickening in the subpleural areas of {zone}.",
            ],
            zone=zone,
        )
    ]


_LUNG_LABELS = (
    "Emphysema",
    "Lung nodule",
    "Lung opacity",
    "Consolidation",
    "Atelectasis",
    "Pulmonary fibrotic sequela",
    "Mosaic attenuation pattern",
    "Peribronchial thickening",
    "Bronchiectasis",
    "Interlobular septal thickening",
)


def _material_sentence(f: Finding, w: _Writer) -> str:
    if f.kind == "sternotomy wires":
        return w.pick(
            [
                "Sternotomy wires are observed in the sternum secondary to previous surgery.",
                "Median sternotomy wires are present.",
            ]
        )
    if f.kind == "central venous catheter":
        return w.pick(
            [
                "A central venous catheter extending from the right internal jugular vein to the superior"
                " vena cava is observed.",
                "There is a right jugular central venous catheter with its tip in the superior vena cava.",
            ]
        )
    if f.kind == "port catheter":
        return w.pick(
            [
                "A port catheter is observed in the {side} anterior chest wall{ref}; the catheter extends"
                " to the superior vena cava-right atrium junction.",
                "There is a {side}-sided port catheter{ref} whose tip ends at the cavoatrial junction.",
            ],
            side=f.side,
            ref=w.ref(f),
        )
    return w.pick(
        [
            "A cardiac pacemaker generator is observed in the {side} infraclavicular subcutaneous tissue{ref},"
            " with its lead terminating in the right ventricle.",
            "There is a pacemaker in the {side} hemithorax anterior wall{ref}; its electrode extends through"
            " the superior vena cava into the right ventricle.",
        ],
        side=f.side,
        ref=w.ref(f),
    )


def compose_findings(findings: Sequence[Finding], rng: np.random.Generator, series: int) -> str:
    """The Findings_EN text."""
    w = _Writer(rng, series)
    by: dict[str, list[Finding]] = {}
    for f in findings:
        by.setdefault(f.label, []).append(f)
    has = by.__contains__
    out: list[str] = []
    out.append(
        w.pick(
            [
                "Trachea and both main bronchi are open.",
                "Trachea, both main bronchi are patent.",
                "The trachea and both main bronchi are in the midline and their lumens are open.",
                "No obstructive pathology was detected in the lumen of the trachea and main bronchi.",
            ]
        )
    )
    if has("Medical material"):
        out.extend(_material_sentence(f, w) for f in by["Medical material"])
    if has("Cardiomegaly"):
        f = by["Cardiomegaly"][0]
        out.append(
            w.pick(
                [
                    "The heart is enlarged, with a cardiothoracic ratio of approximately {ctr:.2f} (cardiomegaly).",
                    "Cardiothoracic index increased in favor of the heart (cardiomegaly); the transverse cardiac"
                    " diameter is {d:.0f} mm.",
                    "Cardiomegaly is observed (cardiothoracic ratio {ctr:.2f}).",
                ],
                ctr=f.params["ctr"],
                d=f.size_mm,
            )
        )
    else:
        out.append(
            w.pick(
                [
                    "Mediastinal main vascular structures, heart contour and size are normal.",
                    "Heart size is within normal limits and the mediastinal vessels are natural.",
                    "Heart contour and size are normal; the mediastinal main vascular structures are natural.",
                ]
            )
        )
    aorta = [w.pick(["Thoracic aorta diameter is normal.", "The thoracic aorta is of normal calibre."])]
    if has("Arterial wall calcification"):
        f = by["Arterial wall calcification"][0]
        aorta.append(
            w.pick(
                [
                    "Calcified atheroma plaques are observed in the walls of the {sites}.",
                    "There are atherosclerotic calcific plaques in the {sites} wall.",
                    "Wall calcifications are seen in the {sites}.",
                ],
                sites=_join(f.params["sites"]),
            )
        )
    elif rng.random() < 0.5:
        aorta.append("No calcified atheroma plaque was observed in the aortic wall.")
    if has("Coronary artery wall calcification"):
        f = by["Coronary artery wall calcification"][0]
        arts = f.params["arteries"]
        aorta.append(
            w.pick(
                [
                    "Calcific plaques are observed in the {arts} coronary {word}.",
                    "Coronary artery wall calcifications are present along the {arts} coronary {word}.",
                ],
                arts=_join(arts),
                word="artery" if len(arts) == 1 else "arteries",
            )
        )
    elif rng.random() < 0.5:
        aorta.append("No calcification was observed in the coronary arteries.")
    out.extend(aorta)
    if has("Pericardial effusion"):
        f = by["Pericardial effusion"][0]
        out.append(
            w.pick(
                [
                    "Pericardial effusion reaching {t:.0f} mm in thickness is observed{ref}.",
                    "There is pericardial fluid measuring {t:.0f} mm at its thickest{ref}.",
                ],
                t=f.size_mm,
                ref=w.ref(f),
            )
        )
    else:
        out.append(
            w.pick(
                [
                    "Pericardial effusion-thickening was not observed.",
                    "No pericardial effusion or thickening was detected.",
                    "There is no pericardial effusion.",
                ]
            )
        )
    out.append(
        w.pick(
            [
                "Thoracic esophagus calibration was normal and no significant tumoral wall thickening was detected.",
                "The thoracic esophagus has a normal calibre without wall thickening.",
            ]
        )
    )
    if has("Hiatal hernia"):
        f = by["Hiatal hernia"][0]
        air = " containing an air-fluid level" if f.params["air"] else ""
        out.append(
            w.pick(
                [
                    "A sliding hiatal hernia measuring {s:.0f} mm is observed at the lower end of the esophagus{ref}.",
                    "There is a hiatal hernia of {s:.0f} mm{air} at the esophageal hiatus{ref}.",
                ],
                s=f.size_mm,
                air=air,
                ref=w.ref(f),
            )
        )
    elif rng.random() < 0.4:
        out.append("No hiatal hernia was detected.")
    if has("Lymphadenopathy"):
        nodes = sorted(by["Lymphadenopathy"], key=lambda f: -f.size_mm)
        big = nodes[0]
        stations = _join([f.site for f in nodes])
        node_word = "lymph node" if len(nodes) == 1 else "lymph nodes"
        out.append(
            w.pick(
                [
                    "Pathologically enlarged {nw} {verb} observed in the {st} {area}; the largest measures"
                    " {s:.0f}x{l:.0f} mm (short axis {s:.0f} mm) in the {big} station{ref}.",
                    "There {verb2} enlarged {nw} (lymphadenopathy) in the {st} {area}, the largest with a short"
                    " axis of {s:.0f} mm in the {big} station{ref}.",
                ],
                nw=node_word,
                verb="is" if len(nodes) == 1 else "are",
                verb2="is an" if len(nodes) == 1 else "are",
                st=stations,
                area="region" if len(nodes) == 1 else "regions",
                s=big.size_mm,
                l=big.params["long_mm"],
                big=big.site,
                ref=w.ref(big),
            )
        )
    else:
        out.append(
            w.pick(
                [
                    "No enlarged lymph nodes were detected in the prevascular, paratracheal, subcarinal or"
                    " bilateral hilar-axillary stations.",
                    "No lymph node of pathological size was observed in the mediastinum or hila.",
                    "Mediastinal and bilateral hilar lymph nodes are not enlarged.",
                ]
            )
        )
    out.append(
        w.pick(
            [
                "When examined in the lung parenchyma window;",
                "In the evaluation of the lung parenchyma;",
                "In the lung window:",
            ]
        )
    )
    lung_groups = [by[lb] for lb in _LUNG_LABELS if has(lb)]
    order = rng.permutation(len(lung_groups))
    for i in order:
        out.extend(_lung_sentences(lung_groups[int(i)], w))
    infiltrate = has("Lung opacity") or has("Consolidation")
    if not has("Lung nodule") and not infiltrate and not lung_groups:
        out.append(
            w.pick(
                [
                    "Aeration of both lungs is normal and no nodular or infiltrative lesion was detected in"
                    " the lung parenchyma.",
                    "Both lungs are normally aerated; no nodule, mass or infiltrative lesion was observed.",
                ]
            )
        )
    else:
        if not has("Lung nodule"):
            out.append(
                w.pick(
                    [
                        "No nodular lesion was detected in either lung.",
                        "No mass or nodule was observed in the lung parenchyma.",
                    ]
                )
            )
        if not infiltrate:
            out.append(
                w.pick(
                    [
                        "No active infiltrative lesion was detected in the lungs.",
                        "There is no pneumonic infiltration or consolidation in either lung.",
                    ]
                )
            )
    if has("Pleural effusion"):
        eff = {f.side: f for f in by["Pleural effusion"]}
        if len(eff) == 2:
            f = eff["right"]
            out.append(
                w.pick(
                    [
                        "Bilateral pleural effusion is observed, measuring {r:.0f} mm on the right and"
                        " {lt:.0f} mm on the left at the thickest part{ref}.",
                        "There is pleural effusion in both hemithoraces ({r:.0f} mm right, {lt:.0f} mm left){ref}.",
                    ],
                    r=f.size_mm,
                    lt=eff["left"].size_mm,
                    ref=w.ref(f),
                )
            )
        else:
            f = next(iter(eff.values()))
            out.append(
                w.pick(
                    [
                        "{Side}-sided pleural effusion measuring {t:.0f} mm at its thickest part is observed{ref}.",
                        "There is a {kind} pleural effusion on the {side}, reaching {t:.0f} mm in thickness{ref}.",
                    ],
                    Side=f.side.capitalize(),
                    side=f.side,
                    kind=f.kind,
                    t=f.size_mm,
                    ref=w.ref(f),
                )
            )
    else:
        out.append(
            w.pick(
                [
                    "Pleural effusion-thickening was not detected.",
                    "No pleural effusion or pleural thickening was observed.",
                    "There is no pleural effusion in either hemithorax.",
                ]
            )
        )
    out.append(
        w.pick(
            [
                "Upper abdominal organs included in the sections are normal.",
                "No pathological finding was observed in the upper abdominal sections included in the study.",
                "The liver dome and the other upper abdominal structures within the field are natural.",
            ]
        )
    )
    out.append(
        w.pick(
            [
                "Bone structures in the study area are natural. Vertebral corpus heights are preserved.",
                "No lytic-destructive lesion was detected in the bone structures.",
                "Vertebral corpus heights are preserved and the bones are natural.",
            ]
        )
    )
    return " ".join(out)


def _impression_item(label: str, fs: list[Finding], w: _Writer) -> str:
    f = fs[0]
    if label == "Lung nodule":
        big = max(fs, key=lambda x: x.size_mm)
        if len(fs) == 1:
            return f"{big.size_mm:.0f} mm {big.kind} nodule in {_lung_where(big, w, False)}."
        return f"Nodules in the lungs, the largest {big.size_mm:.0f} mm in {_lung_where(big, w, False)}."
    if label == "Pleural effusion":
        sides = sorted({x.side for x in fs})
        return "Bilateral pleural effusion." if len(sides) == 2 else f"{sides[0].capitalize()} pleural effusion."
    if label == "Lymphadenopathy":
        return f"Lymphadenopathy in the {_join([x.site for x in fs])} {'region' if len(fs) == 1 else 'regions'}."
    if label == "Emphysema":
        return f"{f.params['severity'].capitalize()} {f.kind} emphysema."
    if label in ("Lung opacity", "Consolidation", "Atelectasis", "Pulmonary fibrotic sequela"):
        where = _join(sorted({_lung_where(x, w, False) for x in fs if x.site}))
        noun = {
            "Lung opacity": "Ground-glass opacity",
            "Consolidation": "Consolidation",
            "Atelectasis": "Atelectasis",
            "Pulmonary fibrotic sequela": "Fibrotic sequelae",
        }[label]
        tail = {"Lung opacity": " (infection?)", "Consolidation": ", may be compatible with pneumonia"}.get(label, "")
        return f"{noun} in {where}{tail}."
    if label in (
        "Mosaic attenuation pattern",
        "Peribronchial thickening",
        "Bronchiectasis",
        "Interlobular septal thickening",
    ):
        noun = {
            "Mosaic attenuation pattern": "Mosaic attenuation pattern",
            "Peribronchial thickening": "Peribronchial thickening",
            "Bronchiectasis": f"{f.kind.capitalize()} bronchiectasis",
            "Interlobular septal thickening": "Interlobular septal thickening",
        }[label]
        return f"{noun} in {_zone_text(f)}."
    if label == "Medical material":
        return " ".join(
            {
                "port catheter": "Port catheter.",
                "pacemaker": "Cardiac pacemaker.",
                "sternotomy wires": "Sternotomy wires.",
                "central venous catheter": "Central venous catheter.",
            }[x.kind]
            for x in fs
        )
    return {
        "Arterial wall calcification": "Atherosclerotic calcification in the aorta.",
        "Cardiomegaly": "Cardiomegaly.",
        "Pericardial effusion": "Pericardial effusion.",
        "Coronary artery wall calcification": "Coronary artery calcification.",
        "Hiatal hernia": "Hiatal hernia.",
    }[label]


def compose_impression(findings: Sequence[Finding], rng: np.random.Generator, series: int) -> str:
    """The Impressions_EN text: the positive findings, most important first."""
    w = _Writer(rng, series)
    by: dict[str, list[Finding]] = {}
    for f in findings:
        by.setdefault(f.label, []).append(f)
    if not by:
        return NORMAL_IMPRESSION
    priority = (
        "Consolidation",
        "Lung opacity",
        "Lung nodule",
        "Pleural effusion",
        "Lymphadenopathy",
        "Pericardial effusion",
        "Cardiomegaly",
        "Emphysema",
        "Bronchiectasis",
        "Interlobular septal thickening",
        "Mosaic attenuation pattern",
        "Peribronchial thickening",
        "Atelectasis",
        "Pulmonary fibrotic sequela",
        "Hiatal hernia",
        "Arterial wall calcification",
        "Coronary artery wall calcification",
        "Medical material",
    )
    return " ".join(_impression_item(lb, by[lb], w) for lb in priority if lb in by)


_CLINICAL = (
    "Cough.",
    "Shortness of breath.",
    "Chest pain.",
    "Fever and cough.",
    "Dyspnea.",
    "Malignancy screening.",
    "Follow-up.",
    "Pneumonia?",
    "Weight loss.",
    "Preoperative evaluation.",
)


def clinical_information(rng: np.random.Generator, positive: Sequence[str]) -> str:
    if rng.random() < 0.45:
        return "Not given."
    if "Lung nodule" in positive and rng.random() < 0.4:
        return "Follow-up of pulmonary nodule."
    return str(rng.choice(_CLINICAL))


def technique(rng: np.random.Generator, slice_mm: float) -> str:
    if rng.random() < 0.1:
        return "Not given."
    return str(
        rng.choice(
            [
                f"Non-contrast images were taken in the axial plane with a slice thickness of {slice_mm:g} mm.",
                f"Thorax CT was performed without contrast; axial {slice_mm:g} mm sections with coronal and sagittal"
                " reformats.",
                "Non-contrast chest CT in the axial plane; lung and mediastinal windows were evaluated.",
            ]
        )
    )
