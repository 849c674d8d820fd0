"""Shared test fixtures and helpers.

- where the real data lives, and skipping when it is absent;
- the random-weight test models (``tiny_random``, ``micro_random``, registered from
  ``random_sam.py``, also in Dask workers), the segmenters of the core tests (``tiny``,
  ``micro``) and their helpers;
- the napari widget on the phantom (``phantom_widget``; the napari helpers themselves live
  in ``napari_fixtures.py``);
- the weights cache, a local HTTP server and a closed port for the download tests;
- file builders (PNG, hand-made NIfTI headers) for the reader tests.

Heavy imports (napari, nibabel) happen inside the helpers, so that collecting a test
module that needs none of them stays cheap; torch comes with the test models.
"""

from __future__ import annotations

import http.server
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

import random_sam

random_sam.register_in_dask_workers()

if TYPE_CHECKING:
    from napari_samlung.core.engine import Segmenter

#: Real test data (read-only): $SAMLUNG_DATA, else <repo>/../shared/data.
DATA_DIR = Path(
    os.environ.get("SAMLUNG_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data")
)


def requires_data(*parts: str) -> pytest.MarkDecorator:
    """Skip a test unless ``DATA_DIR / parts...`` exists."""
    target = DATA_DIR.joinpath(*parts)
    return pytest.mark.skipif(
        not target.exists(),
        reason=f"real data not found at {target}; set SAMLUNG_DATA to the shared data folder",
    )


@pytest.fixture
def data_dir() -> Path:
    """The real data folder; skips the test when it is absent."""
    if not DATA_DIR.is_dir():
        pytest.skip(
            f"real data not found at {DATA_DIR}; set SAMLUNG_DATA to the shared data folder"
        )
    return DATA_DIR


# --------------------------------------------------------------------------- segmenters


@pytest.fixture(scope="module")
def tiny() -> Segmenter:
    """The registered tiny random SAM, through segment_anything's real builder (1024 px)."""
    from napari_samlung.core.engine import Segmenter

    return Segmenter.from_registry("tiny_random", device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def micro() -> Segmenter:
    """The micro random SAM (256 px), built from segment_anything's own modules."""
    from napari_samlung.core.engine import Segmenter
    from napari_samlung.core.models import get_spec

    spec = get_spec("micro_random")
    return Segmenter(spec.builder(None), spec, "cpu", precision="fp32")


def fresh(seg: Segmenter, **kwargs) -> Segmenter:
    """A new segmenter (empty cache, zero counters) around an already-built model."""
    from napari_samlung.core.engine import Segmenter

    kwargs.setdefault("precision", seg.precision)
    return Segmenter(seg.model, kwargs.pop("spec", seg.spec), seg.device, **kwargs)


def random_rgb(shape=(90, 150), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


# --------------------------------------------------------------------------- napari


@pytest.fixture
def phantom_widget(make_napari_viewer, qtbot):
    """(viewer, widget, recorder): the phantom, its ground truth and the micro model."""
    from napari_fixtures import phantom_widget_fixture

    yield from phantom_widget_fixture(make_napari_viewer, qtbot)


# --------------------------------------------------------------------------- weights, network


@pytest.fixture
def weights_cache(tmp_path, monkeypatch) -> Path:
    """An empty weights cache folder ($SAMLUNG_CACHE_DIR), no checkpoint variables set."""
    from napari_samlung.core.models import REGISTRY
    from napari_samlung.core.weights import checkpoint_env_var

    folder = tmp_path / "cache"
    monkeypatch.setenv("SAMLUNG_CACHE_DIR", str(folder))
    for model_id in REGISTRY:
        monkeypatch.delenv(checkpoint_env_var(model_id), raising=False)
    return folder


def closed_port() -> int:
    """A local port nothing listens on (a download from it fails at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.payload``; honours ``Range: bytes=N-`` unless ``server.ranges`` is off;
    sends only ``server.cut`` bytes (with the full Content-Length) when set."""

    def do_GET(self):  # noqa: N802 - http.server API
        srv = self.server
        srv.requests.append(dict(self.headers))
        data = srv.payload
        rng = self.headers.get("Range")
        if rng and srv.ranges:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            body = data[start:]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            body = data
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body if srv.cut is None else body[: srv.cut])
        self.close_connection = True

    def log_message(self, *args):
        pass


@contextmanager
def serve_bytes(payload: bytes, filename: str) -> Iterator[http.server.ThreadingHTTPServer]:
    """A local HTTP server (:class:`RangeHandler`) serving ``payload`` at ``server.url``
    (ending in ``filename``); ``server.requests`` records the headers of each request."""
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    srv.payload = payload
    srv.ranges, srv.cut, srv.requests = True, None, []
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}/{filename}"
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(5)


# --------------------------------------------------------------------------- files


def save_png(path: Path, array: np.ndarray) -> Path:
    from PIL import Image

    Image.fromarray(array).save(path)
    return path


def raw_nifti(
    path: Path, data: np.ndarray, pixdim=(1.0, 1.0, 1.0), srow=None, shape=None, sform_code: int = 2
) -> Path:
    """A .nii with a hand-made header (sizes, spacings and affines nibabel refuses to make)."""
    import nibabel as nib

    header = nib.Nifti1Header()
    header.set_data_dtype(data.dtype)
    header.set_data_shape(shape or data.shape)
    header["vox_offset"] = 352
    header["pixdim"][1:4] = pixdim
    header["qform_code"] = 0
    header["sform_code"] = sform_code
    rows = np.eye(4)[:3] if srow is None else srow
    header["srow_x"], header["srow_y"], header["srow_z"] = rows
    path.write_bytes(header.binaryblock + b"\0" * 4 + data.tobytes(order="F"))
    return path
