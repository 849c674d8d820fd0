"""Helpers of the console-script reliability tests (``test_cli_*.py``).

Each test goes through ``napari_samlung.cli.main`` on the hidden micro random SAM and
32 x 32 images: a refusal is exactly one stderr line ``napari-samlung: error: ...``
naming the file, the problem and the fix, with exit status 2 and no traceback; a case
``evaluate`` cannot use is one ``napari-samlung: skipped: ...`` line and exit 3.

- :func:`run_cli`, :func:`refused`, :func:`skipped_lines`: run ``main`` and check the
  one-line answers (``napari-samlung: error: ...`` with exit 2, ``skipped: ...``);
- :func:`two_lungs`, :func:`save_nifti`: small synthetic lungs and NIfTI files;
- the ``xray`` and ``ct`` fixtures (import ``xray_fixture``/``ct_fixture``): a 32 x 32
  X-ray PNG and a 4-slice CT NIfTI, each with its mask.
"""

from __future__ import annotations

import argparse
import hashlib
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import save_png
from napari_samlung.cli import EXIT_USAGE, build_parser, main

#: The hidden micro random SAM: the real code paths at a fraction of the cost.
TINY = ["--model", "micro_random", "--precision", "fp32"]
ERROR = "napari-samlung: error: "
SKIPPED = "napari-samlung: skipped: "
SIZE = 32


def options_of(command: str) -> set[str]:
    """The option strings of a sub-command (``--out``, ``-o``, ...)."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return set(sub.choices[command]._option_string_actions)


def check_named_options(line: str, command: str) -> None:
    """A fix that names an option must name one the command has."""
    for option in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", line):
        assert option in options_of(command), f"{option} is not an option of {command}: {line}"


def run_cli(capsys, args: list) -> tuple[int, str, str]:
    """``main(args)``: exit code, stdout, stderr (never a traceback)."""
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err, captured.err
    return code, captured.out, captured.err


def refused(capsys, args: list, check_options: bool = True) -> str:
    """Run a command that must be refused; return its one stderr line."""
    code, _, err = run_cli(capsys, args)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == EXIT_USAGE, (code, err)
    assert len(lines) == 1, err
    assert lines[0].startswith(ERROR), lines[0]
    if check_options:
        check_named_options(lines[0], str(args[0]))
    return lines[0]


def skipped_lines(err: str) -> list[str]:
    """The stderr lines, each of which must be a ``skipped:`` line."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and all(line.startswith(SKIPPED) for line in lines), err
    return lines


def two_lungs(shape=(SIZE, SIZE)) -> np.ndarray:
    """Two rectangular lungs, 2 (right, image left) and 1 (left), in a (row, col) slice."""
    labels = np.zeros(shape, np.uint8)
    rows, cols = shape
    labels[rows // 8 : rows - rows // 8, cols // 10 : cols // 2 - 2] = 2  # right lung
    labels[rows // 8 : rows - rows // 8, cols // 2 + 2 : cols - cols // 10] = 1  # left lung
    return labels


def save_nifti(path: Path, zyx: np.ndarray, affine=None) -> Path:
    """Save a (slice, row, col) volume as a RAS NIfTI whose display is ``zyx`` itself."""
    stored = np.ascontiguousarray(np.transpose(zyx, (2, 1, 0))[::-1, ::-1])
    nib.save(
        nib.Nifti1Image(stored, np.diag([2.0, 2.0, 5.0, 1.0]) if affine is None else affine),
        str(path),
    )
    return path


@pytest.fixture(name="xray")
def xray_fixture(tmp_path) -> tuple[Path, Path]:
    """A 32 x 32 X-ray-like PNG and its 0/255 two-lung mask."""
    labels = two_lungs()
    image = np.full(labels.shape, 200, np.uint8)
    image[labels > 0] = 40
    return (
        save_png(tmp_path / "chest.png", image),
        save_png(tmp_path / "chest_mask.png", np.where(labels > 0, 255, 0).astype(np.uint8)),
    )


@pytest.fixture(name="ct")
def ct_fixture(tmp_path) -> tuple[Path, Path]:
    """A 4-slice 32 x 32 CT NIfTI (lung on slices 1-2) and its 0/1/2 labels."""
    labels = np.zeros((4, SIZE, SIZE), np.uint8)
    labels[1:3] = two_lungs()
    volume = np.full(labels.shape, 40, np.int16)
    volume[labels > 0] = -850
    return (
        save_nifti(tmp_path / "ct.nii.gz", volume),
        save_nifti(tmp_path / "ct_mask.nii.gz", labels),
    )


def segment_args(image: Path, mask: Path, out: Path, *extra) -> list:
    """``segment IMAGE --prompts-from MASK -o OUT`` with the micro model."""
    return ["segment", image, "--prompts-from", mask, "-o", out, *TINY, *extra]


def digest(path: Path) -> str:
    """SHA-256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()
