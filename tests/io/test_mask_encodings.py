"""The one mask-reading rule (``io.images.mask_to_labels``), on every encoding and format.

Every stored encoding of the same two lungs must read as the same lungs, and a mask whose
values do not say which pixels are lung is refused with one line, never silently thinned
(issue 13, section 2; the table is in docs/masks.md).
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from conftest import requires_data, save_png
from napari_samlung.core.labels import LEFT_LUNG, RIGHT_LUNG
from napari_samlung.errors import SamlungError
from napari_samlung.io import read_image, read_mask
from napari_samlung.io.images import mask_to_labels

SHAPE = (64, 80)


def two_lungs(shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    """Labels with a right lung (2) on the image's left and a larger left lung (1) on its right."""
    labels = np.zeros(shape, np.uint8)
    labels[..., 8:56, 6:30] = RIGHT_LUNG
    labels[..., 6:58, 44:74] = LEFT_LUNG
    return labels


def write(path: Path, array: np.ndarray) -> Path:
    """``array`` stored by the suffix of ``path`` (NIfTI with an identity affine)."""
    name = path.name
    if name.endswith(".npy"):
        np.save(path, array)
    elif name.endswith((".nii", ".nii.gz")):
        data = array if array.ndim == 3 else array[:, :, None]
        nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    else:
        Image.fromarray(array).save(path)
    return path


def counts(labels: np.ndarray) -> tuple[int, int]:
    return int((labels == LEFT_LUNG).sum()), int((labels == RIGHT_LUNG).sum())


EXPECTED = counts(two_lungs())

# --------------------------------------------------------------------------- label maps


LABEL_ENCODINGS = {
    "uint8": np.uint8,
    "int16": np.int16,
    "uint16": np.uint16,
    "int32": np.int32,
    "float32": np.float32,
    "float64": np.float64,
}


@pytest.mark.parametrize("suffix", [".npy", ".nii.gz"])
@pytest.mark.parametrize("dtype", sorted(LABEL_ENCODINGS))
def test_labels_0_1_2_keep_both_lungs_in_every_dtype(tmp_path, suffix, dtype):
    array = two_lungs().astype(LABEL_ENCODINGS[dtype])
    labels = read_mask(write(tmp_path / f"m{suffix}", array))
    assert counts(labels) == EXPECTED


def test_float32_label_map_keeps_lung_1_the_issue_example(tmp_path):
    # lung 2 larger than lung 1: the old "half the median" rule thresholded at 1 and lost lung 1
    array = np.zeros((3, 64, 80), np.float32)
    array[:, 8:60, 4:36] = 2.0
    array[:, 20:40, 50:60] = 1.0
    labels = read_mask(write(tmp_path / "seg.nii.gz", array))
    assert counts(labels) == (3 * 20 * 10, 3 * 52 * 32)


def test_float_labels_with_rounding_noise_are_labels():
    array = two_lungs().astype(np.float32)
    array += np.float32(1e-5) * (np.arange(array.size).reshape(array.shape) % 3 - 1)
    assert counts(mask_to_labels(array)) == EXPECTED


def test_png_labels_0_1_2_and_16_bit_labels(tmp_path):
    assert counts(read_mask(save_png(tmp_path / "m.png", two_lungs()))) == EXPECTED
    sixteen = Image.fromarray(two_lungs().astype(np.uint16))
    sixteen.save(tmp_path / "m16.png")
    assert counts(read_mask(tmp_path / "m16.png")) == EXPECTED


def test_float_and_integer_label_maps_without_lung_1_read_alike():
    right_only = np.where(two_lungs() == RIGHT_LUNG, 2, 0)
    for dtype in (np.uint8, np.int16, np.float32):
        assert counts(mask_to_labels(right_only.astype(dtype))) == (0, EXPECTED[1])


# --------------------------------------------------------------------------- binary masks


