"""Reading, writing and finding images and masks, as a user would notice it."""

from __future__ import annotations

import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nibabel import orientations as nio
from PIL import Image

from conftest import raw_nifti, requires_data, save_png
from napari_samlung.core.labels import LEFT_LUNG, RIGHT_LUNG
from napari_samlung.errors import DatasetError, InputFileError, ShapeMismatchError
from napari_samlung.io import (
    MAX_VOXELS,
    Case,
    ImageData,
    find_cases,
    is_mask_path,
    looks_like_mask,
    make_phantom,
    read_image,
    read_mask,
    read_montgomery_mask,
    write_image,
    write_labels,
)
from napari_samlung.io import writers as writers_module

# --------------------------------------------------------------------------- helpers


def _save_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def _grid_affine(axcodes: str, shape_xyz: tuple[int, int, int], spacing=(2.0, 3.0, 4.0)):
    """Affine of a grid stored with ``axcodes`` that covers the same world box for any codes."""
    ornt = nio.axcodes2ornt(tuple(axcodes))
    affine = np.zeros((4, 4))
    affine[3, 3] = 1.0
    for axis, (world_axis, flip) in enumerate(ornt):
        world_axis = int(world_axis)
        affine[world_axis, axis] = flip * spacing[world_axis]
        n = shape_xyz[world_axis]
        # world coordinate of index 0 so that every grid spans [0, (n-1)*spacing]
        affine[world_axis, 3] = 0.0 if flip > 0 else (n - 1) * spacing[world_axis]
    return affine


def _world_phantom(world_xyz: np.ndarray) -> np.ndarray:
    """Asymmetric test object defined in RAS world mm: a marker at patient's right/anterior/top."""
    x, y, z = world_xyz
    values = np.zeros(x.shape, np.int16)
    values[x > 30] = 10  # patient's right half (RAS: +x is Right)
    values[(x > 30) & (y > 40) & (z > 20)] = 100  # right, anterior, superior corner
    values[(x < 10) & (y < 10)] = 50  # patient's left, posterior
    return values


def _sample(axcodes: str, box_shape_xyz=(20, 18, 8)) -> tuple[np.ndarray, np.ndarray]:
    ornt = nio.axcodes2ornt(tuple(axcodes))
    stored_shape = tuple(box_shape_xyz[int(world_axis)] for world_axis, _ in ornt)
    affine = _grid_affine(axcodes, box_shape_xyz)
    idx = np.indices(stored_shape).reshape(3, -1)
    world = (affine @ np.vstack([idx, np.ones(idx.shape[1])]))[:3]
    return _world_phantom(world).reshape(stored_shape), affine


# --------------------------------------------------------------------------- NIfTI


