"""npe2 reader: chest CT (NIfTI, .npy), X-rays (PNG/JPEG), lung masks, dataset folders.

- An image becomes an Image layer placed in millimetres (``scale`` = voxel
  spacing, ``translate`` from the affine); CT in Hounsfield units opens in
  the lung window.
- A mask (file name with ``mask``/``msk``/``seg``/``label``, or an integer
  image with at most three values; see :func:`is_mask`) becomes a Labels
  layer with the same placement, marked as ground truth for the widget.
- A dataset folder (COVID-19-CT-Seg, Montgomery, or ``images/`` + ``masks/``)
  opens its first case: the image and its mask.
- A folder of DICOM slices, or one DICOM file (``.dcm`` or the DICM marker),
  opens its CT series (:func:`~napari_samlung.io.dicom.read_dicom`).

The reader never raises: ``get_reader`` reads the file up front and returns
``None`` for anything it cannot read, so other readers get it.  A DICOM input
it cannot read (pydicom missing, mixed series, compressed pixels), or a file
named like an image it reads (a ``.png`` that is not an image), is ours to
explain: its one-line reason is shown as a notification.
"""

from __future__ import annotations

import logging
import re
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..errors import SamlungError
from ..io import (
    ImageData,
    find_cases,
    is_mask_path,
    load_case,
    looks_like_mask,
    read_image,
    read_mask,
)
from ..io.dicom import is_dicom_file, is_dicom_folder
from ..io.names import has_mask_token, image_suffix, strip_suffix
from .layers import META_KEY, READER_WINDOW_KEY, ct_display_window, placement

log = logging.getLogger(__name__)


def get_reader(path):
    """Return a reader function for ``path``, or ``None`` when we cannot read it."""
    try:
        layers = _read_any(path)
    except SamlungError as exc:
        if _is_dicom(path) or _has_our_suffix(path):  # ours to explain: say why it did not open
            _notify(str(exc), warning=True)
        log.debug("napari-samlung cannot read %s: %s", path, exc)
        return None
    except Exception as exc:  # anything unreadable is someone else's file
        log.debug("napari-samlung cannot read %s: %s", path, exc)
        return None
    if not layers:
        return None

    def reader(_path):
        return layers

    return reader


def _read_any(path) -> list | None:
    if isinstance(path, list | tuple):
        if not path:
            return None
        out = []
        for item in path:
            layers = _read_any(item)
            if layers is None:
                return None
            out.extend(layers)
        return out
    path = Path(path)
    if path.is_dir():
        if is_dataset_folder(path):
            return read_dataset_folder(path)
        return read_dicom_input(path) if is_dicom_folder(path) else None
    if image_suffix(path) is None:
        return read_dicom_input(path) if is_dicom_file(path) else None
    return read_file(path)


def _has_our_suffix(path) -> bool:
    """A file named like an image we read (``.png``, ``.nii.gz``, ``.npy`` ...)."""
    if isinstance(path, list | tuple):
        return any(_has_our_suffix(p) for p in path)
    path = Path(path)
    return path.is_file() and image_suffix(path) is not None


def _is_dicom(path) -> bool:
    if isinstance(path, list | tuple):
        return any(_is_dicom(p) for p in path)
    path = Path(path)
    return is_dicom_folder(path) if path.is_dir() else is_dicom_file(path)


def read_dicom_input(path: str | Path) -> list[tuple]:
    """The Image layer of a DICOM series (a folder, or one of its files)."""
    path = Path(path)
    image = read_image(path)
    name = path.name if path.is_dir() else path.parent.name
    return [image_tuple(image, name or strip_suffix(path.name))]


def read_file(path: str | Path) -> list[tuple]:
    """Layer data tuples for one image or mask file (raises on unreadable files)."""
    path = Path(path)
    image = read_image(path)
    turn = paper_export_turn(path)
    if turn is not None:
        image = replace(image, data=turn(image.data), spacing_zyx_mm=image.spacing_zyx_mm[::-1])
    if is_mask(path, image.data):
        try:
            labels = read_mask(path)
        except ValueError:
            labels = None  # not lung labels (e.g. a multi-organ segmentation)
        if labels is not None and turn is not None:
            labels = turn(labels)
        if labels is None and np.issubdtype(image.data.dtype, np.integer):
            labels = image.data
        if labels is not None:
            return [labels_tuple(labels, image, strip_suffix(path.name))]
    return [image_tuple(image, strip_suffix(path.name))]


