"""Decoding the pixel data of DICOM CT slices into Hounsfield units.

A compressed transfer syntax without an installed decoder is refused with the
package to install (pylibjpeg and its plugins, or python-gdcm), before
pydicom's own multi-line error.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputFileError
from .checks import error_reason


def series_hu(pydicom, slices: list) -> np.ndarray:
    """Hounsfield units of every slice, ``(slice, row, col)``."""
    out = None
    exact = True
    for k, (f, _header) in enumerate(slices):
        try:
            ds = pydicom.dcmread(f, force=True)  # old files may lack the part-10 header
            _ensure_syntax(pydicom, ds)
        except Exception as exc:
            raise InputFileError(
                f"{f}: not a readable DICOM file ({error_reason(exc)}); re-export it"
            ) from None
        pixels = _decode(ds, f)
        slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
        intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
        exact = exact and slope == 1.0 and intercept == round(intercept)
        if out is None:
            out = np.empty((len(slices), *pixels.shape), np.float64)
        if pixels.shape != out.shape[1:]:
            raise InputFileError(
                f"{f}: pixel data of shape {pixels.shape}, not {out.shape[1:]}; re-export it"
            )
        out[k] = pixels * slope + intercept
    assert out is not None
    info = np.iinfo(np.int16)
    if exact and out.min() >= info.min and out.max() <= info.max:
        return out.astype(np.int16)
    return out.astype(np.float32)


def _ensure_syntax(pydicom, ds) -> None:
    """Give a file without a part-10 header the transfer syntax it was read with."""
    meta = getattr(ds, "file_meta", None)
    if meta is not None and meta.get("TransferSyntaxUID") is not None:
        return
    implicit, little = getattr(ds, "original_encoding", (True, True))
    uid = pydicom.uid
    syntax = (
        uid.ImplicitVRLittleEndian
        if implicit
        else uid.ExplicitVRLittleEndian
        if little
        else uid.ExplicitVRBigEndian
    )
    if meta is None:
        ds.file_meta = meta = pydicom.dataset.FileMetaDataset()
    meta.TransferSyntaxUID = syntax


def _decode(ds, path: Path) -> np.ndarray:
    """One slice's stored values; a compressed syntax without a decoder names what to install."""
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    missing = _missing_decoder(syntax)
    if missing:
        raise InputFileError(
            f"{path}: pixel data are compressed ({syntax.name}) and no installed package "
            f"decodes them; {missing}"
        )
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise InputFileError(
            f"{path}: colour pixel data ({ds.get('PhotometricInterpretation')}); a CT slice is "
            "greyscale: re-export the series"
        )
    try:
        pixels = np.asarray(ds.pixel_array)
    except Exception as exc:
        raise InputFileError(
            f"{path}: pixel data cannot be decoded ({error_reason(exc)}); re-export the series "
            "uncompressed"
        ) from None
    if pixels.ndim != 2:
        raise InputFileError(
            f"{path}: pixel data of shape {pixels.shape} is not one slice; export single-frame "
            "slices"
        )
    return pixels


def _missing_decoder(syntax) -> str | None:
    """What to install for a compressed transfer syntax without a decoder, or None."""
    if syntax is None or not getattr(syntax, "is_compressed", False):
        return None
    try:
        from pydicom.pixels import get_decoder
    except ImportError:  # pydicom 2: left to pixel_array's own error
        return None
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        return "pip install python-gdcm (this transfer syntax has no pydicom decoder)"
    if decoder.is_available:
        return None
    if "JPEG 2000" in syntax.name:
        return "pip install pylibjpeg pylibjpeg-openjpeg (or python-gdcm)"
    if "RLE" in syntax.name:
        return "pip install pylibjpeg pylibjpeg-rle (or python-gdcm)"
    return "pip install pylibjpeg pylibjpeg-libjpeg (or python-gdcm)"
