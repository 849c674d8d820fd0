"""npe2 reader, writers, sample data and manifest (no viewer needed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from napari_fixtures import DATA_DIR

from napari_samlung._napari import sample_data
from napari_samlung._napari.layers import like_from_metadata, placement
from napari_samlung._napari.reader import get_reader, is_dataset_folder
from napari_samlung._napari.writer import write_nifti_labels, write_png_labels
from napari_samlung.errors import WeightsUnavailableError
from napari_samlung.io import read_image, read_mask, write_image, write_labels
from napari_samlung.io.phantom import PHANTOM_SPACING_ZYX_MM, make_phantom


def _layers(path):
    reader = get_reader(str(path))
    assert reader is not None, f"no reader for {path}"
    return reader(str(path))


@pytest.fixture
def phantom_files(tmp_path):
    image, labels = make_phantom((10, 48, 40))
    image_path = write_image(tmp_path / "chest.nii.gz", image)
    mask_path = write_labels(tmp_path / "chest_mask.nii.gz", labels, like=image)
    return image, labels, image_path, mask_path


def test_reader_image_and_mask_are_placed_alike(phantom_files):
    image, labels, image_path, mask_path = phantom_files
    [(data, kwargs, kind)] = _layers(image_path)
    assert kind == "image"
    np.testing.assert_array_equal(data, image.data)
    assert kwargs["scale"] == PHANTOM_SPACING_ZYX_MM
    assert kwargs["contrast_limits"] == (-1350.0, 150.0)  # the lung window
    [(mask, mask_kwargs, mask_kind)] = _layers(mask_path)
    assert mask_kind == "labels"
    np.testing.assert_array_equal(mask, labels)
    assert mask_kwargs["scale"] == kwargs["scale"]
    np.testing.assert_allclose(mask_kwargs["translate"], kwargs["translate"])
    assert mask_kwargs["metadata"]["samlung"]["role"] == "ground_truth"


def test_reader_mask_detection(tmp_path):
    """A folder name with 'mask' in it does not turn a CT into a mask."""
    folder = tmp_path / "images_and_masks"
    folder.mkdir()
    image, labels = make_phantom((4, 16, 16))
    write_image(folder / "ct.nii.gz", image)
    assert _layers(folder / "ct.nii.gz")[0][2] == "image"
    write_labels(folder / "ct_unnamed.nii.gz", labels, like=image)  # few values: a mask
    assert _layers(folder / "ct_unnamed.nii.gz")[0][2] == "labels"


def test_reader_declines_what_it_cannot_read(tmp_path):
    assert get_reader(str(tmp_path / "missing.nii.gz")) is None
    (tmp_path / "broken.nii.gz").write_bytes(b"not a nifti at all")
    assert get_reader(str(tmp_path / "broken.nii.gz")) is None
    (tmp_path / "notes.txt").write_text("hello")
    assert get_reader(str(tmp_path / "notes.txt")) is None
    (tmp_path / "plain").mkdir()
    assert get_reader(str(tmp_path / "plain")) is None
    np.save(tmp_path / "four_d.npy", np.zeros((2, 2, 2, 2)))
    assert get_reader(str(tmp_path / "four_d.npy")) is None


def test_a_file_named_like_an_image_that_is_not_one_gets_our_reason(tmp_path, monkeypatch):
    """Not only napari's generic "Reader ... refused the file": the file and the problem."""
    shown = []
    monkeypatch.setattr(
        "napari.utils.notifications.show_warning", lambda msg: shown.append(str(msg))
    )
    fake = tmp_path / "xray.png"
    fake.write_text("this is a text file, not a picture")
    assert get_reader(str(fake)) is None
    assert len(shown) == 1 and "xray.png" in shown[0]
    (tmp_path / "notes.txt").write_text("hello")
    assert get_reader(str(tmp_path / "notes.txt")) is None  # not named like ours: silent
    assert len(shown) == 1