@requires_data("nifti_examples")
@requires_data("ct_volumes_128")
@pytest.mark.parametrize(
    "name", ["nifti_examples/example_ct_sm.nii.gz", "ct_volumes_128/id001-128x128x64.nii.gz"]
)
def test_nifti_mask_round_trip_lands_on_source_grid(data_dir: Path, tmp_path: Path, name: str):
    source = data_dir / name
    image = read_image(source)
    assert image.modality == "ct" and image.data.ndim == 3
    labels = np.zeros(image.data.shape, np.uint8)
    labels[image.data > -300] = 1
    labels[:, :, : image.data.shape[2] // 3] *= 2  # asymmetric: image's left third -> 2

    out = write_labels(tmp_path / "mask.nii.gz", labels, like=image)

    written, original = nib.load(str(out)), nib.load(str(source))
    np.testing.assert_allclose(written.affine, original.affine)
    assert written.shape == original.shape
    assert written.get_data_dtype() == np.uint8
    stored_labels = np.asanyarray(written.dataobj)
    # In the source's own voxel order: body where the source is > -300 HU.
    np.testing.assert_array_equal(stored_labels > 0, np.asanyarray(original.dataobj) > -300)
    np.testing.assert_array_equal(read_mask(out, like=image), labels)


@requires_data("ct_volumes_128")
def test_ct_volume_spacing_axes_and_anatomy(data_dir: Path):
    image = read_image(data_dir / "ct_volumes_128/id001-128x128x64.nii.gz")  # stored L,A,S
    assert image.data.shape == (64, 128, 128)
    np.testing.assert_allclose(image.spacing_zyx_mm, (5.0, 3.0078, 3.0078), atol=1e-3)
    # our affine maps (slice, row, col) -> world: slices go superior, rows posterior, cols left
    assert nib.aff2axcodes(image.affine) == ("S", "P", "L")
    bone_rows = np.nonzero(image.data > 300)[1]
    assert bone_rows.mean() > 64  # the spine is posterior: in the lower half of the image


@requires_data("ct_volumes_128")
def test_ct_volume_float_mask_with_ringing_becomes_aligned_lung_labels(data_dir: Path):
    folder = data_dir / "ct_volumes_128"
    image = read_image(folder / "id002-128x128x64.nii.gz")
    labels = read_mask(folder / "id002-128x128x64-msk.nii.gz", like=image)
    assert labels.dtype == np.uint8 and set(np.unique(labels)) == {0, 1, 2}
    assert image.data[labels > 0].mean() < -600  # lung voxels are air-like
    cols = np.indices(labels.shape)[2]
    assert cols[labels == LEFT_LUNG].mean() > cols[labels == RIGHT_LUNG].mean()


ORIENTATIONS = ["RAS", "LAS", "LPS", "LPI", "ASR", "SRP", "PIL"]


@pytest.mark.parametrize("axcodes", ORIENTATIONS)
def test_any_stored_orientation_reads_as_radiological_display(tmp_path: Path, axcodes: str):
    reference_data, reference_affine = _sample("RAS")
    reference = read_image(_save_nifti(tmp_path / "ras.nii.gz", reference_data, reference_affine))
    data, affine = _sample(axcodes)
    image = read_image(_save_nifti(tmp_path / f"{axcodes}.nii.gz", data, affine))

    np.testing.assert_array_equal(image.data, reference.data)
    np.testing.assert_allclose(image.affine, reference.affine, atol=1e-6)
    np.testing.assert_allclose(image.spacing_zyx_mm, (4.0, 3.0, 2.0))
    n_slices, n_rows, n_cols = image.data.shape
    assert (n_slices, n_rows, n_cols) == (8, 18, 20)
    # Patient's right (value 10/100) is on the image's LEFT (low columns) ...
    right_cols = np.nonzero(np.isin(image.data, (10, 100)))[2]
    assert right_cols.max() < n_cols / 2
    # ... the right-anterior-superior marker is at the top (low rows) in the last slices.
    z, r, c = np.nonzero(image.data == 100)
    assert r.max() < n_rows / 2 and z.min() > n_slices / 2 and c.max() < n_cols / 2
    # Left-posterior marker: image's right, bottom.
    _, r, c = np.nonzero(image.data == 50)
    assert r.min() > n_rows / 2 and c.min() > n_cols / 2


@pytest.mark.parametrize("axcodes", ["LAS", "ASR"])
def test_mask_written_back_in_source_orientation(tmp_path: Path, axcodes: str):
    data, affine = _sample(axcodes)
    source = _save_nifti(tmp_path / "ct.nii.gz", data, affine)
    image = read_image(source)
    labels = (image.data == 100).astype(np.uint8)
    out = write_labels(tmp_path / "out.nii.gz", labels, like=image)
    written = nib.load(str(out))
    assert nib.aff2axcodes(written.affine) == tuple(axcodes)
    np.testing.assert_array_equal(np.asanyarray(written.dataobj), (data == 100).astype(np.uint8))


def test_mask_in_other_orientation_same_grid_is_accepted_other_space_refused(tmp_path: Path):
    image_data, image_affine = _sample("RAS")
    image = read_image(_save_nifti(tmp_path / "ct.nii.gz", image_data, image_affine))
    mask_data, mask_affine = _sample("LPS")
    mask_file = _save_nifti(
        tmp_path / "m_mask.nii.gz", (mask_data > 0).astype(np.uint8), mask_affine
    )
    assert read_mask(mask_file, like=image).shape == image.data.shape

    shifted = image_affine.copy()
    shifted[0, 3] += 15.0
    moved = _save_nifti(tmp_path / "moved_mask.nii.gz", (image_data > 0).astype(np.uint8), shifted)
    with pytest.raises(ShapeMismatchError, match="different orientation/space.*resample"):
        read_mask(moved, like=image)


def test_mask_shape_mismatch_names_both_files(tmp_path: Path):
    image = read_image(
        _save_nifti(tmp_path / "ct.nii.gz", np.zeros((6, 5, 4), np.int16), np.eye(4))
    )
    mask = _save_nifti(tmp_path / "small_mask.nii.gz", np.ones((6, 5, 3), np.uint8), np.eye(4))
    with pytest.raises(ShapeMismatchError) as err:
        read_mask(mask, like=image)
    message = str(err.value)
    assert "small_mask.nii.gz" in message and "ct.nii.gz" in message and "\n" not in message


def test_4d_2d_and_5d_nifti(tmp_path: Path):
    one_volume = _save_nifti(tmp_path / "t1.nii.gz", np.ones((4, 5, 6, 1), np.int16), np.eye(4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_image(one_volume).data.shape == (6, 5, 4)

    series = np.zeros((4, 5, 6, 3), np.int16)
    series[..., 0] = 7
    with pytest.warns(UserWarning, match="first volume"):
        image = read_image(_save_nifti(tmp_path / "t3.nii.gz", series, np.eye(4)))
    assert image.data.shape == (6, 5, 4) and np.all(image.data == 7)

    flat = read_image(_save_nifti(tmp_path / "flat.nii.gz", np.ones((4, 5), np.int16), np.eye(4)))
    assert flat.data.shape == (1, 5, 4)
    out = write_labels(tmp_path / "flat_mask.nii.gz", np.ones((5, 4), np.uint8), like=flat)
    assert nib.load(str(out)).shape == (4, 5)

    five = _save_nifti(tmp_path / "v.nii.gz", np.zeros((3, 3, 3, 2, 2), np.int16), np.eye(4))
    with pytest.raises(InputFileError, match="v.nii.gz.*not supported"):
        read_image(five)


def test_nan_voxels_are_replaced_by_the_minimum_with_a_warning(tmp_path: Path):
    data = np.full((3, 4, 5), 20.0, np.float32)
    data[0, 0, 0], data[1, 1, 1], data[2, 2, 2] = np.nan, np.inf, -100.0
    with pytest.warns(UserWarning, match="2 NaN/Inf voxels"):
        image = read_image(_save_nifti(tmp_path / "nan.nii.gz", data, np.eye(4)))
    assert np.isfinite(image.data).all() and image.data.min() == -100.0
    assert np.count_nonzero(image.data == -100.0) == 3


def test_zero_spacing_in_header_falls_back_to_the_affine_with_a_warning(tmp_path: Path):
    srow = np.array([[2.0, 0, 0, 0], [0, 3.0, 0, 0], [0, 0, 4.0, 0]])
    path = raw_nifti(tmp_path / "zero.nii", np.zeros((3, 4, 5), np.int16), (0.0, 3, 4), srow)
    with pytest.warns(UserWarning, match="disagrees with the affine"):
        image = read_image(path)
    np.testing.assert_allclose(image.spacing_zyx_mm, (4.0, 3.0, 2.0))


# --------------------------------------------------------------------------- errors


def _write(path: Path, content: bytes | str) -> Path:
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def _npy(path: Path, array: np.ndarray) -> Path:
    np.save(path, array)
    return path


def _truncated_gz(tmp_path: Path) -> Path:
    data = np.random.default_rng(0).integers(-1000, 1000, (40, 40, 40), dtype=np.int16)
    full = _save_nifti(tmp_path / "full.nii.gz", data, np.eye(4))
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    return cut


ERROR_CASES = {
    "missing": (lambda t: t / "nothere.nii.gz", "not found"),
    "empty": (lambda t: _write(t / "empty.png", b""), "empty"),
    "truncated_gz": (_truncated_gz, "truncated or corrupt"),
    "not_gzip": (
        lambda t: _write(t / "junk.nii.gz", b"\x1f\x8b garbage" * 50),
        "not a readable NIfTI",
    ),
    "text_png": (
        lambda t: _write(t / "notes.png", "this is text\n"),
        "not a PNG/JPEG",
    ),
    "nan_spacing": (
        lambda t: raw_nifti(t / "nanspacing.nii", np.zeros((3, 3, 3), np.int16), (np.nan, 1, 1)),
        "invalid voxel spacing",
    ),
    "singular_affine": (
        lambda t: raw_nifti(
            t / "singular.nii",
            np.zeros((3, 3, 3), np.int16),
            (0.0, 1.0, 1.0),
            srow=np.array([[0.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]),
        ),
        "singular",
    ),
    "too_many_voxels": (
        lambda t: raw_nifti(
            t / "huge.nii",
            np.zeros((2, 2, 2), np.int16),
            shape=(8192, 8192, MAX_VOXELS // 2**26 + 1),
        ),
        "more than the limit",
    ),
    "dimension_too_large": (
        lambda t: raw_nifti(t / "wide.nii", np.zeros((2, 2, 2), np.int16), shape=(9000, 2, 2)),
        "over 8192",
    ),
    "unknown_suffix": (
        lambda t: _write(t / "scan.dcm", b"DICM"),
        r"\.nii\.gz, \.nii, \.png",
    ),
    "pickled_npy": (
        lambda t: _npy(t / "obj.npy", np.array([{"a": 1}], dtype=object)),
        "obj.npy",
    ),
    "npy_4d": (
        lambda t: _npy(t / "four.npy", np.zeros((2, 2, 2, 2))),
        "not supported",
    ),
}


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_bad_files_raise_one_line_input_file_error_naming_the_file(tmp_path: Path, case: str):
    make, expected = ERROR_CASES[case]
    path = make(tmp_path)
    with pytest.raises(InputFileError, match=expected) as err:
        read_image(path)
    message = str(err.value)
    assert path.name in message and "\n" not in message and ";" in message


# --------------------------------------------------------------------------- X-rays


@requires_data("montgomery")
def test_montgomery_xray_and_merged_mask_split_into_lungs(data_dir: Path):
    image = read_image(data_dir / "montgomery/images/MCUCXR_0001_0.png")
    assert image.modality == "xray" and image.data.dtype == np.uint8
    assert image.data.shape == (512, 512) and image.spacing_zyx_mm == (1.0, 1.0)
    assert image.affine is None
    labels = read_mask(data_dir / "montgomery/masks/MCUCXR_0001_0.png", like=image)
    assert set(np.unique(labels)) == {0, 1, 2}
    cols = np.indices(labels.shape)[1]
    # patient's left lung (1) is on the image's right
    assert cols[labels == LEFT_LUNG].mean() > 256 > cols[labels == RIGHT_LUNG].mean()


def test_montgomery_original_left_right_masks_merge(tmp_path: Path):
    left = np.zeros((20, 30), np.uint8)
    left[5:15, 18:26] = 255  # patient's left lung: image's right
    right = np.zeros((20, 30), np.uint8)
    right[4:16, 3:12] = 255
    labels = read_montgomery_mask(
        save_png(tmp_path / "l.png", left), save_png(tmp_path / "r.png", right)
    )
    assert labels.dtype == np.uint8
    assert np.all(labels[left > 0] == LEFT_LUNG) and np.all(labels[right > 0] == RIGHT_LUNG)
    assert np.count_nonzero(labels) == np.count_nonzero(left) + np.count_nonzero(right)
    with pytest.raises(ShapeMismatchError, match="l.png"):
        read_montgomery_mask(tmp_path / "l.png", save_png(tmp_path / "s.png", right[:10]))


def test_16bit_png_is_min_max_scaled_to_uint8(tmp_path: Path):
    ramp = np.linspace(1000, 41000, 64 * 32).astype(np.uint16).reshape(32, 64)
    image = read_image(save_png(tmp_path / "xray16.png", ramp))
    assert image.data.dtype == np.uint8 and image.data.shape == (32, 64)
    assert image.data.min() == 0 and image.data.max() == 255
    assert np.all(np.diff(image.data.ravel().astype(int)) >= 0)  # monotone


def test_rgb_and_rgba_png_become_gray_and_alpha_is_dropped(tmp_path: Path):
    rgb = np.zeros((8, 10, 3), np.uint8)
    rgb[:, :5] = (255, 255, 255)
    rgb[:, 5:] = (0, 0, 255)
    gray_expected = np.asarray(Image.fromarray(rgb).convert("L"))
    assert np.array_equal(read_image(save_png(tmp_path / "rgb.png", rgb)).data, gray_expected)

    rgba = np.dstack([rgb, np.zeros((8, 10), np.uint8)])  # fully transparent
    data = read_image(save_png(tmp_path / "rgba.png", rgba)).data
    assert data.dtype == np.uint8 and data.shape == (8, 10)
    np.testing.assert_array_equal(data, gray_expected)

    jpeg = tmp_path / "x.jpg"
    Image.fromarray(rgb).save(jpeg, quality=95)
    assert read_image(jpeg).data.shape == (8, 10)


# --------------------------------------------------------------------------- .npy


@requires_data("covid19_ct_slices")
def test_covid_npy_slices(data_dir: Path):
    folder = data_dir / "covid19_ct_slices"
    ct = read_image(folder / "coronacases_001_image_slice_110.npy")
    assert ct.modality == "ct" and ct.data.dtype == np.int16 and ct.data.shape == (512, 512)
    assert ct.data.min() == -1021
    labels = read_mask(folder / "coronacases_001_masks_slice_110.npy", like=ct)
    assert labels.dtype == np.uint8 and set(np.unique(labels)) == {0, 1, 2}
    assert ct.data[labels > 0].mean() < -500
    windowed = read_image(folder / "radiopaedia_14_85914_0_image_slice_0.npy")
    assert windowed.data.dtype == np.uint8 and windowed.data.shape == (630, 401)
    assert windowed.meta["windowed"] is True


def test_3d_npy_is_a_volume(tmp_path: Path):
    volume = np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4)
    np.save(tmp_path / "vol.npy", volume)
    image = read_image(tmp_path / "vol.npy")
    np.testing.assert_array_equal(image.data, volume)
    assert image.spacing_zyx_mm == (1.0, 1.0, 1.0)


def test_mask_name_and_content_detection():
    for name in ["id001-128x128x64-msk.nii.gz", "case_seg.nii", "x_mask.png", "a-label.png",
                 "coronacases_001_masks_slice_110.npy", "ManualMask/leftMask/MCUCXR_0001_0.png",
                 "montgomery/masks/MCUCXR_0001_0.png", "CASE_MASK.PNG"]:  # fmt: skip
        assert is_mask_path(name), name
    for name in ["coronacases_001_image_slice_110.npy", "segment.png", "Maskell.png",
                 "images/x.png", "example_ct_sm.nii.gz"]:  # fmt: skip
        assert not is_mask_path(name), name
    assert looks_like_mask(np.array([0, 1, 2], np.uint16))
    assert looks_like_mask(np.array([True, False]))
    assert not looks_like_mask(np.array([0.0, 1.0]))
    assert not looks_like_mask(np.arange(10))


# --------------------------------------------------------------------------- writers


def test_writer_refuses_overwrite_and_overwrites_when_asked(tmp_path: Path):
    labels = np.zeros((4, 5), np.uint8)
    target = write_labels(tmp_path / "m.png", labels)
    with pytest.raises(InputFileError, match=r"m\.png exists; pass --overwrite"):
        write_labels(target, labels + 1)
    write_labels(target, labels + 1, overwrite=True)
    assert np.all(np.asarray(Image.open(target)) == 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.png"]  # no temp files left


def test_writer_is_atomic_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    target = tmp_path / "m.nii.gz"
    write_labels(target, np.ones((2, 3, 4), np.uint8))
    before = target.read_bytes()

    def broken_save(image, filename):
        Path(filename).write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writers_module.nib, "save", broken_save)
    with pytest.raises(InputFileError, match="cannot write"):
        write_labels(target, np.zeros((2, 3, 4), np.uint8), overwrite=True)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.nii.gz"]


def test_png_labels_values_as_is_or_scaled_for_display(tmp_path: Path):
    labels = np.array([[0, 1, 2]], np.uint8)
    raw = write_labels(tmp_path / "raw.png", labels)
    shown = write_labels(tmp_path / "shown.png", labels, scale_for_display=True)
    assert np.asarray(Image.open(raw)).tolist() == [[0, 1, 2]]
    assert np.asarray(Image.open(shown)).tolist() == [[0, 127, 254]]
    with pytest.raises(ShapeMismatchError, match="2D"):
        write_labels(tmp_path / "vol.png", np.zeros((2, 3, 3), np.uint8))
    with pytest.raises(InputFileError, match="cannot write this file type"):
        write_labels(tmp_path / "m.tif", labels)


# --------------------------------------------------------------------------- phantom


def test_phantom_is_deterministic_asymmetric_and_round_trips(tmp_path: Path):
    image, labels = make_phantom()
    again, labels_again = make_phantom()
    np.testing.assert_array_equal(image.data, again.data)
    np.testing.assert_array_equal(labels, labels_again)
    assert not np.array_equal(make_phantom(seed=1)[0].data, image.data)
    assert image.data.dtype == np.int16 and image.data.shape == (24, 128, 128)
    assert labels.dtype == np.uint8 and set(np.unique(labels)) == {0, 1, 2}

    cols = np.indices(labels.shape)[2]
    assert cols[labels == LEFT_LUNG].mean() > 64 > cols[labels == RIGHT_LUNG].mean()
    assert np.count_nonzero(labels == RIGHT_LUNG) > np.count_nonzero(labels == LEFT_LUNG)
    lung_slices = np.nonzero(labels.any(axis=(1, 2)))[0]
    assert lung_slices.min() > 0 and lung_slices.max() < labels.shape[0] - 1
    assert image.data[labels > 0].mean() < -700 and image.data[0, 0, 0] < -900

    written = write_image(tmp_path / "phantom.nii.gz", image)
    back = read_image(written)
    np.testing.assert_array_equal(back.data, image.data)
    np.testing.assert_allclose(back.affine, image.affine, atol=1e-4)
    np.testing.assert_allclose(back.spacing_zyx_mm, image.spacing_zyx_mm)
    mask_file = write_labels(tmp_path / "phantom_mask.nii.gz", labels, like=image)
    np.testing.assert_array_equal(read_mask(mask_file, like=back), labels)
    assert nib.aff2axcodes(nib.load(str(written)).affine) == ("R", "A", "S")


# --------------------------------------------------------------------------- datasets


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


def test_image_data_is_a_plain_dataclass():
    image = ImageData(np.zeros((2, 2)), (1.0, 1.0), None, None, "xray", {})
    assert not image.is_volume


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_written_nifti_suffixes(tmp_path: Path, suffix: str):
    path = write_labels(tmp_path / f"m{suffix}", np.ones((2, 3, 4), np.uint8))
    with open(path, "rb") as fh:
        is_gzip = fh.read(2) == b"\x1f\x8b"
    assert is_gzip == (suffix == ".nii.gz")
    np.testing.assert_array_equal(read_image(path).data, np.ones((2, 3, 4), np.uint8))
