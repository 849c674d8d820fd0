"""``napari-samlung demo`` on a desktop: napari opens, segments the phantom, prints the summary.

Without a Qt binding it says which pip command installs one and runs headless.
The tiny random model stands in for LiteMedSAM (the scores do not matter here).
"""

from __future__ import annotations

import sys

import pytest

from napari_samlung.cli import main

MODEL = ["--model", "micro_random", "--device", "cpu"]


@pytest.mark.gui
def test_desktop_demo_opens_napari_segments_and_prints_the_summary(
    make_napari_viewer, qtbot, monkeypatch, capsys
):
    import napari
    from napari_samlung._napari import launch

    assert launch.qt_problem() is None
    made = {}

    def viewer(**kwargs):
        made["viewer"] = make_napari_viewer(**kwargs)
        return made["viewer"]

    printed: list[str] = []

    def event_loop() -> None:  # napari.run: until the demo's run has printed its summary
        def summary_printed() -> bool:
            printed.append(capsys.readouterr().out)
            return "Jaccard" in "".join(printed)

        qtbot.waitUntil(summary_printed, timeout=120_000)

    monkeypatch.setattr(napari, "Viewer", viewer)
    monkeypatch.setattr(napari, "run", event_loop)
    assert main(["demo", *MODEL]) == 0
    out = "".join(printed)
    assert out.startswith("segmenting phantom (24, 128, 128) with micro_random")
    assert "scored slices 18" in out and "Dice" in out and "median" in out
    viewer = made["viewer"]
    names = [layer.name for layer in viewer.layers]
    assert names[0] == "phantom" and "phantom ground truth" in names
    widget = viewer.window.dock_widgets[launch.WIDGET_NAME]
    widget = getattr(widget, "_magic_widget", widget)
    assert not widget.runs.running
    assert widget.image_layers.output().layer.data.any()
    assert "not scored yet" not in widget.readout_text()
    # the window the heading names (the headless demo's) is the one the widget used: with
    # LiteMedSAM both demos print the same summary (Dice 99.13; the random model here is
    # too sensitive to batching for an exact comparison)
    assert widget.session.effective_window().describe() in out.splitlines()[0]


def test_demo_without_a_qt_binding_says_what_to_install_and_runs_headless(
    monkeypatch, capsys, tmp_path
):
    import napari_samlung.cli as cli

    monkeypatch.setenv("DISPLAY", ":99")
    monkeypatch.setattr(cli.sys, "platform", "linux")
    monkeypatch.setitem(sys.modules, "qtpy", None)  # `import qtpy` fails as without PyQt6
    monkeypatch.setattr(cli.tempfile, "mkdtemp", lambda prefix="": str(tmp_path))
    assert main(["demo", *MODEL]) == 0
    captured = capsys.readouterr()
    notes = captured.err.strip().splitlines()
    assert len(notes) == 1, notes
    assert "no Qt binding is installed" in notes[0] and "pip install PyQt6" in notes[0]
    assert "Traceback" not in captured.err
    assert "scored slices 18" in captured.out and "Jaccard" in captured.out
    assert (tmp_path / "segmentation.nii.gz").is_file()
