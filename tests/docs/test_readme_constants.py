"""The README quotes a few thresholds a user plans around; each is defined once in code. These
tests fail when a constant changes and the README still promises the old value."""

from __future__ import annotations

import re
from pathlib import Path

from cryoshift.runtime import contract, polarity

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


def _section(start: str, length: int = 1200) -> str:
    """The README text from the first occurrence of ``start`` on (whitespace collapsed)."""
    at = README.index(start)
    return re.sub(r"\s+", " ", README[at : at + length])


def test_polarity_thresholds_quoted_as_defined() -> None:
    text = _section("The contrast compared is the declared")
    assert f"at least {polarity.MIN_VOLUMES} volumes" in text
    assert f"t-statistic beyond {polarity.MIN_T:g}" in text
    assert f"{polarity.MIN_AGREE:.0%} of them agree".replace("%", " %") in text


def test_voxel_tolerance_quoted_as_defined() -> None:
    text = _section("Refused with one line: data whose contrast differs")
    assert f"voxel size off by more than {contract.VOXEL_TOLERANCE:.0%}".replace("%", " %") in text
