"""Whole-dataset runs on Dask: ``--workers N`` (a local cluster) or
``--scheduler ADDRESS`` (an existing ``dask.distributed`` cluster).

Each worker process loads the model once (kept per worker, keyed by the run
configuration) and processes whole cases.  A failing case comes back with
its error; the others complete.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence

from .errors import SamlungError
from .io import Case
from .runner import CaseResult, RunConfig, evaluate_case

_SEGMENTERS: dict[RunConfig, object] = {}
_LOCK = threading.Lock()


def _worker_segmenter(config: RunConfig):
    with _LOCK:
        seg = _SEGMENTERS.get(config)
        if seg is None:
            seg = config.make_segmenter()
            _SEGMENTERS[config] = seg
        return seg


def _failed(case: Case, error: str) -> CaseResult:
    import numpy as np

    return CaseResult(
        case.name,
        [],
        0,
        np.zeros((0,), np.uint8),
        None,  # type: ignore[arg-type]
        0.0,
        error=error,
        image_path=case.image_path,
    )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, SamlungError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def run_case_on_worker(case: Case, config: RunConfig) -> CaseResult:
    """Task body: evaluate one case; errors are returned, not raised.

    Any exception (not only a :class:`SamlungError`) becomes the case's error,
    so one bad case never fails the others' results on the client.
    """
    try:
        res = evaluate_case(_worker_segmenter(config), case, config)
    except Exception as exc:  # noqa: BLE001 - reported per case
        return _failed(case, _describe(exc))
    res.image = None  # type: ignore[assignment]  # do not ship the image volume back
    return res


def evaluate_distributed(
    cases: Sequence[Case],
    config: RunConfig,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
) -> list[CaseResult]:
    """Evaluate ``cases`` on Dask; results in completion order."""
    try:
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise SamlungError(
            "--workers/--scheduler need Dask: pip install 'napari-samlung[dask]'"
        ) from None
    if not cases:
        return []
    cluster = None
    if scheduler:
        client = Client(scheduler, timeout="20s")
    else:
        n = max(1, int(workers or 1))
        threads = max(1, (os.cpu_count() or 1) // n)
        cluster = LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            env={"OMP_NUM_THREADS": str(threads)},
        )
        client = Client(cluster)
    try:
        futures = {
            client.submit(run_case_on_worker, c, config, key=f"case-{i}-{c.name}", pure=False): c
            for i, c in enumerate(cases)
        }
        results = []
        for future in as_completed(list(futures)):
            try:
                results.append(future.result())
            except Exception as exc:  # noqa: BLE001 - a lost worker, an unpicklable result
                results.append(_failed(futures[future], _describe(exc)))
        return results
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
