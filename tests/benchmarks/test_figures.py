"""Figures are written at 150 dpi: a confusion matrix re-rendered from a tiny fake results JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")
Image = pytest.importorskip("PIL.Image")

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import render_figures  # noqa: E402

NAMES = ["ribosome70S", "proteasome20S_capped", "TRiC"]
CM = [[8, 1, 1], [0, 9, 1], [2, 0, 8]]


def _check_png(path: Path) -> None:
    with Image.open(path) as im:
        dpi = im.info["dpi"]
        width, height = im.size
    assert dpi[0] == pytest.approx(150, abs=0.5) and dpi[1] == pytest.approx(150, abs=0.5)
    # 3 classes at 0.6 in per cell plus labels: well above the old ~300 px at 80 dpi
    assert width >= 450 and height >= 450


def test_domain_shift_json_renders_confusion_at_150_dpi(tmp_path: Path) -> None:
    result = {
        "class_names": NAMES,
        "runs": [
            {"target": "optics", "method": m, "seed": s, "accuracy": 0.8, "confusion": CM}
            for m in ("source-only", "dann", "oracle")
            for s in (1, 0)
        ],
    }
    src = tmp_path / "domain_shift_tiny.json"
    src.write_text(json.dumps(result))
    paths = render_figures.render(src)
    assert sorted(p.name for p in paths) == [
        "confusion_optics_oracle.png",
        "confusion_optics_source-only.png",
    ]
    assert all(p.parent == tmp_path / "domain_shift_tiny" for p in paths)
    _check_png(paths[0])


def test_accuracy_json_renders_every_method_of_the_first_draw(tmp_path: Path) -> None:
    result = {
        "classes": dict(zip(NAMES, ["4v4r", "6utj", "7lum"], strict=True)),
        "rows": [
            {
                "target": "lamella",
                "method": m,
                "draw": d,
                "accuracy": 0.5,
                "confusion": (np.asarray(CM) * (d + 1)).tolist(),
            }
            for m in ("template_matching", "default")
            for d in (0, 1)
        ],
    }
    src = tmp_path / "accuracy_tiny.json"
    src.write_text(json.dumps(result))
    paths = render_figures.render(src, out_root=tmp_path / "out")
    assert sorted(p.name for p in paths) == [
        "confusion_lamella_default.png",
        "confusion_lamella_template_matching.png",
    ]
    for p in paths:
        _check_png(p)
