"""``napari-samlung evaluate --workers 2`` (a Dask LocalCluster of two worker
processes on loopback) against the single-process run on the same cases.

Cases are small synthetic CT phantoms written to NIfTI files, plus one corrupt
image; the model is the tiny random-weight SAM, so the whole module takes a few
seconds beyond the cluster's start-up.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("dask.distributed")

from napari_samlung import cli  # noqa: E402
from napari_samlung.core.config import RunConfig  # noqa: E402
from napari_samlung.io import Case, make_phantom, write_image, write_labels  # noqa: E402
from napari_samlung.io.tables import read_scores_csv  # noqa: E402
from napari_samlung.pipeline.dask import evaluate_distributed, run_case_on_worker  # noqa: E402

GOOD = ("case_a", "case_b", "case_c")
SHAPE = (4, 32, 40)  # two slices with lung per case


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """images/ + masks/ with three phantoms and one corrupt image."""
    root = tmp_path_factory.mktemp("dataset")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    for seed, name in enumerate(GOOD):
        image, labels = make_phantom(SHAPE, seed=seed)
        write_image(root / "images" / f"{name}.nii.gz", image)
        write_labels(root / "masks" / f"{name}.nii.gz", labels, like=image)
    # a truncated (corrupt) image with a good mask
    image, labels = make_phantom(SHAPE, seed=9)
    write_image(root / "images" / "case_bad.nii.gz", image)
    write_labels(root / "masks" / "case_bad.nii.gz", labels, like=image)
    bad = root / "images" / "case_bad.nii.gz"
    bad.write_bytes(bad.read_bytes()[:40])
    return root


@pytest.fixture
def one_thread():
    """Run the single-process side with one thread, like each worker (2 cores / 2
    workers), so both sides do the same float arithmetic."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _evaluate(dataset: Path, out: Path, *extra: str) -> int:
    return cli.main(
        [
            "evaluate",
            str(dataset),
            "--model",
            "tiny_random",
            "--precision",
            "fp32",
            "--window-preset",
            "paper",
            "--out",
            str(out),
            *extra,
        ]
    )


def _rows(out: Path) -> dict[tuple[str, int], tuple[float, float]]:
    return {
        (s.case, s.slice_index): (s.dice, s.jaccard) for s in read_scores_csv(out / "per_slice.csv")
    }


def test_workers_give_the_single_process_rows(dataset, tmp_path, capsys, one_thread):
    single = _evaluate(dataset, tmp_path / "single")
    err_single = capsys.readouterr().err
    workers = _evaluate(dataset, tmp_path / "dask", "--workers", "2")
    err_workers = capsys.readouterr().err

    # the corrupt case is reported by both and does not stop the others
    assert single == workers == cli.EXIT_SKIPPED
    for err in (err_single, err_workers):
        assert "case_bad" in err
        assert err.count("skipped:") == 1

    rows_single, rows_workers = _rows(tmp_path / "single"), _rows(tmp_path / "dask")
    assert rows_single, "the single-process run scored no slice"
    assert all(np.isfinite(d) and 0.0 <= d <= 1.0 for d, _ in rows_single.values())
    assert sorted(rows_workers) == sorted(rows_single)  # same slices, up to ordering
    assert {case for case, _ in rows_single} == set(GOOD)
    for key, (dice, jaccard) in rows_single.items():
        assert rows_workers[key] == pytest.approx((dice, jaccard), abs=1e-6), key

    for out in ("single", "dask"):
        done = json.loads((tmp_path / out / "cases.json").read_text())["cases"]
        assert sorted(done) == list(GOOD)
    summary_single = json.loads((tmp_path / "single" / "summary.json").read_text())
    summary_workers = json.loads((tmp_path / "dask" / "summary.json").read_text())
    for key in ("model", "strategy", "window"):
        assert summary_workers[key] == summary_single[key]


def test_task_body_returns_errors_instead_of_raising(dataset, monkeypatch):
    """Whatever goes wrong inside a case comes back as that case's error."""
    import napari_samlung.pipeline.dask as dist

    config = RunConfig(model_id="tiny_random", precision="fp32", window_preset="paper")
    bad = Case("case_bad", dataset / "images" / "case_bad.nii.gz", dataset / "masks" / "x.nii.gz")
    res = run_case_on_worker(bad, config)
    assert res.error and res.name == "case_bad" and res.scores == []

    def boom(*args, **kwargs):
        raise RuntimeError("worker ran out of something")

    monkeypatch.setattr(dist, "evaluate_case", boom)
    good = Case("case_a", dataset / "images" / "case_a.nii.gz", dataset / "masks" / "case_a.nii.gz")
    res = run_case_on_worker(good, config)
    assert res.name == "case_a" and "RuntimeError" in res.error and "out of something" in res.error


def test_no_cases_start_no_cluster():
    assert evaluate_distributed([], RunConfig(model_id="tiny_random"), workers=2) == []
