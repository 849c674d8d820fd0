"""Property-based tests (hypothesis) of the readers users feed files to.

Any JSON given as a prompts file, and any small array written as ``.npy``, NIfTI or PNG,
either reads into what the rest of the program expects or raises a
:class:`~napari_samlung.errors.SamlungError` of one line: never another exception, and no
numpy warning on the way (issue 13).
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from napari_samlung.core.prompts import MAX_COORDINATE
from napari_samlung.errors import SamlungError
from napari_samlung.io import read_image, read_mask
from napari_samlung.io.images import mask_to_labels
from napari_samlung.io.tables import seeds_from_json

SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("properties")


def _numpy_warnings(caught: list) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]


# --------------------------------------------------------------------------- prompts JSON

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**30), 10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
)
_any_json = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=30,
)
_number = st.one_of(
    st.integers(-70, 70), st.floats(-70, 70), st.floats(allow_nan=True), st.integers()
)
_entry = st.fixed_dictionaries(
    {},
    optional={
        "slice": st.one_of(st.integers(-2, 8), st.floats(-2, 8), _scalars),
        "points_rc": st.lists(st.lists(_number, min_size=1, max_size=3), max_size=4) | _any_json,
        "point_labels": st.lists(st.sampled_from([0, 1, 2, -1, 0.5, None, "1"]), max_size=4),
        "boxes_xyxy": st.lists(st.lists(_number, min_size=3, max_size=5), max_size=3) | _any_json,
        "box_labels": st.lists(st.sampled_from([1, 2, None, 0, 3, -1, "left"]), max_size=3),
        "extra": _any_json,
    },
)
_near_format = st.fixed_dictionaries({"slices": st.lists(_entry | _any_json, max_size=4)})


def _check_prompts(path: Path, content: str, shape: tuple[int, ...]) -> None:
    path.write_text(content)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            seeds = seeds_from_json(path, shape)
        except SamlungError as exc:
            assert str(exc) and "\n" not in str(exc)
            seeds = []
        except Exception as exc:  # noqa: BLE001 - exactly what the property forbids
            raise AssertionError(f"{type(exc).__name__}: {exc} for {content[:200]!r}") from exc
    assert not _numpy_warnings(caught)
    n_slices = shape[0] if len(shape) == 3 else 1
    assert len({s.slice_index for s in seeds}) == len(seeds)
    for seed in seeds:
        assert 0 <= seed.slice_index < n_slices and seed.prompts
        for p in seed.prompts:
            assert p.target_label in (None, 1, 2)
            assert p.points_xy.ndim == 2 and p.points_xy.shape[1] == 2
            assert len(p.point_labels) == len(p.points_xy)
            assert set(p.point_labels.tolist()) <= {0, 1}
            coords = [p.points_xy] + ([p.box_xyxy] if p.box_xyxy is not None else [])
            for c in coords:
                assert np.isfinite(c).all() and (np.abs(c) <= MAX_COORDINATE).all()


@SETTINGS
@given(spec=_any_json)
def test_any_json_is_a_prompts_file_or_one_line(folder, spec):
    _check_prompts(folder / "any.json", json.dumps(spec), (4, 40, 50))


@SETTINGS
@given(spec=_near_format, volume=st.booleans())
def test_near_miss_prompts_files_read_or_one_line(folder, spec, volume):
    shape = (4, 40, 50) if volume else (40, 50)
    _check_prompts(folder / "near.json", json.dumps(spec), shape)


@settings(max_examples=30, deadline=None)
@given(text=st.text(alphabet='{}[]",:0123456789.-eE naNIfinity\\"', max_size=80))
def test_any_text_is_a_prompts_file_or_one_line(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("text") / "p.json"
    _check_prompts(path, text, (4, 40, 50))


def test_float_coordinates_survive_the_round_trip(folder):
    spec = {"slices": [{"slice": 1, "points_rc": [[1.25, 2.5]], "boxes_xyxy": [[0, 0, 9, 9]]}]}
    path = folder / "round.json"
    path.write_text(json.dumps(spec))
    (seed,) = seeds_from_json(path, (4, 40, 50))
    assert seed.prompts[0].points_xy.tolist() == [[2.5, 1.25]] and not math.isnan(2.5)


# --------------------------------------------------------------------------- readers

_DTYPES = [np.uint8, np.int16, np.uint16, np.int32, np.float32, np.float64, np.complex64, bool]
_SHAPES = hnp.array_shapes(min_dims=2, max_dims=3, min_side=1, max_side=12)


@st.composite
def _arrays(draw, dtypes=_DTYPES, shapes=_SHAPES) -> np.ndarray:
    dtype = np.dtype(draw(st.sampled_from(dtypes)))
    shape = draw(shapes)
    kind = draw(st.sampled_from(["any", "labels", "binary"]))
    if kind == "any" or dtype.kind in "bc":
        return draw(hnp.arrays(dtype, shape))
    values = [0, 1, 2] if kind == "labels" else [0, draw(st.sampled_from([1, 3, 255]))]
    return draw(hnp.arrays(dtype, shape, elements=st.sampled_from(values)))


def _write(path: Path, array: np.ndarray) -> Path | None:
    """``array`` saved by the suffix of ``path``; None when the format cannot hold it."""
    if path.suffix == ".npy":
        np.save(path, array)
    elif path.name.endswith(".nii.gz"):
        if array.dtype == bool:
            array = array.astype(np.uint8)
        nib.save(nib.Nifti1Image(array, np.diag([1.5, 1.5, 3.0, 1.0])), path)
    else:
        if array.ndim != 2 or array.dtype not in (np.uint8, np.uint16, bool):
            return None
        Image.fromarray(array).save(path)
    return path


def _check_readers(path: Path) -> None:
    results = {}
    for reader in (read_image, read_mask):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                results[reader.__name__] = reader(path)
            except SamlungError as exc:
                assert str(exc) and "\n" not in str(exc), str(exc)
            except Exception as exc:  # noqa: BLE001 - exactly what the property forbids
                raise AssertionError(f"{reader.__name__}: {type(exc).__name__}: {exc}") from exc
        assert not _numpy_warnings(caught), _numpy_warnings(caught)
    labels = results.get("read_mask")
    if labels is not None:
        assert labels.dtype == np.uint8 and set(np.unique(labels).tolist()) <= {0, 1, 2}
    image = results.get("read_image")
    if image is not None:
        data = image.data
        assert data.ndim in (2, 3) and data.size > 0
        if np.issubdtype(data.dtype, np.floating):
            assert np.isfinite(data).all()
        if labels is not None:
            assert labels.shape == data.shape


@pytest.mark.parametrize("suffix", [".npy", ".nii.gz", ".png"])
@SETTINGS
@given(array=_arrays())
def test_any_small_array_reads_or_is_refused_in_one_line(folder, suffix, array):
    path = _write(folder / f"array{suffix}", array)
    if path is not None:
        _check_readers(path)


@SETTINGS
@given(array=_arrays(dtypes=[np.uint8, np.int16, np.float32, np.float64]))
def test_the_mask_rule_keeps_label_maps_and_gives_labels(array):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            labels = mask_to_labels(array, "m.npy")
        except SamlungError as exc:
            assert "\n" not in str(exc)
            return
    assert not _numpy_warnings(caught)
    assert labels.shape == array.shape and set(np.unique(labels).tolist()) <= {0, 1, 2}
    finite = np.isfinite(array)
    values = set(np.unique(array[finite]).tolist())
    if finite.all() and values <= {0, 1, 2} and 2 in values:
        np.testing.assert_array_equal(labels, array.astype(np.uint8))  # labels, whatever dtype
    if len(values - {0}) == 1 and max(values) > 0:
        # one positive value (as float32: float64 denormals are 0; NaN/Inf are background)
        np.testing.assert_array_equal(labels > 0, finite & (array.astype(np.float32) > 0))