@pytest.mark.parametrize(
    "value,dtype",
    [(1, np.uint8), (255, np.uint8), (3, np.uint8), (1, np.int16), (1000, np.int16),
     (1.0, np.float32), (0.5, np.float32), (255.0, np.float64), (True, bool)],
)  # fmt: skip
def test_one_foreground_value_is_one_mask_split_into_lungs(value, dtype):
    array = np.where(two_lungs() > 0, value, 0).astype(dtype)
    assert counts(mask_to_labels(array)) == EXPECTED


@pytest.mark.parametrize("suffix", [".png", ".npy", ".nii.gz"])
def test_0_255_masks_in_every_format(tmp_path, suffix):
    array = np.where(two_lungs() > 0, 255, 0).astype(np.uint8)
    path = write(tmp_path / f"m{suffix}", array)
    labels = read_mask(path)
    # placed like the image (a NIfTI is turned to radiological display), then the same rule
    stored = read_image(path).data
    np.testing.assert_array_equal(labels, mask_to_labels(stored))
    assert set(np.unique(labels)) == {0, 1, 2} and (labels > 0).sum() == sum(EXPECTED)


# --------------------------------------------------------------------------- graded masks


def _anti_aliased() -> np.ndarray:
    big = np.where(np.kron(two_lungs(), np.ones((4, 4), np.uint8)) > 0, 255, 0).astype(np.uint8)
    small = np.asarray(Image.fromarray(big).resize(SHAPE[::-1], Image.BILINEAR))
    assert len(np.unique(small)) > 3
    return small


def test_anti_aliased_png_is_thresholded_at_127(tmp_path):
    small = _anti_aliased()
    labels = read_mask(save_png(tmp_path / "aa.png", small))
    np.testing.assert_array_equal(labels > 0, small > 127)
    assert set(np.unique(labels)) == {0, 1, 2}


def test_anti_aliased_edges_at_one_low_value_are_edges_not_a_lung():
    array = np.where(two_lungs() > 0, 255, 0).astype(np.uint8)
    edge = (np.roll(array, 1, axis=1) > 0) & (array == 0)
    array[edge] = 3  # a one-pixel rim at a single low grey value
    labels = mask_to_labels(array, grey_image=True)
    np.testing.assert_array_equal(labels > 0, array == 255)


@pytest.mark.parametrize("quality", [30, 60, 95])
def test_jpeg_masks_are_read_as_binary(tmp_path, quality):
    array = np.where(np.kron(two_lungs(), np.ones((4, 4), np.uint8)) > 0, 255, 0)
    Image.fromarray(array.astype(np.uint8)).save(tmp_path / "m.jpg", quality=quality)
    labels = read_mask(tmp_path / "m.jpg")
    truth = np.kron(two_lungs(), np.ones((4, 4), np.uint8))
    assert np.mean((labels > 0) == (truth > 0)) > 0.99
    assert set(np.unique(labels)) == {0, 1, 2}


def test_float_ringing_mask_is_thresholded_at_127():
    rng = np.random.default_rng(0)
    array = np.where(two_lungs((4, *SHAPE)) > 0, 255.0, 0.0).astype(np.float32)
    array += rng.normal(0, 30, array.shape).astype(np.float32)  # -115..342-like ringing
    array[:, :, 0] = 1e-45  # denormal noise far from the lungs is not a region
    labels = mask_to_labels(array)
    np.testing.assert_array_equal(labels > 0, array > 127)


def test_soft_probability_map_is_thresholded_at_one_half():
    array = np.where(two_lungs() > 0, 0.97, 0.02).astype(np.float32)
    array[0, 0] = 0.4  # one stray pixel under the threshold: noise, not a region
    assert counts(mask_to_labels(array)) == EXPECTED


# --------------------------------------------------------------------------- multi-valued


