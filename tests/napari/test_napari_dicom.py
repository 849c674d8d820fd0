"""The napari reader and writer on DICOM: a series folder opens as one CT Image layer placed
in millimetres, a bad one says why in a notification, and a Labels layer of a DICOM image
saves as a DICOM SEG.  No viewer is needed: the reader and writer are plain functions."""

from __future__ import annotations

import numpy as np
import pytest

from dicom_series import seg_frame_sources, write_series
from napari_samlung._napari import reader as reader_module
from napari_samlung._napari.reader import get_reader
from napari_samlung.io import read_image


def _series(tmp_path, n=6):
    volume = np.random.default_rng(0).integers(-1000, 400, (16, 12, n)).astype(np.float32)
    affine = np.diag([-0.7, 0.7, 2.5, 1.0])
    return write_series(volume, affine, tmp_path / "CT_series")


def test_reader_claims_a_dicom_folder_and_a_file(tmp_path):
    files = _series(tmp_path)
    for path in (tmp_path / "CT_series", str(files[0])):
        reader = get_reader(path)
        assert reader is not None
        [(data, kwargs, kind)] = reader(path)
        assert kind == "image" and data.shape == (6, 12, 16)
        assert kwargs["name"] == "CT_series"
        assert kwargs["scale"] == pytest.approx((2.5, 0.7, 0.7))
        meta = kwargs["metadata"]["samlung"]
        assert meta["modality"] == "ct" and len(meta["meta"]["dicom_files"]) == 6


def test_reader_explains_a_bad_series(tmp_path, monkeypatch):
    files = _series(tmp_path)
    import pydicom

    ds = pydicom.dcmread(files[2])
    ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
    ds.save_as(files[2])
    shown = []
    monkeypatch.setattr(reader_module, "_notify", lambda m, warning=False: shown.append(m))
    assert get_reader(tmp_path / "CT_series") is None  # never raises
    assert len(shown) == 1 and "mixes slice orientations" in shown[0]


def test_reader_leaves_other_folders_alone(tmp_path, monkeypatch):
    (tmp_path / "notes.txt").write_text("hello")
    shown = []
    monkeypatch.setattr(reader_module, "_notify", lambda m, warning=False: shown.append(m))
    assert get_reader(tmp_path) is None and not shown


def test_writer_saves_a_dicom_seg_of_the_layer(tmp_path):
    pytest.importorskip("highdicom", reason="DICOM SEG needs highdicom (napari-samlung[dicom])")
    import highdicom as hd

    from napari_samlung._napari.writer import write_dicom_seg_labels

    _series(tmp_path)
    [(data, kwargs, _)] = get_reader(tmp_path / "CT_series")(tmp_path / "CT_series")
    labels = np.zeros(data.shape, np.uint8)
    labels[2:4, 3:9, 2:7] = 2
    labels[2:5, 3:9, 9:14] = 1
    out = write_dicom_seg_labels(str(tmp_path / "lungs.dcm"), labels, kwargs)
    seg = hd.seg.segread(out[0])
    assert seg.number_of_segments == 2
    assert len(set(seg_frame_sources(seg))) == 3  # slices 2, 3, 4 only
    assert read_image(tmp_path / "CT_series").data.shape == data.shape  # SEG beside: still reads


@pytest.mark.gui
def test_widget_shows_volumes_and_exports_a_dicom_seg(make_napari_viewer, qtbot, tmp_path):
    pytest.importorskip("highdicom", reason="DICOM SEG needs highdicom (napari-samlung[dicom])")
    import highdicom as hd
    from napari_fixtures import dicom_widget, wait_idle

    _series(tmp_path)
    viewer, widget, truth = dicom_widget(make_napari_viewer, qtbot, tmp_path / "CT_series")
    assert widget.seg_export.button.enabled
    assert "volume" not in widget.readout_text()  # nothing segmented yet
    output = widget.image_layers.writer.layer
    output.data = truth[:]  # as if segmented: exactly the truth
    assert widget.image_layers.ensure_truth()  # as a run from the ground truth does
    widget._update_readout()
    voxel_ml = 2.5 * 0.7 * 0.7 / 1000
    left, right = 3 * 6 * 5 * voxel_ml, 3 * 6 * 5 * voxel_ml
    text = widget.readout_text()
    assert f"volume mL: left {left:.1f}  right {right:.1f}" in text
    assert "left +0.0 %" in text  # against the ground truth
    out = widget.seg_export.export(tmp_path / "lungs.dcm")
    assert out == tmp_path / "lungs.dcm"
    seg = hd.seg.segread(out)
    assert len(set(seg_frame_sources(seg))) == 3
    wait_idle(qtbot, widget)
    widget.shutdown()


@pytest.mark.gui
def test_widget_export_is_off_for_a_nifti_image(phantom_widget, tmp_path):
    _viewer, widget, _ = phantom_widget
    assert not widget.seg_export.button.enabled
    assert widget.seg_export.export(tmp_path / "x.dcm") is None
    assert not (tmp_path / "x.dcm").exists()
