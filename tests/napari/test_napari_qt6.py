"""The widget runs on Qt 6: napari's viewer starts on PyQt6 without the PyQt5 warning."""

from __future__ import annotations

import warnings

import pytest

pytestmark = pytest.mark.gui


def test_viewer_starts_on_pyqt6_without_the_pyqt5_warning(make_napari_viewer, qtbot):
    import qtpy
    from napari.utils.notifications import notification_manager

    assert qtpy.API_NAME == "PyQt6", f"the tests run on {qtpy.API_NAME}; install PyQt6"
    seen: list[str] = []

    def note(event) -> None:
        seen.append(str(event.value.message))

    notification_manager.notification_ready.connect(note)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            viewer = make_napari_viewer(show=True)
            qtbot.waitExposed(viewer.window._qt_window)
            qtbot.wait(50)
    finally:
        notification_manager.notification_ready.disconnect(note)
    messages = seen + [str(w.message) for w in caught]
    assert not [m for m in messages if "PyQt5" in m], messages