#: The paper's ``.npy`` exports of COVID-19-CT-Seg slices: the case family decides how the
#: exported slice turns into the display orientation of its NIfTI volume.
PAPER_EXPORT = re.compile(r"^(coronacases|radiopaedia)_.*_(image|masks?)_slice_\d+\.npy$")


def paper_export_turn(path: Path):
    """For a slice exported by the paper's code, the function that shows it as its NIfTI
    volume is shown (anterior up, the patient's right on the left); else None.

    The paper's code swapped the first two axes of nibabel's array, so the exported
    slice is the volume's ``(x, y)`` plane: transposing undoes that.  The coronacases
    volumes store the y axis the other way round, so their rows are also flipped.
    This is for display only: the console script reads the arrays as the paper did.
    """
    match = PAPER_EXPORT.match(path.name)
    if match is None:
        return None
    flip = match.group(1) == "coronacases"

    def turn(data: np.ndarray) -> np.ndarray:
        out = np.swapaxes(np.asarray(data), -1, -2)
        return np.ascontiguousarray(out[..., ::-1, :] if flip else out)

    return turn


def is_mask(path: Path, data: np.ndarray) -> bool:
    """Whether a file holds a mask: by its name, or by its values.

    A mask word in the file name decides.  Integer data with at most three
    values, none negative, is a mask.  A mask word only in the folder name
    (``masks/``, ``Lung_Mask/``) counts for 8-bit or few-valued data, so a CT
    in a folder that merely mentions masks still opens as an image.
    """
    if has_mask_token(strip_suffix(path.name)):
        return True
    data = np.asarray(data)
    if data.size and looks_like_mask(data) and float(data.min()) >= 0:
        return True
    if is_mask_path(path):  # the folder name says mask
        return data.dtype in (np.uint8, np.bool_) or len(np.unique(data.ravel()[:65536])) <= 16
    return False


def image_tuple(image: ImageData, name: str) -> tuple:
    """An Image layer data tuple, in the lung window for CT in Hounsfield units."""
    kwargs = {"name": name, "colormap": "gray", **placement(image, role="image")}
    if image.modality == "ct":
        window = ct_display_window(image.data)
        if window is not None:
            kwargs["contrast_limits"] = window.limits_hu
            kwargs["metadata"][META_KEY][READER_WINDOW_KEY] = (window.level, window.width)
    return (image.data, kwargs, "image")


def labels_tuple(labels: np.ndarray, like: ImageData, name: str) -> tuple:
    """A Labels layer data tuple placed like ``like``, marked as ground truth."""
    kwargs = {"name": name, "opacity": 0.5, **placement(like, role="ground_truth")}
    return (labels, kwargs, "labels")


def is_dataset_folder(path: Path) -> bool:
    """True for the folder layouts we open (not any folder of images)."""
    path = Path(path)
    if not path.is_dir():
        return False
    pairs = (
        ("COVID-19-CT-Seg_20cases", "Lung_Mask"),
        ("CXR_png", "ManualMask"),
        ("images", "masks"),
        ("images", "labels"),
    )
    return any((path / a).is_dir() and (path / b).is_dir() for a, b in pairs)


def read_dataset_folder(path: Path) -> list[tuple] | None:
    """The first case of a dataset folder: its image and, when present, its mask."""
    if not is_dataset_folder(path):
        return None
    cases, _problems = find_cases(path)
    case = cases[0]
    image, labels = load_case(case)
    layers = [image_tuple(image, case.name)]
    if labels is not None:
        layers.append(labels_tuple(labels, image, f"{case.name} ground truth"))
    if len(cases) > 1:
        _notify(
            f"{path.name}: opened case {case.name}, the first of {len(cases)}; open other "
            "cases by their image file"
        )
    return layers


def _notify(message: str, warning: bool = False) -> None:
    try:
        from napari.utils.notifications import show_info, show_warning

        (show_warning if warning else show_info)(message)
    except Exception:  # pragma: no cover - napari missing or no viewer
        log.info(message)
