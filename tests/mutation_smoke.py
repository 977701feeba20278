"""Mutation spot-check: apply deliberate bugs to key functions and show that the tests catch each one.

    python tests/mutation_smoke.py [--out benchmarks/results/mutation_smoke.json] [--only TEXT[,TEXT...]]

The named tests of all mutations run once on the real code (they must pass); then each bug is applied in
place and its tests must fail; the source file is restored afterwards (also on Ctrl-C; ``git checkout`` the
file if the process was killed). Run it on a clean checkout of the files it mutates (it refuses files with
uncommitted changes). Not part of ``make test``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hsenet_search.eval.provenance import run_started, write_result  # noqa: E402


@dataclass(frozen=True)
class Mutation:
    name: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]


CHECKS = "tests/pipeline/test_evidence_checks.py"
WRITERS = "tests/pipeline/test_evidence_writers.py"
MUTATIONS = (
    Mutation(
        "label filter applied after FAISS (post-filter) instead of the FAISS selector",
        "hsenet_search/engine.py",
        "        scores, ids = index.search(q, fetch, allowed_ids=allowed, params=params)\n",
        "        scores, ids = index.search(q, fetch, params=params)\n"
        "        if allowed is not None:\n"
        "            keep = np.isin(ids[0], allowed)\n"
        "            scores, ids = scores[:, keep], ids[:, keep]\n",
        ("tests/pipeline/test_search.py::test_label_filter_is_applied_inside_faiss",),
    ),
    Mutation(
        "ties counted for the query in R@k ranks",
        "hsenet_search/eval/retrieval.py",
        "(block >= true_scores[:, None]).sum(axis=1)",
        "(block > true_scores[:, None]).sum(axis=1) + 1",
        ("tests/test_eval_retrieval.py",),
    ),
    Mutation(
        "reconstructions of one scan not collapsed in volume hits",
        "hsenet_search/engine.py",
        "if rid < 0 or (collapse and scan_ids[rid] in seen):",
        "if rid < 0:",
        ("tests/pipeline/test_search.py::test_text_search_matches_brute_force_and_collapses_scans",),
    ),
    Mutation(
        "preprocessing cache key without the profile hash",
        "hsenet_search/data/cache.py",
        'key = hashlib.sha256(f"{self.content_hash(path)}|{profile.hash}|{extras}"'
        ".encode()).hexdigest()[:32]\n"
        '        return self.root / profile.hash / key[:2] / f"{key}.npy"',
        'key = hashlib.sha256(f"{self.content_hash(path)}|{extras}".encode()).hexdigest()[:32]\n'
        '        return self.root / "any" / key[:2] / f"{key}.npy"',
        ("tests/test_preprocess.py::test_cache_never_decodes_a_file_twice",),
    ),
    Mutation(
        "official report-text protocol ignored (a findings-protocol model embeds findings + impression)",
        "hsenet_search/data/resolve.py",
        '    if protocol == "findings":\n        text = findings or impression\n',
        "    if False:\n        text = findings or impression\n",
        (
            "tests/test_one_road.py::test_report_text_protocols_and_official_truncation",
            "tests/test_one_road.py::test_ctrate_query_finds_itself_whatever_its_header_says",
        ),
    ),
    Mutation(
        "resume accepts a partial build made with another model",
        "hsenet_search/index/partial.py",
        '        "model_fingerprint": model.fingerprint,\n',
        "",
        (f"{WRITERS}::test_resume_refuses_another_model_and_records_failures_of_both_parts",),
    ),
    Mutation(
        "generation leak guard off: the scan being drafted grounds its own draft",
        "hsenet_search/generate/grounding.py",
        "kept = [h for h in hits if h.scan_id != exclude_scan and not (",
        "kept = [h for h in hits if not (",
        (f"{CHECKS}::test_grounding_leaves_out_the_own_scan_and_identical_reports",),
    ),
)


def _pytest(tests: tuple[str, ...]) -> tuple[int, float, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
    )
    tail = [line for line in proc.stdout.strip().splitlines() if line.strip()][-1:]
    return proc.returncode, round(time.perf_counter() - t0, 1), tail[0] if tail else proc.stderr[-300:]


def _clean(file: str) -> bool:
    proc = subprocess.run(["git", "status", "--porcelain", "--", file], cwd=REPO, capture_output=True, text=True)
    return proc.returncode == 0 and not proc.stdout.strip()


def run_mutation(m: Mutation, baseline_rc: int) -> dict:
    path = REPO / m.file
    original = path.read_text()
    if original.count(m.old) != 1:
        return {"mutation": m.name, "file": m.file, "status": "not applied: the original text is not found once"}
    try:
        path.write_text(original.replace(m.old, m.new))
        mutant_rc, mutant_s, mutant_tail = _pytest(m.tests)
    finally:
        path.write_text(original)
    caught = baseline_rc == 0 and mutant_rc != 0
    return {
        "mutation": m.name,
        "file": m.file,
        "tests": list(m.tests),
        "mutant": {"exit": mutant_rc, "seconds": mutant_s, "summary": mutant_tail},
        "status": "caught" if caught else ("baseline failed" if baseline_rc else "SURVIVED"),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "mutation_smoke.json")
    ap.add_argument("--only", default=None, help="comma-separated texts: run the mutations whose name has one")
    args = ap.parse_args()
    started = run_started()
    wanted = [w.strip() for w in args.only.split(",")] if args.only else None
    chosen = [m for m in MUTATIONS if wanted is None or any(w in m.name for w in wanted)]
    dirty = sorted({m.file for m in chosen if not _clean(m.file)})
    if dirty:
        print(f"refusing: uncommitted changes in {', '.join(dirty)}", file=sys.stderr)
        return 2
    tests = tuple(dict.fromkeys(t for m in chosen for t in m.tests))
    baseline_rc, baseline_s, baseline_tail = _pytest(tests)
    print(f"real code: exit {baseline_rc} ({baseline_tail})", flush=True)
    results: list[dict] = []

    def save() -> int:
        caught = sum(r["status"] == "caught" for r in results)
        write_result(
            args.out,
            {
                "benchmark": "mutation smoke",
                "caught": caught,
                "total": len(chosen),
                "complete": len(results) == len(chosen),
                "real_code": {
                    "tests": list(tests),
                    "exit": baseline_rc,
                    "seconds": baseline_s,
                    "summary": baseline_tail,
                },
                "results": results,
            },
            started,
        )
        return caught

    for m in chosen:
        results.append(run_mutation(m, baseline_rc))
        caught = save()  # after every mutation, so a long run leaves its finished part behind
        print(f"{results[-1]['status']:>16}  {m.name}", flush=True)
    print(f"{caught}/{len(results)} mutations caught; wrote {args.out}")
    return 0 if caught == len(results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
