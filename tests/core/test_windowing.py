"""CT windowing: HU -> the uint8 RGB slice the encoder sees."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from napari_samlung.core.windowing import (
    WINDOW_PRESETS,
    Window,
    is_prewindowed,
    to_rgb,
    window_to_uint8,
)

# --------------------------------------------------------------------------- fixed mapping


def test_fixed_window_maps_ends_and_middle_exactly():
    # paper window: level -650, width 1500 -> [-1400, 100] HU
    window = Window(-650.0, 1500.0)
    hu = np.array([[-1400.0, -650.0, 100.0, -1025.0, -275.0]], np.float32)
    out = window_to_uint8(hu, window)
    assert out.dtype == np.uint8
    # ends map to 0 and 255; the level to the middle (127.5 -> 128); quarter points 63.75/191.25
    np.testing.assert_array_equal(out, [[0, 128, 255, 64, 191]])


def test_fixed_window_is_linear_between_the_limits():
    window = Window(40.0, 400.0)  # [-160, 240]
    hu = np.linspace(-160.0, 240.0, 401, dtype=np.float32)
    out = window_to_uint8(hu, window).astype(float)
    expected = np.rint((hu - -160.0) * 255.0 / 400.0)
    np.testing.assert_array_equal(out, expected)
    assert np.all(np.diff(out) >= 0), "the mapping must be monotonic"


def test_fixed_window_clips_outside_values():
    window = Window.preset("paper")
    hu = np.array([-3024.0, -1401.0, 101.0, 3071.0, -np.inf, np.inf], np.float32)
    np.testing.assert_array_equal(window_to_uint8(hu, window), [0, 0, 255, 255, 0, 255])


def test_fixed_window_is_the_same_on_every_slice():
    # the same HU value gets the same grey level whatever else is on the slice
    window = Window.preset("lung")
    a = np.array([[-600.0, -1000.0]], np.float32)
    b = np.array([[-600.0, 500.0]], np.float32)
    vol = np.stack([a, b])
    out = window_to_uint8(vol, window)
    assert out[0, 0, 0] == out[1, 0, 0] == 128


def test_integer_hu_input_is_windowed_like_float():
    hu16 = np.array([[-1021, -650, 100, 1838]], np.int16)  # like coronacases slices
    out = window_to_uint8(hu16, Window.preset("paper"))
    np.testing.assert_array_equal(out, [[64, 128, 255, 255]])


def test_fixed_window_nan_pixels_become_black_without_warning():
    hu = np.array([[np.nan, -1400.0, 100.0]], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = window_to_uint8(hu, Window.preset("paper"))
    np.testing.assert_array_equal(out, [[0, 0, 255]])


# --------------------------------------------------------------------------- per-slice


def test_per_slice_normalization_scales_each_slice_to_full_range():
    window = Window(-650.0, 1500.0, "per-slice")
    s0 = np.array([[-1000.0, -500.0, 0.0]], np.float32)  # min -1000, max 0
    s1 = np.array([[-3000.0, -650.0, 3000.0]], np.float32)  # clipped to [-1400, 100]
    out = window_to_uint8(np.stack([s0, s1]), window)
    np.testing.assert_array_equal(out[0], [[0, 128, 255]])
    np.testing.assert_array_equal(out[1], [[0, 128, 255]])
    # each slice separately, not the whole volume at once
    np.testing.assert_array_equal(window_to_uint8(s0, window), out[0])


def test_per_slice_differs_from_fixed_on_a_narrow_slice():
    window_fixed = Window(-650.0, 1500.0, "fixed")
    window_slice = Window(-650.0, 1500.0, "per-slice")
    hu = np.array([[-900.0, -800.0]], np.float32)
    assert window_to_uint8(hu, window_slice).tolist() == [[0, 255]]
    assert window_to_uint8(hu, window_fixed).tolist() == [[85, 102]]


def test_per_slice_constant_slice_is_black():
    window = Window(-650.0, 1500.0, "per-slice")
    out = window_to_uint8(np.full((2, 3, 3), -2000.0, np.float32), window)
    assert out.dtype == np.uint8 and not out.any()


# --------------------------------------------------------------------------- presets


@pytest.mark.parametrize(
    ("name", "level", "width"),
    [
        ("paper", -650.0, 1500.0),
        ("lung", -600.0, 1500.0),
        ("mediastinum", 40.0, 400.0),
        ("narrow-lung", -500.0, 1000.0),
    ],
)
def test_presets_have_documented_values(name, level, width):
    w = Window.preset(name)
    assert (w.level, w.width) == (level, width)
    assert w.limits_hu == (level - width / 2, level + width / 2)
    assert w.normalization == "fixed"
    assert not w.is_none


def test_paper_preset_limits_and_description():
    w = Window.preset("paper", "per-slice")
    assert w.limits_hu == (-1400.0, 100.0)
    assert w.describe() == "L-650/W1500/per-slice"


def test_none_preset_means_no_windowing():
    w = Window.preset("none")
    assert w.is_none and w.limits_hu is None and w.describe() == "none"
    assert WINDOW_PRESETS["none"] is None
    # non-8-bit data with no window is min-max scaled (e.g. 16-bit X-rays)
    xray16 = np.array([[1000, 3000, 5000]], np.uint16)
    np.testing.assert_array_equal(window_to_uint8(xray16, w), [[0, 128, 255]])


def test_unknown_preset_names_the_choices():
    with pytest.raises(ValueError, match="unknown window preset 'bone'.*paper.*mediastinum"):
        Window.preset("bone")


# --------------------------------------------------------------------------- 8-bit input


@pytest.mark.parametrize("window", [Window.preset("paper"), Window.preset("none")])
def test_uint8_input_is_used_as_is(window):
    img = np.array([[0, 7, 200, 255]], np.uint8)
    assert is_prewindowed(img)
    out = window_to_uint8(img, window)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, img)
    rgb = to_rgb(img, window)
    np.testing.assert_array_equal(rgb[..., 0], img)


def test_non_uint8_is_not_prewindowed():
    assert not is_prewindowed(np.zeros((2, 2), np.int16))
    assert not is_prewindowed(np.zeros((2, 2), np.float32))


# --------------------------------------------------------------------------- to_rgb


def test_to_rgb_shape_dtype_and_equal_channels():
    hu = np.linspace(-1400, 100, 35, dtype=np.float32).reshape(5, 7)
    rgb = to_rgb(hu, Window.preset("paper"))
    assert rgb.shape == (5, 7, 3)
    assert rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[..., 0], rgb[..., 1])
    np.testing.assert_array_equal(rgb[..., 0], rgb[..., 2])
    np.testing.assert_array_equal(rgb[..., 0], window_to_uint8(hu, Window.preset("paper")))
    # orientation is kept: first row dark, last row bright
    assert rgb[0, 0, 0] == 0 and rgb[-1, -1, 0] == 255


def test_to_rgb_passes_an_rgb_uint8_image_through():
    rgb = np.random.default_rng(0).integers(0, 256, (4, 6, 3), dtype=np.uint8)
    out = to_rgb(rgb, Window.preset("paper"))
    np.testing.assert_array_equal(out, rgb)


def test_to_rgb_refuses_volumes():
    with pytest.raises(ValueError, match="expected a 2D slice"):
        to_rgb(np.zeros((2, 4, 4), np.float32), Window.preset("paper"))


# --------------------------------------------------------------------------- bad windows


@pytest.mark.parametrize("width", [0.0, -10.0, float("nan"), float("inf")])
def test_bad_widths_are_refused(width):
    with pytest.raises(ValueError, match="window width must be a positive number"):
        Window(-600.0, width)


def test_bad_level_and_half_given_window_are_refused():
    with pytest.raises(ValueError, match="window level must be a finite number"):
        Window(float("nan"), 1500.0)
    with pytest.raises(ValueError, match="both be given or both be None"):
        Window(-600.0, None)
    with pytest.raises(ValueError, match="both be given or both be None"):
        Window(None, 1500.0)


def test_bad_normalization_is_refused():
    with pytest.raises(ValueError, match="normalization must be 'fixed' or 'per-slice'"):
        Window(-600.0, 1500.0, "global")  # type: ignore[arg-type]


def test_rgb_to_grey_is_pillows_luma_and_drops_alpha():
    from PIL import Image

    from napari_samlung.core.windowing import rgb_to_grey

    rgba = np.random.default_rng(3).integers(0, 256, (40, 30, 4), dtype=np.uint8)
    expected = np.array(Image.fromarray(rgba[..., :3]).convert("L"))
    np.testing.assert_array_equal(rgb_to_grey(rgba), expected)
    np.testing.assert_array_equal(rgb_to_grey(rgba[..., :3].astype(np.float32)), expected)
    with pytest.raises(ValueError, match="3 or 4 channels"):
        rgb_to_grey(rgba[..., :2])
