"""The prompts file reader (``io.tables.seeds_from_json``): every field checked, one line each.

Issue 13, sections 3 and 4: deep nesting, non-integer slices, NaN or huge coordinates,
points that are not [row, col] pairs, label counts that do not match, lung labels other
than 1 and 2 are refused with the file and the entry named, never a traceback or a
silently wrong prompt.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from napari_samlung.core.prompts import MAX_COORDINATE, MAX_POINTS_PER_SLICE
from napari_samlung.errors import PromptError, SamlungError
from napari_samlung.io.tables import MAX_PROMPTS_BYTES, seeds_from_json

SHAPE = (6, 40, 50)


def _write(tmp_path: Path, spec) -> Path:
    path = tmp_path / "prompts.json"
    path.write_text(spec if isinstance(spec, str) else json.dumps(spec))
    return path


def _refusal(tmp_path: Path, spec, shape=SHAPE) -> str:
    path = _write(tmp_path, spec)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy overflow or other warning on the way
        with pytest.raises(PromptError) as err:
            seeds_from_json(path, shape)
    message = str(err.value)
    assert "\n" not in message and str(path) in message, message
    return message


def _entry(**fields) -> dict:
    return {"slices": [{"slice": 2, **fields}]}


BOX = [5, 6, 20, 30]

REFUSED = {
    # slice index
    "slice_a_word": ({"slices": [{"slice": "middle", "boxes_xyxy": [BOX]}]}, "whole number"),
    "slice_a_numeric_string": ({"slices": [{"slice": "3", "boxes_xyxy": [BOX]}]}, "whole number"),
    "slice_a_fraction": ({"slices": [{"slice": 2.5, "boxes_xyxy": [BOX]}]}, "whole number"),
    "slice_true": ({"slices": [{"slice": True, "boxes_xyxy": [BOX]}]}, "whole number"),
    "slice_null": ({"slices": [{"slice": None, "boxes_xyxy": [BOX]}]}, "whole number"),
    "slice_a_list": ({"slices": [{"slice": [2], "boxes_xyxy": [BOX]}]}, "whole number"),
    "slice_nan": ('{"slices": [{"slice": NaN, "boxes_xyxy": [[5, 6, 20, 30]]}]}', "whole number"),
    "slice_huge": ('{"slices": [{"slice": 1e400, "boxes_xyxy": [[5, 6, 20, 30]]}]}',
                   "whole number"),
    "slice_missing_in_a_volume": ({"slices": [{"boxes_xyxy": [BOX]}]}, "no 'slice' index"),
    "slice_duplicated": (
        {"slices": [{"slice": 2, "boxes_xyxy": [BOX]}, {"slice": 2, "points_rc": [[9, 9]]}]},
        "slice 2 appears in entries 0 and 1",
    ),
    # points
    "point_nan": ('{"slices": [{"slice": 2, "points_rc": [[NaN, 4]]}]}', "not finite"),
    "point_infinite": ('{"slices": [{"slice": 2, "points_rc": [[Infinity, 4]]}]}', "not finite"),
    "point_huge": (_entry(points_rc=[[1e300, 4]]), "beyond"),
    "point_huge_integer": (_entry(points_rc=[[10**400, 4]]), "not finite"),
    "point_three_numbers": (_entry(points_rc=[[1, 2, 3]]), "not a [row, col] pair"),
    "point_flat": (_entry(points_rc=[1, 2]), "not a [row, col] pair"),
    "point_four_numbers": (_entry(points_rc=[[1, 2, 3, 4]]), "not a [row, col] pair"),
    "point_strings": (_entry(points_rc=[["1", "2"]]), "non-number"),
    "point_booleans": (_entry(points_rc=[[True, 2]]), "non-number"),
    "points_not_a_list": (_entry(points_rc={"row": 1, "col": 2}), "'points_rc' must be a list"),
    "more_point_labels": (_entry(points_rc=[[9, 9]], point_labels=[1, 1]), "2 point_labels"),
    "fewer_point_labels": (_entry(points_rc=[[9, 9], [8, 8]], point_labels=[1]), "1 point_labels"),
    "labels_without_points": (_entry(boxes_xyxy=[BOX], point_labels=[1]), "1 point_labels"),
    "point_label_2": (_entry(points_rc=[[9, 9]], point_labels=[2]), "is not 0 or 1"),
    "point_label_string": (_entry(points_rc=[[9, 9]], point_labels=["1"]), "is not 0 or 1"),
    "point_label_fraction": (_entry(points_rc=[[9, 9]], point_labels=[0.5]), "is not 0 or 1"),
    "too_many_points": (
        _entry(points_rc=[[9, 9]] * (MAX_POINTS_PER_SLICE + 1)),
        f"more than the limit of {MAX_POINTS_PER_SLICE}",
    ),
    # boxes
    "box_huge_corner": (_entry(boxes_xyxy=[[0, 0, 1e308, 1e308]]), "beyond"),
    "box_nan": ('{"slices": [{"slice": 2, "boxes_xyxy": [[0, 0, NaN, 5]]}]}', "not finite"),
    "box_three_numbers": (_entry(boxes_xyxy=[[1, 2, 3]]), "not a [x0, y0, x1, y1] box"),
    "box_flat": (_entry(boxes_xyxy=BOX), "not a [x0, y0, x1, y1] box"),
    "box_label_3": (_entry(boxes_xyxy=[BOX], box_labels=[3]), "is not null or 1 or 2"),
    "box_label_0": (_entry(boxes_xyxy=[BOX], box_labels=[0]), "is not null or 1 or 2"),
    "box_label_minus_1": (_entry(boxes_xyxy=[BOX], box_labels=[-1]), "is not null or 1 or 2"),
    "box_label_word": (_entry(boxes_xyxy=[BOX], box_labels=["left"]), "is not null or 1 or 2"),
    "box_labels_too_many": (_entry(boxes_xyxy=[BOX], box_labels=[1, 2]), "2 box_labels"),
    "box_labels_not_a_list": (_entry(boxes_xyxy=[BOX], box_labels=1), "must be a list"),
    # structure
    "unknown_key": (_entry(boxes_xyxy=[BOX], point_label=[1]), "unknown key"),
    "entry_a_number": ({"slices": [3]}, "not an object"),
    "top_level_a_list": ([{"slice": 2}], "not a prompts file"),
    "deeply_nested": ('{"slices": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
    "nested_inside_points": (
        '{"slices": [{"slice": 2, "points_rc": ' + "[" * 5000 + "]" * 5000 + "}]}",
        "nested too deeply",
    ),
    "moderately_nested_points": (
        '{"slices": [{"slice": 2, "points_rc": ' + "[" * 500 + "]" * 500 + "}]}",
        "not a [row, col] pair",
    ),
    "not_utf8": ("\udcff", "not a prompts file"),
    "huge_integer_literal": ('{"slices": [{"slice": ' + "9" * 5000 + "}]}", "not a prompts file"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_wrong_prompts_are_refused_with_one_line(tmp_path, case):
    spec, expected = REFUSED[case]
    if spec == "\udcff":
        path = tmp_path / "prompts.json"
        path.write_bytes(b'{"slices": [\xff\xfe]}')
        with pytest.raises(PromptError, match=expected):
            seeds_from_json(path, SHAPE)
        return
    assert expected in _refusal(tmp_path, spec)


def test_a_file_over_the_size_limit_is_refused_before_parsing(tmp_path):
    path = tmp_path / "prompts.json"
    with open(path, "wb") as fh:
        fh.truncate(MAX_PROMPTS_BYTES + 1)
    with pytest.raises(PromptError, match="more than the limit"):
        seeds_from_json(path, SHAPE)


def test_valid_prompts_read_with_every_field(tmp_path):
    spec = {
        "slices": [
            {"slice": 1, "boxes_xyxy": [BOX], "box_labels": [1],
             "points_rc": [[10, 12], [11, 13]], "point_labels": [1, 0]},
            {"slice": 3.0, "boxes_xyxy": [BOX, [30, 6, 45, 30]], "box_labels": [2, None]},
            {"slice": 4, "points_rc": [[-0.4, 49.4]]},
        ]
    }  # fmt: skip
    seeds = seeds_from_json(_write(tmp_path, spec), SHAPE)
    assert [s.slice_index for s in seeds] == [1, 3, 4]
    (combined,) = seeds[0].prompts
    assert combined.target_label == 1
    np.testing.assert_array_equal(combined.points_xy, [[12, 10], [13, 11]])
    np.testing.assert_array_equal(combined.point_labels, [1, 0])
    assert [p.target_label for p in seeds[1].prompts] == [2, None]
    np.testing.assert_array_equal(seeds[2].prompts[0].point_labels, [1])


def test_a_2d_image_needs_no_slice_index(tmp_path):
    (seed,) = seeds_from_json(_write(tmp_path, {"slices": [{"boxes_xyxy": [BOX]}]}), (40, 50))
    assert seed.slice_index == 0


def test_a_box_beyond_the_image_but_within_the_limit_is_kept_for_clipping(tmp_path):
    box = [-MAX_COORDINATE, -500, MAX_COORDINATE, 500]
    (seed,) = seeds_from_json(_write(tmp_path, _entry(boxes_xyxy=[box])), SHAPE)
    np.testing.assert_array_equal(seed.prompts[0].box_xyxy, box)


def test_refusals_name_the_entry(tmp_path):
    spec = {"slices": [{"slice": 1, "boxes_xyxy": [BOX]}, {"slice": 2, "box_labels": [7]}]}
    assert "slice entry 1 is malformed" in _refusal(tmp_path, spec)


def test_a_prompts_path_that_is_a_folder_a_loop_or_missing(tmp_path):
    with pytest.raises(PromptError, match="prompts file is a folder"):
        seeds_from_json(tmp_path, SHAPE)
    with pytest.raises(PromptError, match="prompts file not found"):
        seeds_from_json(tmp_path / "missing.json", SHAPE)
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.symlink_to(b)
    b.symlink_to(a)
    with pytest.raises(SamlungError, match="symbolic link loop"):
        seeds_from_json(a, SHAPE)
    with pytest.raises(SamlungError, match="too long for the file system"):
        seeds_from_json(tmp_path / ("p" * 300 + ".json"), SHAPE)