def test_reader_npy_and_png(tmp_path):
    ct = (np.arange(600).reshape(30, 20) - 900).astype(np.int16)
    np.save(tmp_path / "slice.npy", ct)
    [(data, kwargs, kind)] = _layers(tmp_path / "slice.npy")
    assert kind == "image" and data.dtype == np.int16
    assert kwargs["contrast_limits"] == (-1350.0, 150.0)
    mask = np.zeros((30, 20), np.uint8)
    mask[5:20, 2:8] = 2
    mask[5:20, 12:18] = 1
    write_labels(tmp_path / "slice_mask.png", mask)
    [(labels, _, kind)] = _layers(tmp_path / "slice_mask.png")
    assert kind == "labels"
    np.testing.assert_array_equal(labels, mask)


def test_writer_round_trip_keeps_source_grid(phantom_files, tmp_path):
    image, labels, image_path, _ = phantom_files
    [(_, kwargs, _)] = _layers(image_path)
    attributes = {"metadata": kwargs["metadata"], "scale": kwargs["scale"]}
    out = tmp_path / "out" / "pred.nii.gz"
    out.parent.mkdir()
    assert write_nifti_labels(str(out), labels, attributes) == [str(out)]
    back = read_mask(out, like=read_image(image_path))  # same grid, or it raises
    np.testing.assert_array_equal(back, labels)
    [(_, back_kwargs, kind)] = _layers(out)
    assert kind == "labels"
    assert back_kwargs["scale"] == kwargs["scale"]
    np.testing.assert_allclose(back_kwargs["translate"], kwargs["translate"])
    # napari asks before replacing: the writer overwrites
    assert write_nifti_labels(str(out), np.zeros_like(labels), attributes) == [str(out)]


def test_writer_without_metadata_uses_layer_scale(tmp_path):
    labels = np.zeros((4, 16, 12), np.uint8)
    labels[1:3, 4:9, 3:7] = 1
    out = tmp_path / "plain.nii.gz"
    write_nifti_labels(str(out), labels, {"metadata": {}, "scale": (3.0, 0.5, 0.7)})
    back = read_image(out)
    np.testing.assert_allclose(back.spacing_zyx_mm, (3.0, 0.5, 0.7))
    np.testing.assert_array_equal(back.data, labels)


def test_png_writer_for_2d(tmp_path):
    labels = np.zeros((20, 24), np.uint8)
    labels[2:9, 3:10] = 2
    labels[2:9, 14:20] = 1
    out = tmp_path / "xray_lungs.png"
    write_png_labels(str(out), labels, {"metadata": {}, "scale": (1.0, 1.0)})
    np.testing.assert_array_equal(read_mask(out), labels)
    with pytest.raises(ValueError, match="PNG"):
        write_png_labels(str(tmp_path / "vol.png"), np.zeros((3, 4, 4), np.uint8), {})


def test_like_from_metadata_falls_back_on_shape_mismatch():
    image, _ = make_phantom((6, 16, 16))
    meta = placement(image)["metadata"]
    like = like_from_metadata((6, 16, 16), meta)
    assert like.affine is not None
    other = like_from_metadata((5, 16, 16), meta, scale=(2.0, 1.0, 1.0))
    assert other.affine is None and other.spacing_zyx_mm == (2.0, 1.0, 1.0)


@pytest.mark.skipif(not (DATA_DIR / "nifti_examples").is_dir(), reason="no shared NIfTI data")
def test_reader_real_nifti(tmp_path):
    ct_path = DATA_DIR / "nifti_examples" / "example_ct_sm.nii.gz"
    [(data, kwargs, kind)] = _layers(ct_path)
    assert kind == "image"
    image = read_image(ct_path)
    assert kwargs["scale"] == tuple(image.spacing_zyx_mm)
    # a multi-organ segmentation opens as labels with the same placement
    [(seg, seg_kwargs, seg_kind)] = _layers(DATA_DIR / "nifti_examples" / "example_seg.nii.gz")
    assert seg_kind == "labels" and seg.shape == data.shape
    np.testing.assert_allclose(seg_kwargs["translate"], kwargs["translate"])
    # a mask written from the layer lands on the source grid
    out = tmp_path / "lungs.nii.gz"
    lungs = (np.asarray(seg) >= 10) & (np.asarray(seg) <= 14)
    write_nifti_labels(str(out), lungs.astype(np.uint8), {"metadata": kwargs["metadata"]})
    back = read_mask(out, like=image)
    assert back.shape == data.shape and back.any()


