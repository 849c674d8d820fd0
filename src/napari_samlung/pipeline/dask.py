"""Dataset runs on Dask: ``--workers N`` (a local cluster) or ``--scheduler ADDRESS``
(an existing ``dask.distributed`` cluster).

Each worker process loads the model once per run configuration (an explicit
cache keyed by the frozen :class:`~napari_samlung.core.config.RunConfig`) and
processes whole cases.  A failing case comes back with its error; the others
complete.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence

from ..core.config import RunConfig
from ..core.engine import Segmenter
from ..errors import SamlungError
from ..io import Case
from .cases import CaseResult, describe_error, evaluate_case, failed_case


@functools.lru_cache(maxsize=2)
def worker_segmenter(config: RunConfig) -> Segmenter:
    """The segmenter of ``config`` in this process, loaded on first use and then kept."""
    return config.make_segmenter()


def run_case_on_worker(case: Case, config: RunConfig) -> CaseResult:
    """Task body: evaluate one case; errors are returned, not raised.

    Any exception (not only a :class:`SamlungError`) becomes the case's error,
    so one bad case never fails the others' results on the client.  The image
    volume is not shipped back (``image`` is None).
    """
    try:
        res = evaluate_case(worker_segmenter(config), case, config)
    except Exception as exc:  # noqa: BLE001 - reported per case
        return failed_case(case, describe_error(exc))
    res.image = None
    return res


def evaluate_distributed(
    cases: Sequence[Case],
    config: RunConfig,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
) -> list[CaseResult]:
    """Evaluate ``cases`` on Dask; results in completion order.

    Parameters
    ----------
    cases : sequence of Case
        Cases with masks.
    config : RunConfig
        Shipped to the workers; also the key of their model cache.
    workers : int, optional
        Processes of a local cluster on loopback (one thread each; the CPU
        cores are shared out through ``OMP_NUM_THREADS``).
    scheduler : str, optional
        Address of an existing scheduler; takes precedence over ``workers``.

    Raises
    ------
    SamlungError
        When Dask is not installed.
    """
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
                results.append(failed_case(futures[future], describe_error(exc)))
        return results
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def dask_case_map(*, workers: int | None = None, scheduler: str | None = None):
    """A case map (see :mod:`.evaluate`) that runs on Dask and returns results by case name."""

    def case_map(cases: Sequence[Case], config: RunConfig) -> list[CaseResult]:
        results = evaluate_distributed(cases, config, workers=workers, scheduler=scheduler)
        return sorted(results, key=lambda r: r.name)

    return case_map
