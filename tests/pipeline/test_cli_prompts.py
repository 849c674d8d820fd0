"""Prompts files for ``segment --propagate-from``: every malformed or impossible prompt is
refused with the file and slice named.

The conventions and helpers are in ``cli_helpers.py``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import (  # noqa: F401 (the ct and xray fixtures)
    SIZE,
    TINY,
    ct_fixture,
    refused,
    run_cli,
    xray_fixture,
)
from PIL import Image

from napari_samlung.core.prompts import MAX_POINTS_PER_SLICE

# --------------------------------------------------------------------------- prompts


def _prompts(tmp_path: Path, spec) -> Path:
    path = tmp_path / "prompts.json"
    path.write_text(spec if isinstance(spec, str) else json.dumps(spec))
    return path


def _propagate(image: Path, prompts: Path, out: Path) -> list:
    return ["segment", image, "--propagate-from", prompts, "-o", out, *TINY]


BAD_PROMPTS = {
    "point_outside": (
        {"slices": [{"slice": 1, "points_rc": [[100, 5]]}]},
        r"point \(row 100, col 5\) lies outside the 32x32 slice; move it onto the image",
    ),
    "slice_beyond_the_volume": (
        {"slices": [{"slice": 7, "points_rc": [[10, 5]]}]},
        r"prompts.json: slice 7 is outside the volume \(0..3\)",
    ),
    "negative_slice": (
        {"slices": [{"slice": -1, "points_rc": [[10, 5]]}]},
        r"prompts.json: slice -1 is outside the volume \(0..3\)",
    ),
    "degenerate_box": (
        {"slices": [{"slice": 1, "boxes_xyxy": [[5, 5, 5, 20]]}]},
        "the box has zero width or height.*drag a rectangle around the lung",
    ),
    "only_negative_points": (
        {"slices": [{"slice": 1, "points_rc": [[10, 5], [12, 20]], "point_labels": [0, 0]}]},
        "only negative points on this slice: add a positive point or a box",
    ),
    "too_many_points": (
        {"slices": [{"slice": 1, "points_rc": [[10, 5]] * (MAX_POINTS_PER_SLICE + 1)}]},
        f"{MAX_POINTS_PER_SLICE + 1} points on one slice is more than the limit of "
        f"{MAX_POINTS_PER_SLICE}; remove some points",
    ),
    "malformed_json": ("{not json", r"prompts.json: not a prompts file \(JSONDecodeError\)"),
    "no_slices_key": ({"boxes": []}, r"prompts.json: not a prompts file \(KeyError\)"),
    "no_prompt_on_a_slice": ({"slices": [{"slice": 1}]}, "slice 1 has no boxes or points"),
    "empty_slices": ({"slices": []}, "prompts.json: no prompted slices"),
}


@pytest.mark.parametrize("case", sorted(BAD_PROMPTS))
def test_propagate_refuses_bad_prompts(tmp_path, ct, capsys, case):
    spec, expected = BAD_PROMPTS[case]
    out = tmp_path / "pred.nii.gz"
    line = refused(capsys, _propagate(ct[0], _prompts(tmp_path, spec), out))
    assert re.search(expected, line), line
    assert not out.exists()


def test_box_larger_than_the_image_is_clipped_and_runs(tmp_path, xray, capsys):
    spec = {"slices": [{"slice": 0, "boxes_xyxy": [[-50, -50, 500, 500]]}]}
    out = tmp_path / "pred.png"
    code, stdout, err = run_cli(capsys, _propagate(xray[0], _prompts(tmp_path, spec), out))
    assert code == 0, err
    assert "propagated over 1 slices" in stdout
    assert np.asarray(Image.open(out)).shape == (SIZE, SIZE)


MALFORMED_PROMPTS = {
    "slices_not_a_list": {"slices": 3},
    "entry_not_an_object": {"slices": [3]},
    "point_with_three_numbers": {"slices": [{"slice": 1, "points_rc": [[1, 2, 3]]}]},
    "box_with_three_numbers": {"slices": [{"slice": 1, "boxes_xyxy": [[1, 2, 3]]}]},
    "slice_not_a_number": {"slices": [{"slice": "middle", "boxes_xyxy": [[1, 2, 20, 20]]}]},
    "more_box_labels_than_boxes": {
        "slices": [{"slice": 1, "boxes_xyxy": [[1, 2, 20, 20]], "box_labels": [1, 2]}]
    },
}


@pytest.mark.parametrize("case", sorted(MALFORMED_PROMPTS))
def test_propagate_refuses_structurally_wrong_prompts(tmp_path, ct, capsys, case):
    out = tmp_path / "pred.nii.gz"
    line = refused(capsys, _propagate(ct[0], _prompts(tmp_path, MALFORMED_PROMPTS[case]), out))
    assert "prompts.json" in line


@pytest.mark.parametrize(
    "case", ["point_outside", "degenerate_box", "only_negative_points", "too_many_points"]
)
def test_prompt_refusals_name_the_prompts_file_and_slice(tmp_path, ct, capsys, case):
    spec, _ = BAD_PROMPTS[case]
    line = refused(capsys, _propagate(ct[0], _prompts(tmp_path, spec), tmp_path / "p.nii.gz"))
    assert "prompts.json: slice 1: " in line