@pytest.mark.skipif(not (DATA_DIR / "montgomery").is_dir(), reason="no shared Montgomery data")
def test_reader_dataset_folder_opens_first_case():
    root = DATA_DIR / "montgomery"
    assert is_dataset_folder(root)
    layers = _layers(root)
    assert [kind for _, _, kind in layers] == ["image", "labels"]
    (image, image_kwargs, _), (labels, label_kwargs, _) = layers
    assert image.shape == labels.shape and set(np.unique(labels)) == {0, 1, 2}
    assert label_kwargs["scale"] == image_kwargs["scale"]


def test_reader_covid_layout(tmp_path):
    image, labels = make_phantom((6, 20, 20))
    (tmp_path / "COVID-19-CT-Seg_20cases").mkdir()
    (tmp_path / "Lung_Mask").mkdir()
    write_image(tmp_path / "COVID-19-CT-Seg_20cases" / "case_001.nii.gz", image)
    write_labels(tmp_path / "Lung_Mask" / "case_001.nii.gz", labels, like=image)
    layers = _layers(tmp_path)
    assert [kind for _, _, kind in layers] == ["image", "labels"]
    np.testing.assert_array_equal(layers[1][0], labels)


def test_phantom_sample_is_offline():
    layers = sample_data.phantom_sample()
    assert [kind for _, _, kind in layers] == ["image", "labels"]
    assert layers[1][1]["metadata"]["samlung"]["role"] == "ground_truth"


def test_download_samples_offline_notify_and_fall_back(tmp_path, monkeypatch):
    monkeypatch.setenv("SAMLUNG_CACHE_DIR", str(tmp_path))
    shown = []
    monkeypatch.setattr(
        "napari.utils.notifications.show_warning", lambda msg: shown.append(str(msg))
    )

    def offline(url, dest, xxh128=None, progress=None):
        raise WeightsUnavailableError(f"could not download {url} (no network)")

    monkeypatch.setattr(sample_data, "download", offline)
    for load in (sample_data.montgomery_sample, sample_data.covid_ct_sample):
        layers = load()  # no exception
        assert [kind for _, _, kind in layers] == ["image", "labels"]
    assert len(shown) == 2
    assert "Montgomery" in shown[0] and "phantom" in shown[0]
    assert "zenodo.org/records/3757476" in shown[1]


def test_download_samples_cache_and_extract(tmp_path, monkeypatch):
    """The download path end to end, with file URLs standing in for the servers."""
    import zipfile

    from PIL import Image

    monkeypatch.setenv("SAMLUNG_CACHE_DIR", str(tmp_path / "cache"))
    server = tmp_path / "server"
    xray = (np.arange(64 * 48).reshape(64, 48) % 251).astype(np.uint8)
    left = np.zeros((64, 48), np.uint8)
    left[10:50, 28:44] = 255
    right = np.zeros((64, 48), np.uint8)
    right[10:50, 4:20] = 255
    for part, array in (
        ("CXR_png", xray),
        ("ManualMask/leftMask", left),
        ("ManualMask/rightMask", right),
    ):
        (server / part).mkdir(parents=True)
        Image.fromarray(array).save(server / part / sample_data.MONTGOMERY_CASE)
    image, labels = make_phantom((6, 20, 20))
    vol = write_image(tmp_path / sample_data.COVID_CASE, image)
    mask_file = tmp_path / "mask" / sample_data.COVID_CASE
    mask_file.parent.mkdir()
    write_labels(mask_file, labels, like=image)
    for name, src in (
        (sample_data.COVID_IMAGES_ZIP, vol),
        (sample_data.COVID_MASKS_ZIP, mask_file),
    ):
        with zipfile.ZipFile(server / name, "w") as archive:
            archive.write(src, f"folder/{sample_data.COVID_CASE}")
    monkeypatch.setattr(sample_data, "MONTGOMERY_BASE", server.as_uri() + "/")
    monkeypatch.setattr(sample_data, "ZENODO_RECORD", server.as_uri() + "/")

    layers = sample_data.montgomery_sample()
    assert layers[0][1]["scale"] == (0.0875, 0.0875)
    np.testing.assert_array_equal(layers[0][0], xray)
    assert set(np.unique(layers[1][0])) == {0, 1, 2}
    layers = sample_data.covid_ct_sample()
    np.testing.assert_array_equal(layers[1][0], labels)
    cached = sorted(p.relative_to(tmp_path / "cache") for p in (tmp_path / "cache").rglob("*.*"))
    assert Path("samples/covid19_ct_seg/images") / sample_data.COVID_CASE in cached
    assert not any(p.suffix == ".zip" for p in cached)  # the big zip is not kept
    # second use: from the cache, no download
    monkeypatch.setattr(sample_data, "download", lambda *a, **k: pytest.fail("downloaded again"))
    sample_data.montgomery_sample()
    sample_data.covid_ct_sample()


