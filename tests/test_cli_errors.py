"""Hostile CLI input through the real entry point: exit 2 with a message naming the option, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hsenet_search.cli import common

REPO = Path(__file__).resolve().parents[1]
TRAIN = ["train", "--data", "nowhere", "--out", "nowhere", "--steps", "1"]


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "hsenet_search.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env=env,
    )


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["bench", "retrieval", "--index", "nowhere", "--unit", "foo"], "--unit"),
        (["bench", "retrieval", "--index", "nowhere", "--ks", "0,-1"], "--ks"),
        (["bench", "retrieval", "--index", "nowhere", "--ks", "abc"], "--ks"),
        (["bench", "zeroshot", "--index", "nowhere", "--split", "test"], "--split"),
        (["bench", "generation", "--index", "nowhere", "--data", "nowhere", "--mode", "draft"], "--mode"),
        (["bench", "generation", "--index", "nowhere", "--data", "nowhere", "--limit", "0"], "--limit"),
        (["generate", "x.nii.gz", "--index", "nowhere", "--composer", "poem"], "--composer"),
        (["search", "volume", "x.nii.gz", "--index", "nowhere", "--target", "scans"], "--target"),
        ([*TRAIN, "--loss", "triplet"], "--loss"),
        ([*TRAIN, "--augment", "mixup"], "--augment"),
        ([*TRAIN, "--text", "abstract"], "--text"),
    ],
    ids=lambda v: v if isinstance(v, str) else " ".join(v[:2]),
)
def test_bad_choice_is_a_usage_error(cli_main, args: list[str], names: str) -> None:
    """Through ``main()`` (the installed entry point): exit 2, the option named on stderr, no traceback."""
    res = cli_main(*args)
    assert res.code == 2, (res.out, res.err)
    assert names in res.err and "Traceback" not in res.err


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["index", "info", "{tmp}/none"], ("{tmp}/none",)),
        (["search", "text", "effusion", "--index", "{tmp}/none"], ("{tmp}/none",)),
        (["bench", "retrieval", "--ks", "1"], ("exactly one of --index DIR or --data DIR",)),
        (["train", "--data", "{tmp}", "--out", "{tmp}/model"], ("--epochs N or --steps N",)),
        (["data", "inspect", "{tmp}/scan.nii.gz"], ("{tmp}/scan.nii.gz",)),
    ],
    ids=lambda v: " ".join(v[:2]) if isinstance(v, list) else None,
)
def test_user_errors_through_main_are_one_line(cli_main, tmp_path, args: list[str], needles: tuple) -> None:
    """A user error (``HSENetError``) through ``main()``: one ``error:`` line naming the input, exit 2."""
    res = cli_main(*(a.format(tmp=tmp_path) for a in args))
    res.one_line_error(*(n.format(tmp=tmp_path) for n in needles))


def test_usage_errors_through_main() -> None:
    """The installed entry point (``main()``): exit 2, the option named, no traceback."""
    for args, names in (
        (["bench", "retrieval", "--index", "nowhere", "--ks", "abc"], "--ks"),
        (["bench", "retrieval", "--index", "nowhere", "--unit", "foo"], "--unit"),
    ):
        proc = _cli(*args)
        assert proc.returncode == 2, proc.stderr
        assert names in proc.stderr and "Traceback" not in proc.stderr


def test_choice_enums_follow_the_library() -> None:
    """The CLI's fixed choices are exactly the values the library accepts."""
    from hsenet_search.data.cases import SPLITS
    from hsenet_search.engine import TARGETS
    from hsenet_search.eval.bench import UNITS
    from hsenet_search.generate.draft import MODES
    from hsenet_search.train.data import AUGMENTATIONS
    from hsenet_search.train.losses import contrastive_loss

    def values(enum) -> tuple[str, ...]:
        return tuple(member.value for member in enum)

    assert values(common.Target) == TARGETS and values(common.Unit) == UNITS
    assert values(common.Split) == (*SPLITS, "all") and values(common.DraftMode) == MODES
    assert values(common.Augment) == AUGMENTATIONS
    for loss in values(common.Loss):
        contrastive_loss(loss)


def test_parse_ks() -> None:
    import typer

    assert common.parse_ks("1, 5,10,") == [1, 5, 10]
    for bad in ("", "0", "1,1", "-3", "x", "1.5"):
        with pytest.raises(typer.BadParameter):
            common.parse_ks(bad)
