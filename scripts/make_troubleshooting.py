"""Regenerate the README's Troubleshooting section from the real error messages.

    python scripts/make_troubleshooting.py

Each scenario below really runs the console script on a bad input made in a
temporary folder and records the one line it prints on stderr; the section
between the TROUBLESHOOTING markers in README.md is replaced with them.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import re
import sys
import tempfile
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image

from napari_samlung import cli
from napari_samlung.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- TROUBLESHOOTING:BEGIN -->", "<!-- TROUBLESHOOTING:END -->"


def run(argv: list[str], pick: str = "", without: str = "") -> str:
    """The last ``napari-samlung:`` line (the first with ``pick`` in it, if given).

    ``without`` names a module to hide, as if it were not installed.
    """
    err = io.StringIO()
    with (
        contextlib.redirect_stderr(err),
        contextlib.redirect_stdout(io.StringIO()),
        warnings.catch_warnings(),
    ):
        warnings.showwarning = cli._show_warning  # as the installed command shows them
        hidden = {without: sys.modules.get(without)} if without else {}
        sys.modules.update(dict.fromkeys(hidden))
        try:
            code = cli_main(argv)
        finally:
            for name, module in hidden.items():
                if module is None:
                    sys.modules.pop(name, None)
                else:
                    sys.modules[name] = module
    lines = [ln for ln in err.getvalue().splitlines() if ln.startswith("napari-samlung:")]
    if pick:  # a warning: the run goes on (whatever stops it later is not the point)
        return next((ln for ln in lines if pick in ln), "(no message)")
    return f"{lines[-1] if lines else '(no message)'}  (exit {code})"


def dicom_scenarios(tmp: Path) -> list[tuple]:
    """Bad DICOM series (needs pydicom, as the tests do; none without it)."""
    try:
        sys.path.insert(0, str(ROOT / "tests"))
        from dicom_series import pydicom, write_series
    except Exception:  # pydicom missing: pytest.importorskip raises Skipped
        print("pydicom is not installed: the DICOM entries are left out", file=sys.stderr)
        return []
    from pydicom.uid import JPEGLosslessSV1

    volume = np.full((32, 32, 8), -1000.0, np.float32)
    for name in ("mixed", "gap", "jpeg", "ok"):
        write_series(volume, np.eye(4), tmp / name, skip=(4,) if name == "gap" else ())
    odd = sorted((tmp / "mixed").iterdir())[3]
    ds = pydicom.dcmread(odd)
    ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
    ds.save_as(odd)
    for path in (tmp / "jpeg").iterdir():
        ds = pydicom.dcmread(path)
        ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
        ds.PixelData = pydicom.encaps.encapsulate([b"\xff\xd8\xff\xd9"])
        ds["PixelData"].VR = "OB"
        ds.save_as(path, enforce_file_format=True)

    def segment(image: str, out: str = "d.nii.gz", mask: str = "ct.nii.gz") -> list[str]:
        return [
            "segment",
            str(tmp / image),
            "--prompts-from",
            str(tmp / mask),
            "-o",
            str(tmp / out),
        ]

    return [
        (
            "pydicom is not installed (a DICOM folder)",
            "install the dicom extra",
            segment("ok"),
            "",
            "pydicom",
        ),
        (
            "A DICOM series mixes orientations or sizes",
            "export each orientation as its own series",
            segment("mixed"),
        ),
        (
            "A DICOM series is compressed and no decoder is installed",
            "install the package named",
            segment("jpeg"),
        ),
        (
            "A DICOM series has missing slices (a warning: the run goes on)",
            "check the export; distances and volumes across the gap are wrong",
            segment("gap"),
            "missing slices",
        ),
        (
            "A DICOM SEG output (.dcm) for an input that is not DICOM",
            "write .nii.gz",
            segment("ct.nii.gz", out="lungs.dcm"),
        ),
    ]


def scenarios(tmp: Path) -> list[tuple[str, str, list[str]]]:
    ct = np.full((8, 32, 32), -1000, np.int16)
    nib.save(nib.Nifti1Image(ct, np.diag([1.0, 1.0, 1.0, 1.0])), tmp / "ct.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((8, 30, 32), np.uint8), np.eye(4)), tmp / "small.nii.gz")
    (tmp / "broken.nii.gz").write_bytes(gzip.compress(b"\x00" * 100)[:40])
    (tmp / "text.png").write_text("this is not an image\n")
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp / "xray.png")
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp / "xray_mask.png")
    (tmp / "truncated.pth").write_bytes(b"PK\x03\x04junk")
    (tmp / "prompts.json").write_text(json.dumps({"slices": [{"slice": 99, "boxes_xyxy": []}]}))
    (tmp / "out.nii.gz").write_bytes(b"existing")

    def segment_xray(*options: str) -> list[str]:
        """``segment`` of the X-ray from its own mask, plus ``options``."""
        xray, mask = str(tmp / "xray.png"), str(tmp / "xray_mask.png")
        return ["segment", xray, "--prompts-from", mask, "-o", str(tmp / "o.png"), *options]

    return [
        (
            "A file is missing",
            "check the path",
            ["evaluate", str(tmp / "nope.nii.gz"), str(tmp / "nope_mask.nii.gz")],
        ),
        (
            "A .nii.gz is truncated or corrupt",
            "re-export or re-download the file",
            ["evaluate", str(tmp / "broken.nii.gz"), str(tmp / "ct.nii.gz")],
        ),
        (
            "A .png is not an image",
            "check the file",
            ["evaluate", str(tmp / "text.png"), str(tmp / "xray_mask.png")],
        ),
        (
            "Image and mask shapes differ",
            "use the mask made for this image",
            ["evaluate", str(tmp / "ct.nii.gz"), str(tmp / "small.nii.gz")],
        ),
        (
            "Unknown model",
            "pick a listed model",
            ["evaluate", str(tmp / "xray.png"), str(tmp / "xray_mask.png"), "--model", "vit_x"],
        ),
        (
            "SAM weights not available offline",
            "download the file elsewhere and pass --checkpoint",
            segment_xray("--model", "vit_b"),
        ),
        (
            "A --checkpoint path is wrong",
            "check the path",
            segment_xray("--model", "vit_b", "--checkpoint", str(tmp / "missing_vit_b.pth")),
        ),
        (
            "A checkpoint is truncated",
            "download it again",
            segment_xray("--model", "vit_b", "--checkpoint", str(tmp / "truncated.pth")),
        ),
        (
            "CUDA requested without a GPU",
            "use --device cpu",
            segment_xray("--device", "cuda"),
        ),
        (
            "The output exists",
            "pass --overwrite or choose another name",
            [
                "segment",
                str(tmp / "ct.nii.gz"),
                "--prompts-from",
                str(tmp / "ct.nii.gz"),
                "-o",
                str(tmp / "out.nii.gz"),
            ],
        ),
        (
            "A prompts file names a slice outside the volume",
            "fix the slice index",
            [
                "segment",
                str(tmp / "ct.nii.gz"),
                "--propagate-from",
                str(tmp / "prompts.json"),
                "-o",
                str(tmp / "p.nii.gz"),
            ],
        ),
        (
            "An option value makes no sense (e.g. --limit -1, --cache-limit-mb nan)",
            "give a value in the range the line names",
            ["evaluate", str(tmp / "xray.png"), str(tmp / "xray_mask.png"), "--limit", "-1"],
        ),
        (
            "A mistyped option or choice",
            "see the command's --help",
            segment_xray("--strategy", "per_lung"),
        ),
        (
            "The embedding cache folder is a file",
            "point --cache-dir or $SAMLUNG_CACHE_DIR at a folder",
            segment_xray("--cache-dir", str(tmp / "xray.png")),
        ),
        (
            "A --checkpoint is a folder",
            "point it at the .pth file inside",
            segment_xray("--model", "vit_b", "--checkpoint", str(tmp)),
        ),
        (
            "A checkpoint holds code, not only weights",
            "use a checkpoint from a trusted source",
            segment_xray("--model", "vit_b", "--checkpoint", _unsafe_checkpoint(tmp)),
        ),
        *_output_scenarios(tmp),
        *_input_scenarios(tmp),
    ]


def _input_scenarios(tmp: Path) -> list[tuple[str, str, list[str]]]:
    """Inputs read wrongly or with a traceback before: masks, EXIF, voxel types, prompts."""
    xray, mask = tmp / "xray.png", tmp / "xray_mask.png"
    odd = np.zeros((32, 32), np.uint8)
    odd[2:10, 2:10], odd[20:30, 20:30] = 3, 255
    Image.fromarray(odd).save(tmp / "odd_mask.png")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp / "odd.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to view
    Image.fromarray(np.zeros((16, 24), np.uint8)).save(tmp / "tilted.jpg", exif=exif)
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp / "tilted_mask.png")
    rgb = np.zeros((8, 16, 16), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), tmp / "rgb.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((8, 16, 16), np.complex64), np.eye(4)), tmp / "cx.nii.gz")
    Image.fromarray(np.zeros((4, 1000), np.uint8)).save(tmp / "strip.png")
    (tmp / "loop.png").symlink_to(tmp / "loop.png")
    boxes = {"slices": [{"slice": 0, "boxes_xyxy": [[2, 2, 12, 12]], "box_labels": [7]}]}
    (tmp / "labels7.json").write_text(json.dumps(boxes))
    nan = {"slices": [{"slice": 0, "points_rc": [[float("nan"), 3]], "point_labels": [1]}]}
    (tmp / "nan.json").write_text(json.dumps(nan))
    (tmp / "deep.json").write_text("[" * 100_000 + "]" * 100_000)

    def propagate(prompts: str) -> list[str]:
        return [
            "segment",
            str(xray),
            "--propagate-from",
            str(tmp / prompts),
            "-o",
            str(tmp / "q.png"),
        ]

    def auto(image: str) -> list[str]:
        return ["segment", str(tmp / image), "--auto", "-o", str(tmp / "a.nii.gz")]

    return [
        (
            "A mask holds a value that is neither background nor clearly lung (e.g. {0, 3, 255})",
            "save it as 0/1/2 lung labels or as a binary 0/255 mask",
            ["evaluate", str(tmp / "odd.png"), str(tmp / "odd_mask.png")],
        ),
        (
            "An X-ray has an EXIF orientation tag (a warning: it is applied, as viewers do)",
            "save it upright without the tag to silence it",
            ["evaluate", str(tmp / "tilted.jpg"), str(tmp / "tilted_mask.png")],
            "EXIF",
        ),
        ("A NIfTI holds colour (RGB) voxels", "save a greyscale volume", auto("rgb.nii.gz")),
        ("A NIfTI holds complex voxels", "save the magnitude or the real part", auto("cx.nii.gz")),
        (
            "An image is a thin strip (e.g. 4 x 1000 pixels)",
            "check it is the whole image",
            ["evaluate", str(tmp / "strip.png"), str(mask)],
        ),
        (
            "An input is a symbolic link loop",
            "give the file's own path",
            ["evaluate", str(tmp / "loop.png"), str(mask)],
        ),
        (
            "A prompts file names a lung other than 1 (left) or 2 (right)",
            "use 1, 2 or null",
            propagate("labels7.json"),
        ),
        (
            "A prompts file has a point that is not a number",
            "place the point again",
            propagate("nan.json"),
        ),
        (
            "A prompts file is nested too deeply",
            "write the documented format",
            propagate("deep.json"),
        ),
    ]


def _output_scenarios(tmp: Path) -> list[tuple[str, str, list[str]]]:
    """Outputs: an input (by any name), a folder in use, a damaged run record, a long name."""
    from napari_samlung.io.outputs import LOCK_NAME

    xray, mask = str(tmp / "xray.png"), str(tmp / "xray_mask.png")
    os.link(mask, tmp / "mask_link.png")
    busy, damaged = tmp / "busy_run", tmp / "damaged_run"
    busy.mkdir()
    (busy / LOCK_NAME).write_text(f"{os.getppid()} another run\n")  # a live process
    damaged.mkdir()
    (damaged / "cases.json").write_text('{"settings": {"model": "lite_')
    (damaged / "per_slice.csv").write_text("case,slice\n")
    evaluate = ["evaluate", xray, mask]
    return [
        (
            "An output is one of the inputs (by any name: a link, `..`; even with --overwrite)",
            "choose another output name",
            [
                "segment",
                xray,
                "--prompts-from",
                mask,
                "-o",
                str(tmp / "mask_link.png"),
                "--overwrite",
            ],
        ),
        (
            "Another run is using the --out folder",
            "wait for it or choose another --out",
            [*evaluate, "--out", str(busy), "--overwrite"],
        ),
        (
            "The run record of --resume is damaged beyond repair",
            "start again with --overwrite",
            [*evaluate, "--out", str(damaged), "--resume"],
        ),
        (
            "An output name is longer than the file system allows",
            "choose a shorter name",
            ["segment", xray, "--prompts-from", mask, "-o", str(tmp / ("n" * 300 + ".png"))],
        ),
        (
            "An output type no writer has",
            "use .nii.gz, .nii, .png or .dcm",
            ["segment", xray, "--prompts-from", mask, "-o", str(tmp / "mask.txt")],
        ),
    ]


def _unsafe_checkpoint(tmp: Path) -> str:
    """A checkpoint that would run a command when unpickled without ``weights_only``."""
    import torch

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo this would have run",))

    path = tmp / "unsafe.pth"
    torch.save({"model": Payload()}, path)
    return str(path)


def main() -> int:
    import torch

    if torch.cuda.is_available():  # the CUDA scenario needs a machine without a GPU
        print("run this on a machine without a GPU", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        os.environ["SAMLUNG_CACHE_DIR"] = str(tmp / "cache")  # no cached weights: download
        rows = [
            (what, fix, re.sub(r"pid \d+", "pid N", run(*rest).replace(tmp_name, "…")))
            for what, fix, *rest in scenarios(tmp) + dicom_scenarios(tmp)
        ]
    body = [
        BEGIN,
        "",
        "Every error is one line on stderr with a non-zero exit status (2; 3 when "
        "`evaluate` skipped cases; 130 when interrupted). These are the real messages, "
        "regenerated by `python scripts/make_troubleshooting.py`:",
        "",
    ]
    for what, fix, message in rows:
        body += [f"- **{what}** ({fix}):", f"  `{message}`"]
    body += ["", "The widget shows the same messages as napari notifications.", "", END]
    readme = ROOT / "README.md"
    text = readme.read_text()
    if BEGIN in text:
        start, end = text.index(BEGIN), text.index(END) + len(END)
        text = text[:start] + "\n".join(body) + text[end:]
    else:
        text = text.replace(
            "## Troubleshooting\n", "## Troubleshooting\n\n" + "\n".join(body) + "\n"
        )
    readme.write_text(text)
    print("\n".join(body))
    return 0


if __name__ == "__main__":
    sys.exit(main())
