"""Shared plumbing of the benchmarks: arguments, data location, machine
description, timing and JSON output.

Every benchmark is ``python benchmarks/NAME.py [--json FILE]``; it prints its
numbers and writes them, with a description of the machine, as JSON (by
default to ``benchmarks/results/NAME.json``).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# the random plumbing models (tiny_random, micro_random) live with the tests
sys.path.append(str(REPO / "tests"))
import random_sam  # noqa: E402, F401

_STATE: dict = {}
RESULTS = REPO / "benchmarks" / "results"


def default_data_dir() -> Path:
    """``$SAMLUNG_DATA``, else ``<repo>/../shared/data``."""
    return Path(os.environ.get("SAMLUNG_DATA", REPO.parent / "shared" / "data"))


def parser(name: str, description: str) -> argparse.ArgumentParser:
    """An argument parser with the options every benchmark has."""
    p = argparse.ArgumentParser(prog=f"benchmarks/{name}.py", description=description)
    p.add_argument(
        "--json",
        type=Path,
        default=RESULTS / f"{name}.json",
        help=f"where to write the results (default benchmarks/results/{name}.json)",
    )
    p.add_argument(
        "--data",
        type=Path,
        default=default_data_dir(),
        help="the shared data folder (default $SAMLUNG_DATA or <repo>/../shared/data)",
    )
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (default: torch's)"
    )
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="MINUTES",
        help="first wait up to this long for the 1-minute load average to drop below "
        "--quiet-load (timings on a busy shared machine are meaningless)",
    )
    p.add_argument("--quiet-load", type=float, default=0.7, help="see --wait-quiet")
    return p


def setup(args: argparse.Namespace) -> None:
    """Apply common options (threads) before any model is built."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.data.is_dir():
        sys.exit(f"data folder {args.data} not found; pass --data or set SAMLUNG_DATA")
    quiet_warnings()
    if args.wait_quiet > 0:
        wait_for_quiet(args.wait_quiet * 60.0, args.quiet_load)
    _STATE["load_before"] = _loadavg()


def wait_for_quiet(seconds: float, threshold: float) -> bool:
    """Poll the load average until it is below ``threshold`` (or time runs out)."""
    deadline = time.monotonic() + seconds
    while True:
        load = _loadavg()
        if load is None or load < threshold:
            return True
        if time.monotonic() >= deadline:
            print(f"machine still busy (load {load:.2f}); measuring anyway", file=sys.stderr)
            return False
        time.sleep(5.0)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    keep = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "avx512_vnni", "fma")
                    return [f for f in keep if f in flags]
    except OSError:
        pass
    return []


def machine() -> dict:
    """What the numbers were measured on."""
    import numpy as np
    import torch

    info = {
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_1m_before": _STATE.get("load_before"),
        "load_average_1m_after": _loadavg(),
        "load_note": "1-minute load average before the run (other processes) and after it "
        "(includes this benchmark's own threads); above ~0.5 before means a shared CPU",
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    return info


def _loadavg() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def write_json(path: Path | None, payload: dict) -> None:
    """Write ``payload`` plus ``machine`` and the command line as JSON (atomically)."""
    if path is None:
        return
    payload = {
        **payload,
        "command": " ".join(["python", *sys.argv]),
        "machine": machine(),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=_default) + "\n")
    os.replace(tmp, path)
    print(f"wrote {path}")


def _default(obj):
    try:
        return float(obj)
    except (TypeError, ValueError):
        return str(obj)


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default)."""
    import numpy as np

    return float(np.percentile(np.asarray(values, float), q))


def median_time(fn: Callable[[], object], repeat: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in seconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def montgomery_images(data: Path, limit: int | None = None) -> list[Path]:
    images = sorted((data / "montgomery" / "images").glob("*.png"))
    return images[:limit] if limit else images


def montgomery_pair(data: Path, image_path: Path):
    """(uint8 image, lung labels 0/1/2) of one Montgomery case, through ``io``."""
    from napari_samlung.io import read_image, read_mask

    mask_path = data / "montgomery" / "masks" / image_path.name
    if not mask_path.exists():
        candidates = sorted((data / "montgomery" / "masks").glob(image_path.stem + "*"))
        if not candidates:
            raise FileNotFoundError(f"no mask for {image_path}")
        mask_path = candidates[0]
    image = read_image(image_path)
    return image.data, read_mask(mask_path, like=image)


def ct_volumes(data: Path) -> list[tuple[Path, Path]]:
    folder = data / "ct_volumes_128"
    pairs = []
    for image in sorted(folder.glob("*.nii.gz")):
        if "-msk" in image.name:
            continue
        mask = image.with_name(image.name.replace(".nii.gz", "-msk.nii.gz"))
        pairs.append((image, mask))
    return pairs


def ct_pair(image_path: Path, mask_path: Path):
    """(float volume, lung labels) of one CT volume, through ``io``."""
    from napari_samlung.io import read_image, read_mask

    image = read_image(image_path)
    return image.data, read_mask(mask_path, like=image)


def quiet_warnings() -> None:
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="timm")
