"""Dataset layouts -> a list of image/mask cases.

:func:`find_cases` accepts

- two files: one image and its mask;
- two folders: images and masks, matched by name (see :func:`match_key`);
- one root folder in a known layout:

  - COVID-19-CT-Seg: ``COVID-19-CT-Seg_20cases/*.nii.gz`` + ``Lung_Mask/*.nii.gz``
  - Montgomery (original): ``CXR_png/*.png`` + ``ManualMask/leftMask/*.png`` and
    ``ManualMask/rightMask/*.png`` (merged with
    :func:`~napari_samlung.io.read_montgomery_mask`)
  - flat: ``images/`` + ``masks/`` (or ``labels/``), e.g. ``shared/data/montgomery``
  - mixed: images and masks side by side in one folder, masks named with a
    mask token (``*_mask``, ``*-msk``, ``*_seg``, ``*_label``, ``*_masks_*``),
    e.g. ``shared/data/covid19_ct_slices``; a folder of images only gives
    cases without masks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DatasetError, InputFileError
from .checks import stat_input
from .images import ImageData, read_image, read_mask, read_montgomery_mask
from .names import (
    IMAGE_SUFFIXES,
    IMAGE_TOKENS,
    MASK_TOKENS,
    has_mask_token,
    image_suffix,
    strip_suffix,
)

_IMAGE_DIRS = ("images", "image", "imgs")
_MASK_DIRS = ("masks", "mask", "labels", "label")

LAYOUTS_HELP = (
    "expected two files, an images folder and a masks folder, or a root folder with "
    "COVID-19-CT-Seg_20cases/ + Lung_Mask/, CXR_png/ + ManualMask/leftMask|rightMask/, "
    "images/ + masks/ (or labels/), or images and *_mask files side by side "
    f"(image types: {', '.join(IMAGE_SUFFIXES)})"
)


@dataclass
class Case:
    """One image with its ground-truth mask (``None`` when there is none).

    For the Montgomery original layout ``mask_path`` is the left-lung mask and
    ``right_mask_path`` the right-lung mask.
    """

    name: str
    image_path: Path
    mask_path: Path | None
    right_mask_path: Path | None = None


def find_cases(images: str | Path, masks: str | Path | None = None) -> tuple[list[Case], list[str]]:
    """Find image/mask cases; return ``(cases, problems)``.

    ``problems`` has one line per image without a mask, mask without an image,
    duplicate name, or skipped non-image file.  Raises
    :class:`~napari_samlung.errors.DatasetError` when no case is found.
    """
    images = _existing(images)
    masks_path = _existing(masks) if masks is not None else None
    problems: list[str] = []

    if images.is_file():
        _require_image(images)
        if masks_path is not None and masks_path.is_dir():
            key = match_key(images, is_mask=False)
            candidates = [
                f
                for f in _list_files(masks_path, [])
                if match_key(f, is_mask=True) == key or f.name == images.name
            ]
            if not candidates:
                problems.append(f"{images}: no matching mask in {masks_path}")
            cases = [Case(strip_suffix(images.name), images, (candidates or [None])[0])]
        else:
            if masks_path is not None:
                _require_image(masks_path)
            cases = [Case(strip_suffix(images.name), images, masks_path)]
        return _done(cases, problems, images)

    if masks_path is not None:
        if not masks_path.is_dir():
            raise DatasetError(
                f"{images} is a folder but {masks_path} is a file; pass two files or two folders"
            )
        if _is_montgomery_masks(masks_path):
            cases = _montgomery(images, masks_path, problems)
        else:
            cases = _match_folders(images, masks_path, problems)
        return _done(cases, problems, images)

    return _done(_root(images, problems), problems, images)


def match_key(path: str | Path, is_mask: bool) -> str:
    """The name an image and its mask share.

    The stem is split into tokens; image words (``image``, ``img``) are
    dropped from image names and mask words (``mask(s)``, ``msk``, ``seg``,
    ``label(s)``) from mask names, so ``case_001_image_slice_9`` matches
    ``case_001_masks_slice_9``, ``id001-128x128x64`` matches
    ``id001-128x128x64-msk`` and ``x.png`` matches ``x_mask.png``.
    """
    stem = strip_suffix(Path(path).name)
    drop = MASK_TOKENS if is_mask else IMAGE_TOKENS
    parts = [p for p in re.split(r"[_\-.\s]+", stem.lower()) if p]
    kept = [p for p in parts if p not in drop]
    return "_".join(kept or parts)


def load_case(case: Case) -> tuple[ImageData, np.ndarray | None]:
    """Read a case's image and its lung labels, placed identically.

    Parameters
    ----------
    case : Case
        From :func:`find_cases`.

    Returns
    -------
    image : ImageData
        As :func:`~napari_samlung.io.read_image` returns it.
    labels : ndarray of uint8 or None
        Lung labels {0, 1 left, 2 right} on the image's grid (``(slice, row,
        col)`` or ``(row, col)``); the Montgomery left/right pair is merged.
        None when the case has no mask.

    Raises
    ------
    InputFileError, ShapeMismatchError
        When a file cannot be read or the mask does not lie on the image's grid.
    """
    image = read_image(case.image_path)
    if case.mask_path is None:
        return image, None
    if case.right_mask_path is not None:
        labels = read_montgomery_mask(case.mask_path, case.right_mask_path)
    else:
        labels = read_mask(case.mask_path, like=image)
    return image, labels


# --------------------------------------------------------------------------- layouts


def _root(root: Path, problems: list[str]) -> list[Case]:
    """Detect the layout of a single root folder."""
    covid_images, covid_masks = root / "COVID-19-CT-Seg_20cases", root / "Lung_Mask"
    if covid_images.is_dir() and covid_masks.is_dir():
        return _match_folders(covid_images, covid_masks, problems)
    cxr, manual = root / "CXR_png", root / "ManualMask"
    if cxr.is_dir() and _is_montgomery_masks(manual):
        return _montgomery(cxr, manual, problems)
    image_dir = _child(root, _IMAGE_DIRS)
    mask_dir = _child(root, _MASK_DIRS)
    if image_dir is not None and mask_dir is not None:
        return _match_folders(image_dir, mask_dir, problems)
    files = _list_files(root, problems)
    mask_files = [f for f in files if has_mask_token(strip_suffix(f.name))]
    image_files = [f for f in files if f not in mask_files]
    if not mask_files:
        if image_files:
            problems.append(f"{root}: no mask files found; the cases have no ground truth")
        return [Case(strip_suffix(f.name), f, None) for f in image_files]
    return _match(image_files, mask_files, problems, root, mixed=True)


def _montgomery(image_dir: Path, manual: Path, problems: list[str]) -> list[Case]:
    """Montgomery original: one image, a left-lung mask and a right-lung mask per case."""
    left = {f.name: f for f in _list_files(manual / "leftMask", problems)}
    right = {f.name: f for f in _list_files(manual / "rightMask", problems)}
    cases = []
    for image in _list_files(image_dir, problems):
        lp, rp = left.pop(image.name, None), right.pop(image.name, None)
        if lp is None or rp is None:
            missing = " and ".join(n for n, p in (("leftMask", lp), ("rightMask", rp)) if p is None)
            problems.append(f"{image}: no {missing} mask in {manual}; case skipped")
            continue
        cases.append(Case(strip_suffix(image.name), image, lp, rp))
    for leftover in sorted(left.values()) + sorted(right.values()):
        problems.append(f"{leftover}: mask has no image in {image_dir}; ignored")
    return cases


def _match_folders(image_dir: Path, mask_dir: Path, problems: list[str]) -> list[Case]:
    """Pair the images of one folder with the masks of another."""
    return _match(
        _list_files(image_dir, problems),
        _list_files(mask_dir, problems),
        problems,
        mask_dir,
        mixed=False,
    )


def _match(
    image_files: list[Path],
    mask_files: list[Path],
    problems: list[str],
    mask_dir: Path,
    mixed: bool,
) -> list[Case]:
    """Pair images and masks by :func:`match_key`."""
    masks = _by_key(mask_files, is_mask=True, problems=problems)
    # In separate folders masks may share the image's exact name (e.g. montgomery/).
    exact = {strip_suffix(f.name).lower(): f for f in mask_files}
    cases = []
    used: set[Path] = set()
    for key, image in _by_key(image_files, is_mask=False, problems=problems).items():
        mask = masks.get(key)
        if mask is None and not mixed:
            mask = exact.get(strip_suffix(image.name).lower())
        if mask is None:
            problems.append(f"{image}: no matching mask in {mask_dir}; case has no ground truth")
        else:
            used.add(mask)
        cases.append(Case(strip_suffix(image.name), image, mask))
    for mask in sorted(set(masks.values()) - used):
        problems.append(f"{mask}: mask has no matching image; ignored")
    return cases


def _by_key(files: list[Path], is_mask: bool, problems: list[str]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for f in sorted(files):
        key = match_key(f, is_mask)
        if key in out:
            problems.append(
                f"{f}: duplicate name (same case as {out[key].name}); ignored, rename one of them"
            )
            continue
        out[key] = f
    return out


# --------------------------------------------------------------------------- helpers


def _existing(path: str | Path) -> Path:
    path = Path(path).expanduser()
    if stat_input(path) is None:  # a link loop or an over-long name is one line too
        raise InputFileError(f"{path}: not found; check the path and spelling")
    return path


def _require_image(path: Path) -> None:
    if image_suffix(path) is None:
        raise InputFileError(
            f"{path}: unsupported file type; use one of {', '.join(IMAGE_SUFFIXES)}"
        )


def _list_files(folder: Path, problems: list[str]) -> list[Path]:
    """Image files directly in ``folder`` (sorted); other files are reported as skipped."""
    if not folder.is_dir():
        return []
    files = []
    for entry in sorted(folder.iterdir()):
        if entry.is_dir():
            continue
        if image_suffix(entry) is None:
            problems.append(f"{entry}: not an image file; skipped")
            continue
        files.append(entry)
    return files


def _child(root: Path, names: tuple[str, ...]) -> Path | None:
    for entry in sorted(root.iterdir()):
        if entry.is_dir() and entry.name.lower() in names:
            return entry
    return None


def _is_montgomery_masks(folder: Path) -> bool:
    return (folder / "leftMask").is_dir() and (folder / "rightMask").is_dir()


def _done(cases: list[Case], problems: list[str], where: Path) -> tuple[list[Case], list[str]]:
    if not cases:
        raise DatasetError(f"{where}: no image/mask cases found; {LAYOUTS_HELP}")
    return cases, problems