def test_manifest_validates():
    npe2 = Path(sys.executable).with_name("npe2")
    result = subprocess.run(
        [str(npe2), "validate", "napari-samlung"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_manifest_contributions():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_distribution("napari-samlung")
    contrib = manifest.contributions
    assert [w.display_name for w in contrib.widgets] == ["SAM lung segmentation"]
    assert contrib.sample_data[0].key == "phantom"  # the default sample is offline
    patterns = contrib.readers[0].filename_patterns
    for suffix in ("*.nii", "*.nii.gz", "*.png", "*.jpg", "*.jpeg", "*.npy"):
        assert suffix in patterns
    assert contrib.readers[0].accepts_directories
    extensions = {e for w in contrib.writers for e in w.filename_extensions}
    assert {".nii.gz", ".nii", ".png"} <= extensions
    for command in contrib.commands:
        assert command.python_name is not None
        module, _, attr = command.python_name.partition(":")
        assert hasattr(__import__(module, fromlist=[attr]), attr)


@pytest.mark.skipif(not (DATA_DIR / "covid19_ct_slices").is_dir(), reason="no covid19_ct_slices")
@pytest.mark.parametrize(
    "case", ["coronacases_001_{}_slice_110", "radiopaedia_14_85914_0_{}_slice_0"]
)
def test_the_papers_npy_slices_open_as_their_nifti_volume_is_shown(case):
    """Anterior up (the table under the patient), the patient's right lung (label 2) on the
    image's left, image and mask turned alike; the console script keeps the paper's arrays."""
    folder = DATA_DIR / "covid19_ct_slices"
    [(image, _, kind)] = _layers(folder / f"{case.format('image')}.npy")
    [(labels, _, mask_kind)] = _layers(folder / f"{case.format('masks')}.npy")
    assert (kind, mask_kind) == ("image", "labels")
    raw = np.load(folder / f"{case.format('image')}.npy")
    assert np.squeeze(image).shape == raw.shape[::-1]
    assert np.squeeze(labels).shape == np.squeeze(image).shape
    labels = np.squeeze(labels)
    cols = np.arange(labels.shape[1])
    right, left = (cols[np.nonzero(labels == v)[1]].mean() for v in (2, 1))
    assert right < labels.shape[1] / 2 < left  # radiological: patient's right on the left
    # the spine (the densest pixels of the middle third) lies below the body's centre
    image = np.squeeze(image).astype(float)
    body_rows = np.nonzero((image > np.percentile(image, 50)).any(axis=1))[0]
    third = image.shape[1] // 3
    middle = image[:, third : 2 * third]
    bone_rows = np.nonzero(middle >= np.percentile(middle, 99))[0]
    assert bone_rows.mean() > (body_rows.min() + body_rows.max()) / 2
    np.testing.assert_array_equal(read_image(folder / f"{case.format('image')}.npy").data, raw)
