"""npe2 sample data: a synthetic phantom (offline), a Montgomery X-ray, a COVID-19-CT-Seg CT.

The two real samples are downloaded from their public sources on first use,
with a progress bar, and kept under the user cache directory
(``$SAMLUNG_CACHE_DIR`` overrides it):

- Montgomery County chest X-ray set (U.S. National Library of Medicine; Jaeger
  et al. 2014): one X-ray and its left/right lung masks, three PNG files.
- COVID-19 CT Lung and Infection Segmentation dataset (Ma Jun et al. 2020,
  Zenodo record 3757476, CC BY 4.0): one CT volume and its lung mask.  Zenodo
  serves the volumes only as one 1.1 GB zip; it is downloaded once (resumable),
  the case is extracted, and the zip is deleted.

Offline, a notification says what failed and how to get the files, and the
phantom opens instead: no traceback.
"""

from __future__ import annotations

import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

from ..core.weights import cache_dir, download
from ..errors import SamlungError
from ..io import read_image, read_mask, read_montgomery_mask
from ..io.phantom import make_phantom
from .reader import image_tuple, labels_tuple

MONTGOMERY_BASE = (
    "https://data.lhncbc.nlm.nih.gov/public/Tuberculosis-Chest-X-ray-Datasets/"
    "Montgomery-County-CXR-Set/MontgomerySet/"
)
MONTGOMERY_CASE = "MCUCXR_0001_0.png"
#: Pixel spacing of the Montgomery X-rays (dataset description), in mm.
MONTGOMERY_SPACING_MM = 0.0875

ZENODO_RECORD = "https://zenodo.org/records/3757476/files/"
COVID_IMAGES_ZIP = "COVID-19-CT-Seg_20cases.zip"
COVID_MASKS_ZIP = "Lung_Mask.zip"
COVID_CASE = "coronacases_001.nii.gz"

Progress = Callable[[int, int | None], None]


def samples_dir() -> Path:
    """Where downloaded samples are kept: ``<cache>/samples``."""
    return cache_dir() / "samples"


# --------------------------------------------------------------------------- samples


def phantom_sample() -> list[tuple]:
    """The synthetic chest CT phantom and its lung labels (no download)."""
    image, labels = make_phantom()
    return [image_tuple(image, "phantom"), labels_tuple(labels, image, "phantom ground truth")]


def montgomery_sample() -> list[tuple]:
    """One Montgomery chest X-ray with its lung masks (downloaded once)."""
    try:
        image_path, left_path, right_path = fetch_montgomery()
        image = read_image(image_path)
        labels = read_montgomery_mask(left_path, right_path)
    except SamlungError as exc:
        return _offline("the Montgomery X-ray", exc, MONTGOMERY_BASE)
    image.spacing_zyx_mm = (MONTGOMERY_SPACING_MM, MONTGOMERY_SPACING_MM)
    name = Path(MONTGOMERY_CASE).stem
    return [image_tuple(image, name), labels_tuple(labels, image, f"{name} ground truth")]


def covid_ct_sample() -> list[tuple]:
    """One COVID-19-CT-Seg volume with its lung mask (downloaded once)."""
    try:
        image_path, mask_path = fetch_covid_case()
        image = read_image(image_path)
        labels = read_mask(mask_path)  # the dataset's own pairing; shapes must agree
        if labels.shape != image.data.shape:
            raise SamlungError(f"{mask_path}: mask shape {labels.shape} != {image.data.shape}")
    except SamlungError as exc:
        return _offline("the COVID-19-CT-Seg volume", exc, ZENODO_RECORD.rsplit("/files", 1)[0])
    name = COVID_CASE.removesuffix(".nii.gz")
    return [image_tuple(image, name), labels_tuple(labels, image, f"{name} ground truth")]


def _offline(what: str, exc: Exception, source: str) -> list[tuple]:
    from napari.utils.notifications import show_warning

    show_warning(
        f"could not get {what}: {exc}. Download it from {source} into {samples_dir()} "
        "when online; the synthetic phantom is shown instead"
    )
    return phantom_sample()


# --------------------------------------------------------------------------- downloads


def fetch_montgomery(progress: Progress | None = None) -> tuple[Path, Path, Path]:
    """Paths of the cached Montgomery image, left and right lung masks (downloaded once)."""
    folder = samples_dir() / "montgomery"
    parts = ("CXR_png", "ManualMask/leftMask", "ManualMask/rightMask")
    paths = []
    for part in parts:
        dest = folder / part / MONTGOMERY_CASE
        if not dest.is_file():
            _download(f"{MONTGOMERY_BASE}{part}/{MONTGOMERY_CASE}", dest, progress)
        paths.append(dest)
    return paths[0], paths[1], paths[2]


def fetch_covid_case(progress: Progress | None = None) -> tuple[Path, Path]:
    """Paths of the cached COVID-19-CT-Seg volume and lung mask (downloaded once)."""
    folder = samples_dir() / "covid19_ct_seg"
    image = folder / "images" / COVID_CASE
    mask = folder / "lung_masks" / COVID_CASE
    for dest, archive in ((mask, COVID_MASKS_ZIP), (image, COVID_IMAGES_ZIP)):
        if dest.is_file():
            continue
        zip_path = folder / "downloads" / archive
        if not zip_path.is_file():
            _download(ZENODO_RECORD + archive, zip_path, progress)
        extract_member(zip_path, COVID_CASE, dest)
        zip_path.unlink()  # the case is all we keep; the zip can be 1.1 GB
    return image, mask


def extract_member(zip_path: Path, name: str, dest: Path) -> Path:
    """Extract the member whose file name is ``name`` (in any folder) to ``dest``."""
    try:
        with zipfile.ZipFile(zip_path) as archive:
            members = [m for m in archive.namelist() if Path(m).name == name]
            if not members:
                raise SamlungError(f"{zip_path}: has no {name}; delete it and download it again")
            dest.parent.mkdir(parents=True, exist_ok=True)
            part = dest.with_name(dest.name + ".part")
            with archive.open(members[0]) as src, open(part, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
            part.replace(dest)
    except (zipfile.BadZipFile, OSError) as exc:
        zip_path.unlink(missing_ok=True)
        raise SamlungError(
            f"{zip_path}: broken download ({exc}); it was deleted, try again"
        ) from None
    return dest


def _download(url: str, dest: Path, progress: Progress | None) -> Path:
    """Download with a napari progress bar (and ``progress`` callback) to ``dest``."""
    from napari.utils import progress as progress_bar

    bar = progress_bar(total=0, desc=f"downloading {Path(url).name}", unit="B", unit_scale=True)
    try:

        def report(done: int, total: int | None) -> None:
            if total and bar.total != total:
                bar.total = total
            bar.update(done - bar.n)
            if progress is not None:
                progress(done, total)

        return download(url, dest, progress=report)
    finally:
        bar.close()
