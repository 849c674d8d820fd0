"""``pipeline.evaluate``: the dataset run, its resumable record and its summary payload,
called directly (no console script)."""

from __future__ import annotations

import dataclasses
import json

import pytest
from pipeline_data import MICRO, NAMES, write_phantoms

from napari_samlung.errors import SamlungError
from napari_samlung.io import find_cases
from napari_samlung.io.tables import read_scores_csv
from napari_samlung.pipeline.cases import failed_case
from napari_samlung.pipeline.evaluate import EvaluationRun, choose_case_map, map_local, open_run

PAYLOAD_KEYS = {"model", "strategy", "window", "cases", "slices", "skipped_empty"}
PAYLOAD_KEYS |= {"empty_predictions", "dice", "jaccard", "seconds"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_phantoms(tmp_path_factory.mktemp("data"))


def counting_map(seen: list[str]):
    """``map_local`` that also notes which cases it was given."""

    def case_map(cases, config):
        seen.extend(c.name for c in cases)
        return map_local(cases, config)

    return case_map


def test_a_run_without_a_folder_scores_every_case(dataset):
    cases, _ = find_cases(dataset)
    run = EvaluationRun(MICRO)
    done = []
    assert run.run(cases, on_case_done=done.append) == []
    assert done == list(NAMES)
    summary = run.summary()
    assert summary.cases == 3 and summary.slices == len(run.scores) > 0
    payload = run.payload(summary)
    assert set(payload) == PAYLOAD_KEYS
    assert payload["model"] == "micro_random" and payload["window"] == MICRO.window().describe()
    assert payload["strategy"] == MICRO.resolved_strategy()
    assert payload["dice"]["mean"] == pytest.approx(summary.dice.mean)
    assert payload["seconds"] > 0
    assert run.write_summary(payload) == []


def test_open_run_finds_the_cases_and_writes_the_summary_twice(dataset, tmp_path):
    out, target = tmp_path / "run", tmp_path / "s.json"
    run, cases, problems = open_run(MICRO, dataset, limit=2, out_dir=out, json_path=target)
    assert [c.name for c in cases] == list(NAMES[:2]) and problems == []
    assert run.run(cases) == []
    written = run.write_summary(run.payload())
    assert written == [out / "summary.json", target]
    assert json.loads(target.read_text()) == json.loads((out / "summary.json").read_text())
    assert [r.case for r in read_scores_csv(out / "per_slice.csv")] == [s.case for s in run.scores]
    assert sorted(json.loads((out / "cases.json").read_text())["cases"]) == list(NAMES[:2])


def test_resume_evaluates_only_what_is_not_done_and_ends_with_the_same_payload(dataset, tmp_path):
    cases, _ = find_cases(dataset)
    full = EvaluationRun(MICRO, tmp_path / "full")
    full.run(cases)
    part = EvaluationRun(MICRO, tmp_path / "part")
    part.run(cases[:1])

    seen: list[str] = []
    resumed = EvaluationRun(MICRO, tmp_path / "part", resume=True)
    assert resumed.run(cases, case_map=counting_map(seen)) == []
    assert seen == list(NAMES[1:])
    a, b = full.payload(), resumed.payload()
    for key in PAYLOAD_KEYS - {"seconds", "dice", "jaccard"}:
        assert a[key] == b[key], key
    for key in ("dice", "jaccard"):
        assert b[key]["mean"] == pytest.approx(a[key]["mean"], abs=2e-6)


def test_failed_cases_are_problems_and_are_not_recorded(dataset, tmp_path):
    cases, _ = find_cases(dataset)

    def broken(todo, config):
        return [failed_case(c, "no good") for c in todo]

    run = EvaluationRun(MICRO, tmp_path / "run")
    assert run.run(cases, case_map=broken) == [f"{n}: no good" for n in NAMES]
    assert run.scores == [] and not (tmp_path / "run" / "cases.json").exists()


def test_an_existing_run_needs_resume_or_overwrite(dataset, tmp_path):
    cases, _ = find_cases(dataset)
    EvaluationRun(MICRO, tmp_path / "run").run(cases[:1])
    with pytest.raises(SamlungError, match="--resume.*--overwrite"):
        EvaluationRun(MICRO, tmp_path / "run")
    assert EvaluationRun(MICRO, tmp_path / "run", overwrite=True).scores == []
    assert not (tmp_path / "run" / "per_slice.csv").exists()


def test_resume_with_other_settings_is_refused(dataset, tmp_path):
    cases, _ = find_cases(dataset)
    EvaluationRun(MICRO, tmp_path / "run").run(cases[:1])
    other = dataclasses.replace(MICRO, strategy="paper")
    with pytest.raises(SamlungError, match="the interrupted run used"):
        EvaluationRun(other, tmp_path / "run", resume=True)


def test_resume_and_save_masks_need_a_folder():
    with pytest.raises(SamlungError, match="--resume needs --out"):
        EvaluationRun(MICRO, resume=True)
    with pytest.raises(SamlungError, match="--save-masks needs --out"):
        EvaluationRun(MICRO, save_masks=True)


def test_save_masks_writes_one_mask_per_case(dataset, tmp_path):
    cases, _ = find_cases(dataset)
    run = EvaluationRun(MICRO, tmp_path / "run", save_masks=True)
    assert run.run(cases[:2]) == []
    assert sorted(p.name for p in (tmp_path / "run").glob("*_samlung.nii.gz")) == [
        f"{n}_samlung.nii.gz" for n in NAMES[:2]
    ]


def test_the_local_map_is_the_default():
    assert choose_case_map() is map_local
    assert choose_case_map(workers=None, scheduler=None) is map_local
