"""``pipeline.cases``: one case loaded, segmented from its ground truth and scored."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pipeline_data import MICRO, SHAPE, lung_slices, write_phantoms

from napari_samlung.errors import DatasetError
from napari_samlung.io import Case, find_cases, load_case
from napari_samlung.pipeline.cases import (
    evaluate_case,
    failed_case,
    mask_targets,
    nothing_scored,
    output_name,
)


@pytest.fixture(scope="module")
def segmenter():
    return MICRO.make_segmenter()


@pytest.fixture
def case(tmp_path) -> Case:
    cases, problems = find_cases(write_phantoms(tmp_path / "data", names=("case_a",)))
    assert problems == []
    return cases[0]


def test_evaluate_case_scores_every_slice_with_lung(case, segmenter):
    _, truth = load_case(case)
    res = evaluate_case(segmenter, case, MICRO)
    assert res.error is None and res.name == "case_a"
    assert res.labels.shape == SHAPE and res.labels.dtype == np.uint8
    assert set(np.unique(res.labels)) <= {0, 1, 2}
    assert [s.slice_index for s in res.scores] == lung_slices(truth)
    assert all(s.case == "case_a" and 0.0 <= s.dice <= 1.0 for s in res.scores)
    assert res.skipped_empty == SHAPE[0] - len(lung_slices(truth))
    assert res.image is not None and res.image.data.shape == SHAPE
    assert res.image_path == case.image_path and res.seconds > 0
    assert nothing_scored(res) == []


def test_evaluate_case_reports_progress_and_stops_when_cancelled(case, segmenter):
    seen = []

    def progress(done: int, total: int) -> None:
        seen.append((done, total))

    res = evaluate_case(segmenter, case, MICRO, progress=progress, should_cancel=lambda: True)
    assert len(res.scores) == 1 and len(seen) == 1
    done, total = seen[0]
    assert done == 1 and total > 1


def test_a_case_without_a_mask_is_refused(case, segmenter):
    with pytest.raises(DatasetError, match="case_a has no mask to score against"):
        evaluate_case(segmenter, Case("case_a", case.image_path, None), MICRO)


def test_a_failed_case_carries_its_error_and_nothing_else():
    res = failed_case(Case("x", Path("x.png"), Path("x_mask.png")), "broken")
    assert (res.name, res.error, res.scores, res.image) == ("x", "broken", [], None)
    assert nothing_scored(res) == [
        "x: the mask has no lung on any of its 0 slices, so nothing was scored; check "
        "that it is the lung mask of this image"
    ]


@pytest.mark.parametrize(
    ("image", "name", "targets"),
    [
        ("scan.nii.gz", "scan_samlung.nii.gz", ["scan_samlung.nii.gz"]),
        ("chest.jpg", "chest_samlung.png", ["chest_samlung.png"]),
        ("slice.npy", "slice_samlung.nii.gz", ["slice_samlung.png", "slice_samlung.nii.gz"]),
    ],
)
def test_predicted_mask_names(tmp_path, image, name, targets):
    case = Case("c", tmp_path / image, None)
    assert output_name(case) == name
    assert output_name(case, ".png") == f"{Path(name).name.split('_samlung')[0]}_samlung.png"
    assert mask_targets(tmp_path, case) == [tmp_path / t for t in targets]
