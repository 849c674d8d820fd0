"""Nothing is lost: outputs are atomic, never overwrite unasked (inputs never), and a
resumed run may replace only its own unfinished masks.

The conventions and helpers are in ``cli_helpers.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cli_helpers import (  # noqa: F401 (the ct and xray fixtures)
    SIZE,
    TINY,
    ct_fixture,
    digest,
    refused,
    run_cli,
    segment_args,
    xray_fixture,
)
from PIL import Image

from napari_samlung.io import writers as writers_module

# --------------------------------------------------------------------------- nothing is lost


@pytest.mark.parametrize("existing", [False, True])
def test_a_crash_while_writing_the_mask_leaves_no_partial_file(
    tmp_path, ct, capsys, monkeypatch, existing
):
    image, mask = ct
    out = tmp_path / "out" / "pred.nii.gz"
    out.parent.mkdir()
    if existing:
        out.write_bytes(b"the previous result")

    def crash(img, filename):
        Path(filename).write_bytes(b"\x1f\x8b half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writers_module.nib, "save", crash)
    extra = ["--overwrite"] if existing else []
    line = refused(capsys, segment_args(image, mask, out, *extra))
    assert "pred.nii.gz: cannot write (No space left on device)" in line
    assert "check the folder is writable and has free space" in line
    assert sorted(p.name for p in out.parent.iterdir()) == (["pred.nii.gz"] if existing else [])
    if existing:
        assert out.read_bytes() == b"the previous result"


def test_save_masks_never_overwrites_without_overwrite(tmp_path, xray, capsys, monkeypatch):
    from napari_samlung.core.config import RunConfig

    image, mask = xray
    out = tmp_path / "run"
    out.mkdir()
    theirs = out / "chest_samlung.png"
    theirs.write_bytes(b"somebody's file")

    def no_model(self):
        raise AssertionError("the run started although its output cannot be written")

    args = ["evaluate", image, mask, "--out", out, "--save-masks", *TINY]
    with monkeypatch.context() as m:
        m.setattr(RunConfig, "make_segmenter", no_model)
        line = refused(capsys, args)
    assert "chest_samlung.png exists; pass --overwrite" in line
    assert theirs.read_bytes() == b"somebody's file"

    code, _, err = run_cli(capsys, args + ["--overwrite"])
    assert code == 0, err
    assert np.asarray(Image.open(theirs)).shape == (SIZE, SIZE)


def test_resume_replaces_the_mask_of_a_case_that_did_not_finish(tmp_path, xray, capsys):
    """A crash after a case's mask was written but before it was recorded as done: the
    mask is the run's own, so --resume may replace it (and does not stop there)."""
    image, mask = xray
    out = tmp_path / "run"
    out.mkdir()
    (out / "chest_samlung.png").write_bytes(b"left by the interrupted run")
    code, _, err = run_cli(
        capsys, ["evaluate", image, mask, "--out", out, "--save-masks", "--resume", *TINY]
    )
    assert code == 0, err
    assert np.asarray(Image.open(out / "chest_samlung.png")).shape == (SIZE, SIZE)


def test_out_that_is_a_file_is_refused(tmp_path, xray, capsys):
    blocker = tmp_path / "run"
    blocker.write_text("not a folder")
    line = refused(capsys, ["evaluate", *xray, "--out", blocker, *TINY])
    assert "run: cannot create the output folder" in line and "give --out a folder" in line
    assert blocker.read_text() == "not a folder"


def test_input_files_are_never_modified(tmp_path, xray, ct, capsys):
    inputs = [*xray, *ct]
    before = {p: (digest(p), p.stat().st_mtime_ns) for p in inputs}
    code, _, err = run_cli(
        capsys,
        [
            "evaluate",
            *xray,
            "--out",
            tmp_path / "run",
            "--save-masks",
            "--json",
            tmp_path / "s.json",
            *TINY,
        ],
    )
    assert code == 0, err
    code, _, err = run_cli(
        capsys, ["evaluate", *ct, "--out", tmp_path / "run3", "--save-masks", *TINY]
    )
    assert code == 0, err
    code, _, err = run_cli(capsys, segment_args(*ct, tmp_path / "ct_pred.nii.gz"))
    assert code == 0, err
    code, _, err = run_cli(capsys, segment_args(*xray, tmp_path / "chest_pred.png"))
    assert code == 0, err
    assert {p: (digest(p), p.stat().st_mtime_ns) for p in inputs} == before


def test_output_over_the_input_image_is_refused_even_with_overwrite(tmp_path, xray, capsys):
    image, mask = xray
    before = digest(image)
    line = refused(capsys, segment_args(image, mask, image, "--overwrite"))
    assert "chest.png" in line and "input" in line
    assert digest(image) == before
