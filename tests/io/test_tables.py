"""The per-slice scores CSV and the prompts JSON (io.tables)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from napari_samlung.core.metrics import SliceScore, summarize
from napari_samlung.errors import PromptError
from napari_samlung.io.tables import CSV_FIELDS, read_scores_csv, seeds_from_json, write_scores_csv


def test_csv_round_trip(tmp_path):
    scores = [
        SliceScore("case 1", 3, 0.912345678, 0.8, {1: 0.9, 2: 0.95}, 0.97, 1.5, False),
        SliceScore("case,2", 0, 0.0, 0.0, {1: 0.0}, float("nan"), 0.1, True),
    ]
    path = tmp_path / "per_slice.csv"
    write_scores_csv(path, scores[:1])
    write_scores_csv(path, scores[1:], append=True)
    lines = path.read_text().splitlines()
    assert lines[0].split(",") == CSV_FIELDS
    assert len(lines) == 3
    back = read_scores_csv(path)
    assert [b.case for b in back] == ["case 1", "case,2"]
    assert back[0].slice_index == 3
    assert back[0].dice == pytest.approx(0.912346, abs=1e-9)  # 6 decimals
    assert back[0].dice_per_lung == {1: 0.9, 2: 0.95}
    assert back[1].dice_per_lung == {1: 0.0}
    assert math.isnan(back[1].score)
    assert back[1].empty_prediction and not back[0].empty_prediction
    assert summarize(back).empty_predictions == 1
    # writing without append starts a new file
    write_scores_csv(path, scores[1:])
    assert len(read_scores_csv(path)) == 1


def test_prompts_json_gives_seeds_with_boxes_and_points_in_xy(tmp_path):
    path = tmp_path / "prompts.json"
    spec = {
        "slices": [
            {"slice": 3, "boxes_xyxy": [[10, 20, 30, 40]], "box_labels": [2],
             "points_rc": [[25, 15]], "point_labels": [1]},
            {"slice": 5, "points_rc": [[7, 9], [8, 1]]},
        ]
    }  # fmt: skip
    path.write_text(json.dumps(spec))
    seeds = seeds_from_json(path, (8, 50, 60))
    assert [s.slice_index for s in seeds] == [3, 5]
    (box,) = seeds[0].prompts
    assert list(box.box_xyxy) == [10, 20, 30, 40] and box.target_label == 2
    np.testing.assert_array_equal(box.points_xy, [[15, 25]])  # (row, col) -> (x, y)
    (points,) = seeds[1].prompts
    np.testing.assert_array_equal(points.points_xy, [[9, 7], [1, 8]])
    np.testing.assert_array_equal(points.point_labels, [1, 1])


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("not json", "not a prompts file"),
        ('{"slices": {}}', "'slices' must be a list"),
        ('{"slices": [{"slice": 9, "points_rc": [[1, 1]]}]}', "outside the volume"),
        ('{"slices": [{"slice": 1}]}', "no boxes or points"),
        ('{"slices": [{"slice": 1, "boxes_xyxy": [[1, 2, 3, 4]], "box_labels": []}]}',
         "malformed"),
        ('{"slices": []}', "no prompted slices"),
    ],
)  # fmt: skip
def test_bad_prompts_json_raises_prompt_error_naming_the_file(tmp_path, content, expected):
    path = tmp_path / "p.json"
    path.write_text(content)
    with pytest.raises(PromptError, match=expected) as err:
        seeds_from_json(path, (4, 10, 10))
    assert "p.json" in str(err.value)