@pytest.mark.parametrize("low,high", [(3, 255), (1, 255), (60, 255), (2, 200), (5, 1000)])
@pytest.mark.parametrize("suffix", [".png", ".npy", ".nii.gz"])
def test_a_lung_stored_under_the_threshold_is_refused_not_dropped(tmp_path, suffix, low, high):
    if suffix == ".png" and high > 255:
        pytest.skip("8-bit PNG")
    lungs = two_lungs()
    array = np.select([lungs == LEFT_LUNG, lungs == RIGHT_LUNG], [low, high], 0)
    array = array.astype(np.uint8 if high <= 255 else np.int16)
    path = write(tmp_path / f"odd_mask{suffix}", array)
    with pytest.raises(SamlungError) as err:
        read_mask(path)
    message = str(err.value)
    assert "\n" not in message and "odd_mask" in message
    assert f"mask value {low} " in message and "would be read as background" in message
    assert "0 background / 1 left lung / 2 right lung" in message


def test_float_mask_with_a_region_at_a_low_value_is_refused():
    lungs = two_lungs((2, *SHAPE))
    array = np.select([lungs == LEFT_LUNG, lungs == RIGHT_LUNG], [0.2, 1.0], 0.0)
    with pytest.raises(SamlungError, match="mask value 0.2 covers"):
        mask_to_labels(array.astype(np.float32), "m.nii.gz")


@pytest.mark.parametrize("low,high", [(200, 255), (100, 255), (0.3, 1.0)])
def test_two_values_both_above_the_threshold_are_both_lung(low, high):
    # the threshold is half the median of the values over a quarter of the top: both count
    lungs = two_lungs()
    array = np.select([lungs == LEFT_LUNG, lungs == RIGHT_LUNG], [low, high], 0)
    assert counts(mask_to_labels(array.astype(np.float32 if high == 1.0 else np.uint8))) == (
        EXPECTED
    )


@pytest.mark.parametrize("suffix", [".npy", ".nii.gz"])
def test_labels_0_to_3_are_refused_as_not_lung_labels(tmp_path, suffix):
    array = two_lungs().astype(np.int16)
    array[30:40, 32:42] = 3
    with pytest.raises(SamlungError, match=r"label values \[0, 1, 2, 3\] are not lung labels"):
        read_mask(write(tmp_path / f"m{suffix}", array))


def test_organ_labels_in_a_png_are_refused_as_multi_label(tmp_path):
    organs = np.zeros(SHAPE, np.uint8)
    for i, value in enumerate(range(10, 15)):
        organs[i * 10 : (i + 1) * 10, 4:70] = value
    with pytest.raises(SamlungError, match="multi-label image"):
        read_mask(save_png(tmp_path / "organs.png", organs))


def test_negative_integer_labels_are_refused():
    array = two_lungs().astype(np.int16)
    array[0, 0] = -1
    with pytest.raises(SamlungError, match="not lung labels"):
        mask_to_labels(array)


def test_an_all_background_mask_is_empty_labels():
    for dtype in (np.uint8, np.float32, bool):
        assert not mask_to_labels(np.zeros(SHAPE, dtype)).any()


def test_non_finite_values_in_a_float_mask_are_background():
    array = two_lungs().astype(np.float32)
    array[0, :3] = [np.nan, np.inf, -np.inf]
    assert counts(mask_to_labels(array)) == EXPECTED


# --------------------------------------------------------------------------- real data


@requires_data("ct_volumes_128")
def test_ct_volumes_128_masks_are_thresholded_at_127(data_dir: Path):
    for path in sorted((data_dir / "ct_volumes_128").glob("*-msk.nii.gz"))[:2]:
        raw = read_image(path).data
        labels = read_mask(path)
        np.testing.assert_array_equal(labels > 0, raw > 127)
        assert set(np.unique(labels)) == {0, 1, 2}


@requires_data("montgomery")
def test_montgomery_masks_are_thresholded_at_127(data_dir: Path):
    for path in sorted((data_dir / "montgomery/masks").glob("*.png"))[:3]:
        raw = np.asarray(Image.open(path).convert("L"))
        np.testing.assert_array_equal(read_mask(path) > 0, raw > 127)
