"""Small synthetic datasets for the direct tests of ``napari_samlung.pipeline``.

The model is the hidden micro random SAM (registered by ``random_sam.py``), so
scores are meaningless but every code path is the real one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_samlung.core.config import RunConfig
from napari_samlung.io import make_phantom, write_image, write_labels

#: The micro random SAM on the CPU, paper window: fast and deterministic.
MICRO = RunConfig(model_id="micro_random", device="cpu", precision="fp32", window_preset="paper")
#: (slice, row, col) of the phantoms: lung on some slices, none on others.
SHAPE = (6, 32, 40)
NAMES = ("case_a", "case_b", "case_c")


def write_phantoms(root: Path, names=NAMES, shape=SHAPE) -> Path:
    """``root/images`` and ``root/masks`` with one phantom CT per name; return ``root``."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for seed, name in enumerate(names):
        image, labels = make_phantom(shape, seed=seed)
        write_image(root / "images" / f"{name}.nii.gz", image)
        write_labels(root / "masks" / f"{name}.nii.gz", labels, like=image)
    return root


def write_phantom_ct(folder: Path, shape=SHAPE, seed: int = 1) -> tuple[Path, Path, np.ndarray]:
    """One phantom CT in HU as ``folder/ct.nii.gz`` and its mask ``ct_mask.nii.gz``;
    return both paths and the labels."""
    image, labels = make_phantom(shape, seed=seed)
    image_path, mask_path = folder / "ct.nii.gz", folder / "ct_mask.nii.gz"
    write_image(image_path, image)
    write_labels(mask_path, labels, like=image)
    return image_path, mask_path, labels


def lung_slices(labels: np.ndarray) -> list[int]:
    """Indices of the slices of a (slice, row, col) label volume that have lung."""
    return [z for z in range(labels.shape[0]) if labels[z].any()]
