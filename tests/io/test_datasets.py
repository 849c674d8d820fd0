"""Finding image/mask cases in dataset layouts, and loading one (io.datasets)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import requires_data, save_png
from napari_samlung.core.labels import LEFT_LUNG, RIGHT_LUNG
from napari_samlung.errors import DatasetError, InputFileError, ShapeMismatchError
from napari_samlung.io import (
    Case,
    find_cases,
    load_case,
    make_phantom,
    write_image,
    write_labels,
)


def _touch(path: Path, content: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def test_find_cases_two_files_and_two_folders(tmp_path: Path):
    image, mask = _touch(tmp_path / "a.nii.gz"), _touch(tmp_path / "a_seg.nii.gz")
    assert find_cases(image, mask) == ([Case("a", image, mask)], [])

    for stem in ["p1", "p2", "p3"]:
        _touch(tmp_path / "imgs" / f"{stem}.nii.gz")
    _touch(tmp_path / "lbl" / "p1_mask.nii.gz")
    _touch(tmp_path / "lbl" / "p2-msk.nii.gz")
    _touch(tmp_path / "lbl" / "p9_label.nii.gz")
    _touch(tmp_path / "lbl" / "notes.txt")
    cases, problems = find_cases(tmp_path / "imgs", tmp_path / "lbl")
    assert [(c.name, c.mask_path.name if c.mask_path else None) for c in cases] == [
        ("p1", "p1_mask.nii.gz"),
        ("p2", "p2-msk.nii.gz"),
        ("p3", None),
    ]
    assert len(problems) == 3
    assert any("p3.nii.gz" in p and "no matching mask" in p for p in problems)
    assert any("p9_label.nii.gz" in p and "no matching image" in p for p in problems)
    assert any("notes.txt" in p and "skipped" in p for p in problems)


def test_find_cases_known_root_layouts(tmp_path: Path):
    covid = tmp_path / "covid"
    for n in ["coronacases_001", "radiopaedia_4_85506_1"]:
        _touch(covid / "COVID-19-CT-Seg_20cases" / f"{n}.nii.gz")
        _touch(covid / "Lung_Mask" / f"{n}.nii.gz")
    cases, problems = find_cases(covid)
    assert [c.name for c in cases] == ["coronacases_001", "radiopaedia_4_85506_1"]
    assert all(c.mask_path.parent.name == "Lung_Mask" for c in cases) and problems == []

    mont = tmp_path / "MontgomerySet"
    for n in ["MCUCXR_0001_0", "MCUCXR_0002_0"]:
        _touch(mont / "CXR_png" / f"{n}.png")
        _touch(mont / "ManualMask" / "leftMask" / f"{n}.png")
    _touch(mont / "ManualMask" / "rightMask" / "MCUCXR_0001_0.png")
    _touch(mont / "CXR_png" / "Thumbs.db")
    cases, problems = find_cases(mont)
    assert len(cases) == 1
    assert cases[0].mask_path.parent.name == "leftMask"
    assert cases[0].right_mask_path.parent.name == "rightMask"
    assert any("MCUCXR_0002_0" in p and "rightMask" in p for p in problems)
    assert any("Thumbs.db" in p for p in problems)

    flat = tmp_path / "flat"
    _touch(flat / "images" / "x1.png"), _touch(flat / "labels" / "x1.png")
    _touch(flat / "images" / "x2.png"), _touch(flat / "images" / "x2.jpg")
    cases, problems = find_cases(flat)
    assert [c.name for c in cases] == ["x1", "x2"]
    assert cases[0].mask_path == flat / "labels" / "x1.png"
    assert any("duplicate" in p for p in problems)

    mixed = tmp_path / "mixed"
    _touch(mixed / "c_001_image_slice_7.npy"), _touch(mixed / "c_001_masks_slice_7.npy")
    cases, problems = find_cases(mixed)
    assert cases == [Case("c_001_image_slice_7", mixed / "c_001_image_slice_7.npy",
                          mixed / "c_001_masks_slice_7.npy")]  # fmt: skip
    assert problems == []


def test_find_cases_without_any_case_raises_dataset_error(tmp_path: Path):
    _touch(tmp_path / "empty" / "readme.txt")
    with pytest.raises(DatasetError, match="empty.*COVID-19-CT-Seg_20cases"):
        find_cases(tmp_path / "empty")
    with pytest.raises(InputFileError, match="not found"):
        find_cases(tmp_path / "nowhere")


@requires_data("montgomery")
@requires_data("covid19_ct_slices")
@requires_data("ct_volumes_128")
def test_find_cases_on_real_folders(data_dir: Path):
    cases, problems = find_cases(data_dir / "montgomery")
    assert len(cases) == 138 and problems == []
    assert all(c.mask_path is not None and c.mask_path.name == c.image_path.name for c in cases)

    cases, problems = find_cases(data_dir / "covid19_ct_slices")
    assert len(cases) == 5 and problems == []
    assert all(c.mask_path.name == c.image_path.name.replace("_image_", "_masks_") for c in cases)

    cases, _ = find_cases(data_dir / "ct_volumes_128")
    assert len(cases) == 4 and all(c.mask_path.name.endswith("-msk.nii.gz") for c in cases)


def test_load_case_reads_image_and_labels_on_its_grid(tmp_path: Path):
    image, labels = make_phantom((6, 32, 32))
    image_path = write_image(tmp_path / "p.nii.gz", image)
    mask_path = write_labels(tmp_path / "p_mask.nii.gz", labels, like=image)
    (case,), _ = find_cases(tmp_path)
    assert case == Case("p", image_path, mask_path)
    read, truth = load_case(case)
    np.testing.assert_array_equal(read.data, image.data)
    np.testing.assert_array_equal(truth, labels)
    read, truth = load_case(Case("p", image_path, None))
    assert truth is None and read.data.shape == image.data.shape


def test_load_case_merges_montgomery_left_and_right_masks(tmp_path: Path):
    xray = np.full((20, 30), 90, np.uint8)
    left, right = np.zeros((20, 30), np.uint8), np.zeros((20, 30), np.uint8)
    left[5:15, 18:26], right[4:16, 3:12] = 255, 255
    root = tmp_path / "MontgomerySet"
    (root / "ManualMask" / "leftMask").mkdir(parents=True)
    (root / "ManualMask" / "rightMask").mkdir()
    (root / "CXR_png").mkdir()
    save_png(root / "CXR_png" / "M_1.png", xray)
    save_png(root / "ManualMask" / "leftMask" / "M_1.png", left)
    save_png(root / "ManualMask" / "rightMask" / "M_1.png", right)
    (case,), problems = find_cases(root)
    image, labels = load_case(case)
    assert problems == [] and image.modality == "xray"
    assert np.all(labels[left > 0] == LEFT_LUNG) and np.all(labels[right > 0] == RIGHT_LUNG)


def test_load_case_refuses_a_mask_of_another_image(tmp_path: Path):
    image, labels = make_phantom((6, 32, 32))
    image_path = write_image(tmp_path / "p.nii.gz", image)
    mask_path = write_labels(tmp_path / "q_mask.nii.gz", labels[:, :16])
    with pytest.raises(ShapeMismatchError, match="q_mask.nii.gz"):
        load_case(Case("p", image_path, mask_path))
