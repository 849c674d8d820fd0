"""Image-file names: suffixes, stems and mask words (io.names)."""

from __future__ import annotations

import numpy as np

from napari_samlung.io import (
    is_mask_path,
    looks_like_mask,
)
from napari_samlung.io.names import (
    MASK_TOKENS,
    has_mask_token,
    image_suffix,
    name_tokens,
    strip_suffix,
)


def test_mask_name_and_content_detection():
    for name in ["id001-128x128x64-msk.nii.gz", "case_seg.nii", "x_mask.png", "a-label.png",
                 "coronacases_001_masks_slice_110.npy", "ManualMask/leftMask/MCUCXR_0001_0.png",
                 "montgomery/masks/MCUCXR_0001_0.png", "CASE_MASK.PNG"]:  # fmt: skip
        assert is_mask_path(name), name
    for name in ["coronacases_001_image_slice_110.npy", "segment.png", "Maskell.png",
                 "images/x.png", "example_ct_sm.nii.gz"]:  # fmt: skip
        assert not is_mask_path(name), name
    assert looks_like_mask(np.array([0, 1, 2], np.uint16))
    assert looks_like_mask(np.array([True, False]))
    assert not looks_like_mask(np.array([0.0, 1.0]))
    assert not looks_like_mask(np.arange(10))


def test_image_suffix_and_stem_treat_nii_gz_as_one_suffix():
    assert image_suffix("a/b/Case.NII.GZ") == ".nii.gz"
    assert image_suffix("x.JPEG") == ".jpeg" and image_suffix("notes.txt") is None
    assert strip_suffix("coronacases_001.nii.gz") == "coronacases_001"
    assert strip_suffix("CASE.Nii") == "CASE"
    assert strip_suffix("MCUCXR_0001_0.png") == "MCUCXR_0001_0"
    assert strip_suffix("notes.txt") == "notes"  # any other suffix: like Path.stem
    assert strip_suffix("image_coronacases_001") == "image_coronacases_001"


def test_mask_tokens_split_on_separators_digits_and_camel_case():
    assert name_tokens("leftMask") == ["left", "mask"]
    assert name_tokens("id001-128x128x64-msk") == ["id", "001", "128", "x", "128", "x", "64", "msk"]
    assert has_mask_token("leftMask") and has_mask_token("Lung_Mask")
    assert has_mask_token("case_seg") and not has_mask_token("segment")
    assert {"mask", "msk", "seg", "label"} <= MASK_TOKENS
