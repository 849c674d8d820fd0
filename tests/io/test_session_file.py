"""Session files (io.session_file): a round trip, a valid ``--propagate-from`` prompts file,
one-line refusals, and never a write over an input, however its path is spelled."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from napari_samlung.cli import main
from napari_samlung.errors import InputFileError, PromptError, ShapeMismatchError
from napari_samlung.io import read_image, write_image
from napari_samlung.io.phantom import make_phantom
from napari_samlung.io.session_file import (
    SavedSlice,
    SessionFile,
    box_sides,
    check_session_paths,
    labels_path_for,
    read_session,
    session_path_for,
    session_to_json,
    write_session,
)
from napari_samlung.io.tables import seeds_from_json

SHAPE = (8, 64, 64)
TINY = ["--model", "micro_random", "--precision", "fp32"]


def _session(**kwargs) -> SessionFile:
    values = {
        "image_shape": SHAPE,
        "slices": [
            SavedSlice(4, [[30.25, 20.5], [31.0, 44.0]], [1, 0], [[10, 12, 30, 50]], [2]),
            SavedSlice(2, boxes_xyxy=[[8, 10, 28, 48], [34, 10, 56, 48]], box_labels=[2, 1]),
        ],
        "image_path": "/data/chest.nii.gz",
        "model_id": "vit_b",
        "checkpoint": "/weights/sam_vit_b.pth",
        "device": "cpu",
        "window_preset": "custom",
        "window_level": -300.0,
        "window_width": 1200.0,
        "strategy": "box",
        "labels_file": "chest_lungs.nii.gz",
        "edited_slices": [4],
    }
    values.update(kwargs)
    return SessionFile(**values)


def test_round_trip_keeps_prompts_model_window_and_strategy(tmp_path: Path):
    path = write_session(tmp_path / "chest_samlung_session.json", _session())
    back = read_session(path, image_shape=SHAPE)
    assert [s.slice_index for s in back.slices] == [2, 4]  # sorted by slice
    four = back.slices[1]
    np.testing.assert_array_equal(four.points_rc, [[30.25, 20.5], [31.0, 44.0]])
    np.testing.assert_array_equal(four.point_labels, [1, 0])
    np.testing.assert_array_equal(four.boxes_xyxy, [[10, 12, 30, 50]])
    assert len(back.slices[0].boxes_xyxy) == 2 and len(back.slices[0].points_rc) == 0
    assert (back.model_id, back.checkpoint, back.device) == (
        "vit_b",
        "/weights/sam_vit_b.pth",
        "cpu",
    )
    assert (back.window_preset, back.window_level, back.window_width) == ("custom", -300, 1200)
    assert back.strategy == "box" and back.edited_slices == [4]
    assert back.image_path == "/data/chest.nii.gz" and back.image_shape == SHAPE
    assert back.labels_path(path) == tmp_path / "chest_lungs.nii.gz"
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary file left


def test_an_x_ray_session_has_no_window_and_no_labels(tmp_path: Path):
    session = _session(
        image_shape=(48, 40),
        slices=[SavedSlice(0, [[5, 6]], [1])],
        window_preset=None,
        window_level=None,
        window_width=None,
        labels_file=None,
    )
    back = read_session(write_session(tmp_path / "x.json", session), image_shape=(48, 40))
    assert back.window_level is None and back.window_width is None
    assert back.labels_path(tmp_path / "x.json") is None
    [seed] = seeds_from_json(tmp_path / "x.json", (48, 40))
    assert seed.slice_index == 0


def test_the_session_file_is_a_prompts_file(tmp_path: Path):
    path = write_session(tmp_path / "s.json", _session())
    spec = json.loads(path.read_text())
    assert spec["slices"][1] == {
        "slice": 4,
        "points_rc": [[30.25, 20.5], [31.0, 44.0]],
        "point_labels": [1, 0],
        "boxes_xyxy": [[10.0, 12.0, 30.0, 50.0]],
        "box_labels": [2],
    }
    seeds = seeds_from_json(path, SHAPE)
    assert [s.slice_index for s in seeds] == [2, 4]
    [box_and_points] = seeds[1].prompts
    np.testing.assert_array_equal(box_and_points.points_xy, [[20.5, 30.25], [44.0, 31.0]])
    assert box_and_points.target_label == 2
    assert [p.target_label for p in seeds[0].prompts] == [2, 1]


def test_segment_propagates_from_a_session_file(tmp_path: Path, capsys):
    """The console script reads a saved session as its --propagate-from prompts."""
    image, labels = make_phantom(SHAPE)
    image_path = write_image(tmp_path / "chest.nii.gz", image)
    z = 4
    rows, cols = np.nonzero(labels[z] == 2)
    box = [cols.min() - 1, rows.min() - 1, cols.max() + 1, rows.max() + 1]
    session = _session(slices=[SavedSlice(z, boxes_xyxy=[box])], model_id="micro_random")
    prompts = write_session(session_path_for(image_path), session)
    assert prompts == tmp_path / "chest_samlung_session.json"
    out = tmp_path / "out_lungs.nii.gz"
    code = main(
        ["segment", str(image_path), "--propagate-from", str(prompts), "-o", str(out), *TINY]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert read_image(out).data.shape == SHAPE


def test_file_names_beside_the_image(tmp_path: Path):
    assert session_path_for(tmp_path / "ct.nii.gz") == tmp_path / "ct_samlung_session.json"
    assert session_path_for(tmp_path / "CHEST.PNG") == tmp_path / "CHEST_samlung_session.json"
    series = tmp_path / "series"
    series.mkdir()
    assert session_path_for(series) == tmp_path / "series_samlung_session.json"
    assert session_path_for(series / "IM0001.dcm") == tmp_path / "series_samlung_session.json"
    session = tmp_path / "ct_samlung_session.json"
    assert labels_path_for(session, is_2d=False) == tmp_path / "ct_lungs.nii.gz"
    assert labels_path_for(session, is_2d=True) == tmp_path / "ct_lungs.png"
    assert labels_path_for(tmp_path / "mine.json", is_2d=False) == tmp_path / "mine_lungs.nii.gz"


# --------------------------------------------------------------------------- refusals


def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_a_session_of_another_image_shape_is_refused(tmp_path: Path):
    path = write_session(tmp_path / "s.json", _session())
    with pytest.raises(ShapeMismatchError) as exc:
        read_session(path, image_shape=(9, 64, 64))
    text = _one_line(exc)
    assert "s.json: this session is for an image of shape (8, 64, 64)" in text
    assert "has shape (9, 64, 64); open the image /data/chest.nii.gz" in text


@pytest.mark.parametrize(
    ("content", "error", "expected"),
    [
        ("{not json", InputFileError, "s.json: not a session file (not JSON"),
        (
            '{"slices": [{"slice": 1, "boxes_xyxy": [[1, 2, 9, 9]]}]}',
            InputFileError,
            "s.json: not a session file (no 'session' object",
        ),
        ("[1, 2]", InputFileError, "not a session file (no 'session' object"),
        ({"version": 99}, InputFileError, "session version 99 is not one this"),
        ({"image": {"shape": "big"}}, InputFileError, "the session object is malformed"),
        ({"image": {"shape": [5]}}, InputFileError, "is not a 2D image or a 3D volume"),
        ({"window": {"level": -500}}, InputFileError, "needs a finite level and width"),
        ({"slices": [{"slice": 8}]}, PromptError, "slice 8 is outside the image (slices 0..7)"),
        ({"slices": {"slice": 1}}, PromptError, "'slices' must be a list"),
        ({"slices": [{"slice": 1}, {"slice": 1}]}, PromptError, "slice 1 appears twice"),
        (
            {"slices": [{"slice": 1, "points_rc": [[1, 2]], "point_labels": [1, 1]}]},
            PromptError,
            "slice 1: 1 points but 2 point labels",
        ),
        (
            {"slices": [{"slice": 1, "points_rc": [[1, 2]], "point_labels": [7]}]},
            PromptError,
            "point label 7 is neither 1 (positive) nor 0 (negative)",
        ),
        ({"slices": [{"points_rc": [[1, 2]]}]}, PromptError, "slice entry 0 is malformed"),
        (
            {"slices": [{"slice": 1, "boxes_xyxy": [[1, 2, 9, 9]], "box_labels": [1, 2]}]},
            PromptError,
            "slice 1: 1 boxes but 2 box labels",
        ),
    ],
)
def test_bad_session_files_are_refused_in_one_line(tmp_path: Path, content, error, expected):
    path = tmp_path / "s.json"
    if isinstance(content, dict):
        spec = json.loads(session_to_json(_session()))
        if "slices" in content:
            spec["slices"] = content["slices"]
        else:
            spec["session"].update(content)
        content = json.dumps(spec)
    path.write_text(content)
    with pytest.raises(error) as exc:
        read_session(path, image_shape=SHAPE)
    text = _one_line(exc)
    assert expected in text, text
    assert str(path) in text


def test_a_missing_session_file_is_refused(tmp_path: Path):
    with pytest.raises(InputFileError, match="cannot read the session file"):
        read_session(tmp_path / "gone.json")


def test_an_existing_file_is_replaced_only_when_asked(tmp_path: Path):
    path = write_session(tmp_path / "s.json", _session(strategy="box"))
    with pytest.raises(InputFileError, match=r"s\.json exists"):
        write_session(path, _session(strategy="paper"))
    assert read_session(path).strategy == "box"
    write_session(path, _session(strategy="paper"), overwrite=True)
    assert read_session(path).strategy == "paper"


def _spellings(tmp_path: Path, monkeypatch) -> list[tuple[str, Path]]:
    """The input file ``tmp_path/data/chest.json`` under several names."""
    data = tmp_path / "data"
    data.mkdir()
    source = data / "chest.json"
    source.write_text("{}")
    (tmp_path / "other").mkdir()
    monkeypatch.chdir(data)
    monkeypatch.setenv("HOME", str(tmp_path))
    os.symlink(data, tmp_path / "link")
    os.link(source, tmp_path / "hardlink.json")
    return [
        ("the same path", source),
        ("relative", Path("chest.json")),
        ("dot segments", tmp_path / "other" / ".." / "data" / "." / "chest.json"),
        ("home", Path("~/data/chest.json")),
        ("a symlinked folder", tmp_path / "link" / "chest.json"),
        ("a hard link", tmp_path / "hardlink.json"),
    ]


def test_an_input_is_never_overwritten_by_any_spelling(tmp_path: Path, monkeypatch):
    spellings = _spellings(tmp_path, monkeypatch)
    source = tmp_path / "data" / "chest.json"
    for how, path in spellings:
        with pytest.raises(InputFileError) as exc:
            write_session(path, _session(), inputs=[None, source], overwrite=True)
        assert "is one of the input files" in _one_line(exc), how
        # and the other way round: the input named by another spelling
        with pytest.raises(InputFileError, match="is one of the input files"):
            write_session(source, _session(), inputs=[path], overwrite=True)
        # the labels file is checked too, before anything is written
        with pytest.raises(InputFileError, match="is one of the input files"):
            check_session_paths(tmp_path / "new.json", path, inputs=[source], overwrite=True)
    assert source.read_text() == "{}"
    assert not (tmp_path / "new.json").exists()
    write_session(tmp_path / "data" / "other.json", _session(), inputs=[source])


def test_boxes_are_named_by_their_side_of_the_midline():
    boxes = [[2, 5, 20, 30], [40, 5, 60, 30]]  # image left, image right
    assert box_sides(boxes, midline_col=31.5) == [2, 1]  # the patient's right, left lung
    assert box_sides(np.zeros((0, 4)), midline_col=31.5) == []


def test_unlabelled_boxes_are_written_without_labels(tmp_path: Path):
    session = _session(slices=[SavedSlice(3, boxes_xyxy=[[1, 2, 9, 9]])])
    spec = json.loads(session_to_json(session))
    assert spec["slices"] == [{"slice": 3, "boxes_xyxy": [[1.0, 2.0, 9.0, 9.0]]}]
    path = tmp_path / "s.json"
    path.write_text(
        session_to_json(session).replace('"slice": 3,', '"slice": 3, "box_labels": [5],')
    )
    with pytest.raises(PromptError, match="box label 5 is none of 1"):
        read_session(path)
