"""Rule-based report summaries (BrgSA training text): content, caching and the CLI."""

from __future__ import annotations

import json

from hsenet_search.data.labels import label_report
from hsenet_search.data.summarise import (
    NORMAL_SUMMARY,
    RULES,
    SummaryCache,
    report_hash,
    rule_summary,
    summarise_reports,
)

REPORT = (
    "Trachea and both main bronchi are open. No pleural effusion. There is a 6 mm nodule in the right upper "
    "lobe. Heart size is increased; no pericardial effusion was observed. Cardiomegaly. "
    "There is a 6 mm nodule in the right upper lobe."
)


def test_summary_keeps_positive_findings_with_attributes_and_drops_negatives():
    summary = rule_summary(REPORT)
    assert summary == ["There is a 6 mm nodule in the right upper lobe.", "Heart size is increased.", "Cardiomegaly."]
    positives = {k for k, v in label_report(REPORT).items() if v}
    assert positives == {k for k, v in label_report(" ".join(summary)).items() if v}


def test_normal_report_gets_the_normal_sentence():
    assert rule_summary("No pleural effusion. Heart size is normal. No nodule was detected.") == [NORMAL_SUMMARY]


def test_cache_is_keyed_by_report_hash_and_reused(tmp_path):
    cache = SummaryCache(tmp_path, RULES)
    first = summarise_reports([REPORT, REPORT, "Cardiomegaly."], cache)
    assert list(first["report_hash"]) == [report_hash(REPORT), report_hash("Cardiomegaly.")]
    entry = tmp_path / RULES.name / f"{report_hash(REPORT)}.json"
    entry.write_text(json.dumps(["cached sentence."]))
    assert summarise_reports([REPORT], cache)["summary"][0] == ["cached sentence."]
    entry.write_text("{not json")  # a damaged entry is recomputed, never an error
    assert summarise_reports([REPORT], cache)["summary"][0] == rule_summary(REPORT)
