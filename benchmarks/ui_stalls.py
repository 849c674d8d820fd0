"""How long napari's event loop stalls while the widget works, action by action.

    xvfb-run -a python benchmarks/ui_stalls.py [--threads N] [--volume id003] [--json FILE]

It drives the real widget in a real napari window (under Xvfb here) on a real
CT volume (``ct_volumes_128``, with the bundled LiteMedSAM): the dock is added
through napari's plugin menu command, boxes are written to the Shapes layer's
``data``, the buttons are clicked, the window controls changed and the slices
stepped through, as a user would.  A 2 ms ``QTimer`` ticks on the main thread
the whole time; the longest gap between two ticks during an action (until the
widget is idle again) is that action's stall.  The target is no gap over
100 ms.

``--threads`` sets ``$SAMLUNG_TORCH_THREADS`` (PyTorch's CPU threads in the
widget; default: all cores but one).  Run it once per thread count to compare.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from _common import machine, parser, write_json  # noqa: E402

TICK_MS = 2
TARGET_MS = 100
#: Every action is watched for at least this long (its redraw, its debounce).
MIN_S = 0.4


class Ticker:
    """Records the main thread's timer ticks; ``stall(since)`` is the longest gap after it."""

    def __init__(self) -> None:
        from qtpy.QtCore import QTimer

        self.ticks: list[float] = []
        self.timer = QTimer()
        self.timer.setInterval(TICK_MS)
        self.timer.timeout.connect(lambda: self.ticks.append(time.perf_counter()))
        self.timer.start()

    def gaps_ms(self, since: float, until: float) -> list[float]:
        """Gaps between ticks (ms) in ``since``..``until``, from ``since`` to the first tick."""
        inside = [t for t in self.ticks if since <= t <= until]
        points = [since, *inside, until]
        return [1000 * (b - a) for a, b in zip(points, points[1:], strict=False)]


def pump(until, timeout_s: float = 600.0) -> None:
    """Run the event loop until ``until()`` is true (or the timeout)."""
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance()
    deadline = time.perf_counter() + timeout_s
    while not until() and time.perf_counter() < deadline:
        app.processEvents()
        time.sleep(0.001)


