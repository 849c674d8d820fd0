"""The widget's exports never write over a file open in napari, however it is spelt.

The scores CSV and the DICOM SEG share one helper
(:func:`napari_samlung._napari.export.choose_output`): an input (the image's file,
the slices of its DICOM series, any layer's source) is refused with one
notification, the user is never asked whether to replace it, and its bytes stay
as they were.  A failed write is one notification too.
"""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from napari_samlung._napari import export as export_module
from napari_samlung._napari.export import choose_output, layer_files, open_files, write_output

pytestmark = pytest.mark.gui


def digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture
def shown(monkeypatch) -> dict[str, list[str]]:
    """The notifications of the export module, by kind; any question fails the test."""
    from qtpy.QtWidgets import QMessageBox

    seen: dict[str, list[str]] = {"error": [], "info": [], "warning": []}
    for kind in seen:
        monkeypatch.setattr(export_module, f"show_{kind}", seen[kind].append)

    def no_question(*args):
        raise AssertionError(f"the user was asked: {args}")

    monkeypatch.setattr(QMessageBox, "question", no_question)
    return seen


def _spellings(target: Path, where: Path, suffix: str) -> list[Path]:
    """The same file by other names that end in ``suffix``: a symlink, a hard link, ``..``."""
    (where / "sub").mkdir(exist_ok=True)
    link, hard = where / f"link{suffix}", where / f"hard{suffix}"
    link.symlink_to(target)
    os.link(target, hard)
    names = [link, hard, where / "sub" / ".." / hard.name]
    if target.name.endswith(suffix):
        names += [target, where / "sub" / ".." / os.path.relpath(target, where)]
    return names


def test_layer_files_name_every_source(tmp_path):
    layer = SimpleNamespace(
        source=SimpleNamespace(path=str(tmp_path / "opened.nii.gz")),
        metadata={
            "samlung": {
                "source_path": str(tmp_path / "ct"),
                "meta": {"dicom_files": [str(tmp_path / "ct" / "1.dcm")]},
            }
        },
    )
    assert layer_files(layer) == [
        tmp_path / "opened.nii.gz",
        tmp_path / "ct",
        tmp_path / "ct" / "1.dcm",
    ]
    assert layer_files(SimpleNamespace()) == []
    viewer = SimpleNamespace(layers=[layer, SimpleNamespace(metadata={"samlung": "junk"})])
    assert len(open_files([viewer])) == 3


@pytest.mark.parametrize("suffix", [".csv", ".dcm"])
def test_choose_output_refuses_an_input_by_any_spelling(tmp_path, shown, suffix):
    image = tmp_path / f"image{suffix}"
    image.write_bytes(b"the user's data")
    before = digest(image)
    names = _spellings(image, tmp_path, suffix)
    for name in names:
        got = choose_output(
            None,
            title="t",
            default_name="x",
            file_filter="*",
            suffix=suffix,
            path=name,
            inputs=[image],
        )
        assert got is None, name
    assert len(shown["error"]) == len(names) == 5
    assert all("is one of the input files" in line and "\n" not in line for line in shown["error"])
    assert digest(image) == before


def test_choose_output_refuses_a_loop_a_long_name_and_a_missing_folder(tmp_path, shown):
    loop = tmp_path / "loop.csv"
    loop.symlink_to(loop)
    for path in (loop, tmp_path / ("n" * 300 + ".csv"), tmp_path / "nope" / "s.csv"):
        assert (
            choose_output(
                None,
                title="t",
                default_name="x",
                file_filter="*",
                suffix=".csv",
                path=path,
                inputs=[],
            )
            is None
        )
    assert len(shown["error"]) == 3
    assert "symlink loop" in shown["error"][0]
    assert "more than the file system allows" in shown["error"][1]
    assert "does not exist" in shown["error"][2]


def test_write_output_turns_a_full_disk_into_one_notification(tmp_path, shown):
    def full(path):
        raise OSError(errno.ENOSPC, "No space left on device")

    assert write_output(tmp_path / "s.csv", full, "done") is None
    [line] = shown["error"]
    assert "s.csv: cannot write (No space left on device); check the folder" in line
    assert shown["info"] == []


def test_scores_export_never_lands_on_the_open_image(make_napari_viewer, qtbot, tmp_path, shown):
    """The image layer came from ct.nii.gz; a scores.csv that is a link to it is refused."""
    from napari_fixtures import MID, PHANTOM_SHAPE, Recorder, go_to_slice, tiny_factory, wait_idle

    from napari_samlung._napari.launch import build_viewer
    from napari_samlung.core.config import RunConfig
    from napari_samlung.io import make_phantom, read_image, read_mask, write_image, write_labels

    phantom, labels = make_phantom(PHANTOM_SHAPE)
    ct = write_image(tmp_path / "ct.nii.gz", phantom)
    mask = write_labels(tmp_path / "ct_mask.nii.gz", labels, like=phantom)
    image = read_image(ct)
    viewer, widget = build_viewer(
        image,
        read_mask(mask, like=image),
        RunConfig(model_id="lite_medsam"),
        viewer=make_napari_viewer(),
        segmenter_factory=Recorder(tiny_factory),
    )
    wait_idle(qtbot, widget)
    go_to_slice(viewer, viewer.layers[0], MID)
    widget.segment_slice_button.clicked()
    wait_idle(qtbot, widget)
    before = digest(ct)
    (tmp_path / "out").mkdir()
    for name in _spellings(ct, tmp_path / "out", ".csv"):
        assert widget.export_metrics(name) is None, name
    assert len(shown["error"]) == 3
    assert all("ct.nii.gz" in line and "input" in line for line in shown["error"])
    assert digest(ct) == before
    good = widget.export_metrics(tmp_path / "out" / "scores.csv")
    assert good == tmp_path / "out" / "scores.csv" and good.read_text().startswith("case,")
    wait_idle(qtbot, widget)
    widget.shutdown()


def test_seg_export_never_lands_on_a_slice_of_the_series(
    make_napari_viewer, qtbot, tmp_path, shown
):
    pytest.importorskip("highdicom", reason="DICOM SEG needs highdicom (napari-samlung[dicom])")
    from napari_fixtures import dicom_widget, wait_idle

    from dicom_series import write_series

    volume = np.random.default_rng(0).integers(-1000, 400, (16, 12, 6)).astype(np.float32)
    files = write_series(volume, np.diag([-0.7, 0.7, 2.5, 1.0]), tmp_path / "CT_series")
    viewer, widget, truth = dicom_widget(make_napari_viewer, qtbot, tmp_path / "CT_series")
    widget.image_layers.writer.layer.data = truth[:]
    before = {f: digest(f) for f in files}
    target = Path(files[2])
    (tmp_path / "out").mkdir()
    names = _spellings(target, tmp_path / "out", ".dcm")
    if target.suffix == ".dcm":
        names.append(target)
    for name in names:
        assert widget.seg_export.export(name) is None, name
    assert shown["error"] and all("input" in line for line in shown["error"])
    assert {f: digest(f) for f in files} == before
    assert (
        widget.seg_export.export(tmp_path / "out" / "lungs.dcm") == tmp_path / "out" / "lungs.dcm"
    )
    wait_idle(qtbot, widget)
    widget.shutdown()
