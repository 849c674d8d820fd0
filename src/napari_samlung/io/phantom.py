"""A deterministic synthetic chest CT phantom with lung labels, for tests and demos.

The phantom is in radiological display orientation, like every volume from
:func:`~napari_samlung.io.read_image`: the patient's left lung (label 1) is on
the image's right (large column indices), the right lung (label 2) on the
image's left, anterior at the top.  It is deliberately asymmetric so that
flips and transposes show: the right lung is larger than the left one, the
heart sits toward the image's right (the patient's left), the spine is
posterior (bottom of the image).  The top and bottom slices contain no lung.
"""

from __future__ import annotations

import numpy as np

from ..core.labels import LEFT_LUNG, RIGHT_LUNG
from .geometry import display_affine
from .images import ImageData

AIR_HU = -1000
SOFT_TISSUE_HU = 40
LUNG_HU = -850
HEART_HU = 60
BONE_HU = 700
#: Default voxel spacing of the phantom, (slice, row, col), in millimetres.
PHANTOM_SPACING_ZYX_MM = (5.0, 2.5, 2.5)


def make_phantom(
    shape_zyx: tuple[int, int, int] = (24, 128, 128), seed: int = 0
) -> tuple[ImageData, np.ndarray]:
    """Build a synthetic chest CT (int16 HU) and its lung labels (uint8 {0, 1, 2}).

    The same ``shape_zyx`` and ``seed`` always give the same arrays.  The
    returned image has modality ``"ct"``, spacing :data:`PHANTOM_SPACING_ZYX_MM`
    and an affine in radiological display orientation centred on the volume,
    so ``write_image`` + ``read_image`` gives the same array back.
    """
    n_slices, n_rows, n_cols = (int(n) for n in shape_zyx)
    if min(n_slices, n_rows, n_cols) < 1:
        raise ValueError(f"shape_zyx must be positive, got {shape_zyx}")
    rng = np.random.default_rng(seed)
    # Normalised coordinates: z in [0, 1] over slices, y/x in [-1, 1] over rows/cols.
    z = (np.arange(n_slices, dtype=np.float32) + 0.5)[:, None, None] / n_slices
    y = (np.arange(n_rows, dtype=np.float32) + 0.5)[None, :, None] / n_rows * 2 - 1
    x = (np.arange(n_cols, dtype=np.float32) + 0.5)[None, None, :] / n_cols * 2 - 1

    def ellipse(cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
        return ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1.0

    def ellipsoid(cz: float, cy: float, cx: float, rz: float, ry: float, rx: float) -> np.ndarray:
        return ((z - cz) / rz) ** 2 + ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1.0

    shape = (n_slices, n_rows, n_cols)
    body = np.broadcast_to(ellipse(0.0, 0.0, 0.75, 0.9), shape)
    # Heart: anterior, toward the image's right (patient's left), mid to lower slices.
    heart = ellipsoid(0.4, -0.15, 0.15, 0.3, 0.3, 0.28)
    spine = np.broadcast_to(ellipse(0.55, 0.0, 0.14, 0.12), shape)
    # Right lung (label 2) on the image's left, larger; left lung (1) on the image's right.
    right_lung = ellipsoid(0.5, 0.0, -0.42, 0.36, 0.55, 0.36) & ~heart & ~spine
    left_lung = ellipsoid(0.52, 0.05, 0.45, 0.3, 0.45, 0.28) & ~heart & ~spine & ~right_lung

    hu = np.full(shape, AIR_HU, np.float32)
    hu[body] = SOFT_TISSUE_HU
    hu[heart & body] = HEART_HU
    hu[spine] = BONE_HU
    hu[right_lung | left_lung] = LUNG_HU
    noise_sd = np.where(body, np.where(right_lung | left_lung, 20.0, 10.0), 2.0)
    hu += rng.normal(0.0, 1.0, shape).astype(np.float32) * noise_sd.astype(np.float32)
    data = np.clip(np.rint(hu), -1024, 3071).astype(np.int16)

    labels = np.zeros(shape, np.uint8)
    labels[right_lung] = RIGHT_LUNG
    labels[left_lung] = LEFT_LUNG

    spacing = PHANTOM_SPACING_ZYX_MM
    centre_index = (np.array(shape, dtype=float) - 1) / 2
    affine = display_affine(spacing)
    affine[:3, 3] = -(affine[:3, :3] @ centre_index)
    image = ImageData(
        data=data,
        spacing_zyx_mm=spacing,
        affine=affine,
        source_path=None,
        modality="ct",
        meta={"phantom_seed": seed},
    )
    return image, labels