def main(argv: list[str] | None = None) -> int:
    p = parser("ui_stalls", "Longest event-loop stall per widget action (real widget, Xvfb).")
    p.add_argument("--volume", default="id003", help="ct_volumes_128 case (default id003)")
    p.add_argument("--window-changes", type=int, default=13)
    p.add_argument("--slice-steps", type=int, default=10)
    args = p.parse_args(argv)
    if args.threads is not None:
        os.environ["SAMLUNG_TORCH_THREADS"] = str(args.threads)

    import napari

    viewer = napari.Viewer(show=True)
    ticker = Ticker()
    results: list[dict] = []

    def measure(name: str, action, until, note: str = "") -> float:
        start = time.perf_counter()
        action()
        pump(lambda: False, timeout_s=MIN_S)  # what the action starts (a redraw, a debounce)
        pump(until)
        end = time.perf_counter()
        gaps = ticker.gaps_ms(start, end)
        worst = max(gaps)
        over = sum(1 for g in gaps if g > TARGET_MS)
        results.append(
            {
                "action": name,
                "longest_stall_ms": round(worst, 1),
                "stalls_over_100ms": over,
                "seconds": round(end - start, 2),
                "note": note,
            }
        )
        print(
            f"{name:<42} longest stall {worst:7.1f} ms  over 100 ms: {over:3d}  "
            f"({end - start:6.2f} s) {note}"
        )
        return worst

    folder = args.data / "ct_volumes_128"
    image = next(folder.glob(f"{args.volume}-*[0-9].nii.gz"))
    mask = next(folder.glob(f"{args.volume}-*-msk.nii.gz"))
    pump(lambda: False, timeout_s=1.0)
    measure(
        "open the CT and its mask (our reader)",
        lambda: (
            viewer.open(image, plugin="napari-samlung"),
            viewer.open(mask, plugin="napari-samlung"),
        ),
        lambda: True,
    )

    layer = viewer.layers[0]
    z0 = layer.data.shape[0] // 2
    for i in range(3):  # napari alone, before the widget: drawing a slice costs this much here
        world = layer.data_to_world([z0 - 1 + i, 0, 0])[0]
        measure(
            f"napari alone: move to slice {z0 - 1 + i}",
            lambda world=world: viewer.dims.set_point(0, float(world)),
            lambda: True,
            "baseline (no widget): napari's own drawing",
        )
    viewer.dims.set_point(0, float(layer.data_to_world([z0, 0, 0])[0]))
    docked: dict = {}

    def dock() -> None:
        _, docked["dock"] = viewer.window.add_plugin_dock_widget(
            "napari-samlung", "SAM lung segmentation"
        )

    measure(
        "dock the widget (PyTorch loads in a thread)",
        dock,
        lambda: docked["dock"].ready,
        "until the widget is in the dock",
    )
    widget = docked["dock"].widget
    widget.set_debounce(150)
    idle = lambda: not widget.busy and not widget.runs.running  # noqa: E731
    measure(
        "first model load and embedding",
        lambda: None,
        lambda: idle() and widget.session.model_loaded,
    )
    from napari_samlung.core.labels import to_lung_labels
    from napari_samlung.core.prompts import per_lung_prompts

    truth = np.asarray(widget.ground_truth.value.data)  # lung labels {0, 1, 2} (our reader)
    z = int(widget.image_layers.current_slice())
    lungs = truth[z] if truth.max() <= 2 else to_lung_labels(truth[z] > 127)
    boxes = [p.box_xyxy for p in per_lung_prompts(lungs, accepts_points=False)]
    assert boxes, f"no lung on slice {z}"
    shapes = widget.image_layers.shapes_layer

    def draw_boxes() -> None:
        for x0, y0, x1, y1 in boxes:
            shapes.add_rectangles(
                np.array([[z, y0, x0], [z, y0, x1], [z, y1, x1], [z, y1, x0]], float)
            )

    measure("draw two boxes (segments the slice)", draw_boxes, idle)
    levels = [-600, -500, -700, -550, -650]
    for i in range(args.window_changes):
        level = levels[i % len(levels)]
        width = 1500 + 100 * (i % 3)
        measure(
            f"window change {i + 1} (slice with boxes)",
            lambda level=level, width=width: widget.set_window(level, width),
            idle,
        )
    layer = widget.image.value
    for i in range(args.slice_steps):
        target = max(0, z - 5 + i)
        world = layer.data_to_world([target, 0, 0])[0]
        measure(
            f"move to slice {target}",
            lambda world=world: viewer.dims.set_point(0, float(world)),
            idle,
        )
    measure("propagate from the boxes", lambda: widget.propagate_button.clicked(), idle)
    measure(
        "segment the volume automatically",
        lambda: widget.auto_button.clicked(),
        idle,
    )
    measure(
        "undo the run (Ctrl-Z on the labels)", lambda: widget.image_layers.writer.layer.undo(), idle
    )
    worst = max(r["longest_stall_ms"] for r in results)
    payload = {
        "volume": args.volume,
        "torch_threads": int(os.environ.get("SAMLUNG_TORCH_THREADS") or 0) or None,
        "torch_threads_used": __import__("torch").get_num_threads(),
        "tick_ms": TICK_MS,
        "target_ms": TARGET_MS,
        "actions": results,
        "longest_stall_ms": worst,
        "machine": machine(),
        "command": "xvfb-run -a python benchmarks/ui_stalls.py " + " ".join(argv or sys.argv[1:]),
    }
    print(
        f"longest stall of all: {worst:.1f} ms (PyTorch threads: {payload['torch_threads_used']})"
    )
    write_json(args.json, payload)
    widget.shutdown()
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
