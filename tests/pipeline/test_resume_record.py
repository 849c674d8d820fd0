"""``evaluate --out DIR --resume`` checks the run record before trusting it.

What can be repaired is: a torn last row is dropped, and a case whose rows are
missing, changed, duplicated or bad (garbage, a non-number, a value out of range),
or whose ``cases.json`` entry is bad, is run again.  The summary then equals a clean
run's.  A ``cases.json`` that cannot be read at all stops the run with one line
that says how to start again; never a traceback.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import warnings
from pathlib import Path

import pytest
from pipeline_data import MICRO, NAMES, write_phantoms

from napari_samlung.cli import EXIT_USAGE, main
from napari_samlung.errors import InputFileError
from napari_samlung.io import find_cases
from napari_samlung.io.tables import CSV_FIELDS, read_score_rows, read_scores_csv
from napari_samlung.pipeline.evaluate import EvaluationRun, map_local

CSV, STATE = "per_slice.csv", "cases.json"
TINY = ["--model", "micro_random", "--precision", "fp32", "--window-preset", "paper"]


#: Small phantoms: every test resumes a real run, so keep the cases cheap.
SHAPE = (4, 32, 32)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_phantoms(tmp_path_factory.mktemp("data"), shape=SHAPE)


@pytest.fixture(scope="module")
def clean(dataset, tmp_path_factory) -> tuple[dict, dict]:
    """A clean run's payload and its rows by (case, slice); its folder is kept as
    the template of :func:`finished_run`."""
    cases, _ = find_cases(dataset)
    run = EvaluationRun(MICRO, tmp_path_factory.mktemp("clean") / "run")
    assert run.run(cases) == []
    run.close()
    return run.payload(), _rows(run.out_dir), run.out_dir


def _rows(out: Path) -> dict:
    return {(s.case, s.slice_index): (s.dice, s.jaccard) for s in read_scores_csv(out / CSV)}


def assert_same_as_clean(payload: dict, rows: dict, clean: tuple[dict, dict]) -> None:
    """Equal but for the run time (resumed scores come back from the CSV's 6 decimals)."""
    want, want_rows, _ = clean
    assert set(payload) == set(want)
    for key in set(want) - {"seconds", "dice", "jaccard"}:
        assert payload[key] == want[key], key
    for key in ("dice", "jaccard"):
        for stat, value in want[key].items():
            assert payload[key][stat] == pytest.approx(value, abs=2e-6), (key, stat)
    assert sorted(rows) == sorted(want_rows)
    for key, value in want_rows.items():
        assert rows[key] == pytest.approx(value, abs=2e-6), key


def finished_run(clean: tuple, out: Path) -> None:
    """A copy of the clean run's folder (its record as a finished run left it)."""
    shutil.copytree(clean[2], out)


def resume(dataset: Path, out: Path) -> tuple[EvaluationRun, list[str], list[str]]:
    """Resume the run in ``out``; return it, the cases it ran again, and its warnings."""
    cases, _ = find_cases(dataset)
    seen: list[str] = []

    def counting(todo, config):
        seen.extend(c.name for c in todo)
        return map_local(todo, config)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = EvaluationRun(MICRO, out, resume=True)
        assert run.run(cases, case_map=counting) == []
    run.write_summary(run.payload())
    return run, seen, [str(w.message) for w in caught]


# --------------------------------------------------------------------------- damage to the CSV


def _lines(out: Path) -> list[str]:
    return (out / CSV).read_text().splitlines(keepends=True)


def _write(out: Path, lines: list[str]) -> None:
    (out / CSV).write_text("".join(lines))


def _edit_cell(out: Path, row: int, field: str, value: str) -> None:
    lines = _lines(out)
    cells = lines[row].rstrip("\n").split(",")
    cells[CSV_FIELDS.index(field)] = value
    lines[row] = ",".join(cells) + "\n"
    _write(out, lines)


def torn_row_of_an_unfinished_case(out: Path) -> None:
    (out / CSV).write_text((out / CSV).read_text() + "case_x,3,0.12")


def torn_last_row_of_a_finished_case(out: Path) -> None:
    text = (out / CSV).read_text()
    (out / CSV).write_text(text[: len(text) - 20])


def garbage_line(out: Path) -> None:
    lines = _lines(out)
    _write(out, [*lines[:3], "@@@ not a row at all @@@\n", *lines[3:]])


def garbage_line_naming_a_case(out: Path) -> None:
    lines = _lines(out)
    _write(out, [*lines[:3], "case_b,zzz\n", *lines[3:]])


def rows_of_a_finished_case_deleted(out: Path) -> None:
    _write(out, [line for line in _lines(out) if not line.startswith("case_b,")])


def one_row_deleted(out: Path) -> None:
    lines = _lines(out)
    del lines[2]
    _write(out, lines)


def a_row_duplicated(out: Path) -> None:
    lines = _lines(out)
    _write(out, [*lines, lines[1]])


def emptied(out: Path) -> None:
    (out / CSV).write_bytes(b"")


def header_only(out: Path) -> None:
    _write(out, _lines(out)[:1])


def random_bytes(out: Path) -> None:
    (out / CSV).write_bytes(random.Random(13).randbytes(700))


def random_text(out: Path) -> None:
    rng = random.Random(7)
    (out / CSV).write_text("".join(rng.choice('ab,;"\n0.5') for _ in range(600)))


def deleted(out: Path) -> None:
    (out / CSV).unlink()


def header_changed(out: Path) -> None:
    lines = _lines(out)
    lines[0] = lines[0].replace("dice", "Dice", 1)
    _write(out, lines)


def a_changed_number(out: Path) -> None:
    lines = _lines(out)
    cells = lines[3].split(",")  # a row of case_b
    cells[2] = "0.100000" if cells[2] != "0.100000" else "0.200000"
    lines[3] = ",".join(cells)
    _write(out, lines)


def crlf_line_ends(out: Path) -> None:
    (out / CSV).write_bytes((out / CSV).read_bytes().replace(b"\n", b"\r\n"))


DICE_CELLS = ["abc", "", "nan", "inf", "-0.5", "1.5", "0x1", "1e400"]

#: damage -> the finished cases that must be run again
CSV_DAMAGE = {
    torn_row_of_an_unfinished_case: [],
    torn_last_row_of_a_finished_case: ["case_c"],
    garbage_line: [],
    garbage_line_naming_a_case: ["case_b"],
    rows_of_a_finished_case_deleted: ["case_b"],
    one_row_deleted: ["case_a"],
    a_row_duplicated: ["case_a"],
    emptied: list(NAMES),
    header_only: list(NAMES),
    random_bytes: list(NAMES),
    random_text: list(NAMES),
    deleted: list(NAMES),
    header_changed: list(NAMES),
    a_changed_number: ["case_b"],
    crlf_line_ends: [],
}


@pytest.mark.parametrize("damage", list(CSV_DAMAGE), ids=lambda f: f.__name__)
def test_damaged_rows_are_dropped_and_their_cases_run_again(dataset, clean, tmp_path, damage):
    out = tmp_path / "run"
    finished_run(clean, out)
    damage(out)
    run, again, warned = resume(dataset, out)
    assert sorted(again) == sorted(CSV_DAMAGE[damage])
    assert bool(warned) == bool(again), warned
    assert all(w.count("\n") == 0 and "run again" in w for w in warned)
    assert_same_as_clean(run.payload(), _rows(out), clean)
    # the record is whole again: a second resume runs nothing
    _, again, warned = resume(dataset, out)
    assert again == [] and warned == []


@pytest.mark.parametrize(
    ("field", "value"),
    [("dice", v) for v in DICE_CELLS]
    + [("jaccard", "abc"), ("dice_left_lung", "1.5"), ("dice_left_lung", "")]
    + [("slice", "x"), ("slice", "-1"), ("slice", "2.0"), ("seconds", "-0.5")]
    + [("seconds", "1.5"), ("empty_prediction", "yes"), ("case", "")],
)
def test_a_bad_cell_runs_its_case_again(dataset, clean, tmp_path, field, value):
    """Bad values, and valid ones that differ from what was written (the checksum)."""
    out = tmp_path / "run"
    finished_run(clean, out)
    _edit_cell(out, 3, field, value)  # a row of case_b
    run, again, _ = resume(dataset, out)
    assert again == ["case_b"]
    assert_same_as_clean(run.payload(), _rows(out), clean)


def test_a_crash_mid_case_then_damage_still_ends_like_a_clean_run(dataset, clean, tmp_path):
    """Two cases done, the third cut short mid-row, and a finished case's rows lost."""
    cases, _ = find_cases(dataset)
    out = tmp_path / "run"
    run = EvaluationRun(MICRO, out)
    run.run(cases[:2])
    run.close()
    (out / CSV).write_text((out / CSV).read_text() + "case_c,1,0.9666")
    rows_of_a_finished_case_deleted(out)
    run, again, _ = resume(dataset, out)
    assert sorted(again) == ["case_b", "case_c"]
    assert_same_as_clean(run.payload(), _rows(out), clean)


def test_read_score_rows_never_raises_on_content(tmp_path):
    rng = random.Random(3)
    path = tmp_path / "x.csv"
    header = ",".join(CSV_FIELDS) + "\n"
    for i in range(200):
        body = rng.randbytes(rng.randrange(0, 300))
        path.write_bytes((header.encode() if i % 2 else b"") + body)
        rows = read_score_rows(path)
        assert all(0 <= s.dice <= 1 for s in rows.scores)


# --------------------------------------------------------------------------- damage to cases.json


def _state(out: Path) -> dict:
    return json.loads((out / STATE).read_text())


def _set_state(out: Path, state) -> None:
    (out / STATE).write_text(json.dumps(state))


def entry_not_a_dict(out: Path) -> None:
    state = _state(out)
    state["cases"]["case_a"] = [1, 2]
    _set_state(out, state)


def entry_slices_not_a_number(out: Path) -> None:
    state = _state(out)
    state["cases"]["case_b"]["slices"] = "four"
    _set_state(out, state)


def entry_without_skipped_empty(out: Path) -> None:
    state = _state(out)
    del state["cases"]["case_c"]["skipped_empty"]
    _set_state(out, state)


def entry_negative(out: Path) -> None:
    state = _state(out)
    state["cases"]["case_c"]["skipped_empty"] = -3
    _set_state(out, state)


def entry_slices_wrong(out: Path) -> None:
    state = _state(out)
    state["cases"]["case_a"]["slices"] += 1
    _set_state(out, state)


def entry_bad_checksum(out: Path) -> None:
    state = _state(out)
    state["cases"]["case_b"]["rows_sha256"] = "0" * 64
    _set_state(out, state)


def entry_of_an_unknown_case(out: Path) -> None:
    state = _state(out)
    state["cases"]["case_zz"] = {"skipped_empty": 0, "slices": 2}
    _set_state(out, state)


def state_deleted(out: Path) -> None:
    (out / STATE).unlink()


STATE_REPAIRS = {
    entry_not_a_dict: ["case_a"],
    entry_slices_not_a_number: ["case_b"],
    entry_without_skipped_empty: ["case_c"],
    entry_negative: ["case_c"],
    entry_slices_wrong: ["case_a"],
    entry_bad_checksum: ["case_b"],
    entry_of_an_unknown_case: [],
    state_deleted: list(NAMES),
}


@pytest.mark.parametrize("damage", list(STATE_REPAIRS), ids=lambda f: f.__name__)
def test_a_bad_entry_runs_its_case_again(dataset, clean, tmp_path, damage):
    out = tmp_path / "run"
    finished_run(clean, out)
    damage(out)
    run, again, _ = resume(dataset, out)
    assert sorted(again) == sorted(STATE_REPAIRS[damage])
    assert "case_zz" not in _state(out)["cases"]
    assert_same_as_clean(run.payload(), _rows(out), clean)


STATE_DAMAGE = {
    "truncated": lambda out: (out / STATE).write_text((out / STATE).read_text()[:40]),
    "a JSON list": lambda out: _set_state(out, [1, 2, 3]),
    "no keys": lambda out: _set_state(out, {}),
    "no cases": lambda out: _set_state(out, {"settings": _state(out)["settings"]}),
    "no settings": lambda out: _set_state(out, {"cases": _state(out)["cases"]}),
    "cases a list": lambda out: _set_state(out, {**_state(out), "cases": ["case_a"]}),
    "settings a string": lambda out: _set_state(out, {**_state(out), "settings": "x"}),
    "random bytes": lambda out: (out / STATE).write_bytes(random.Random(5).randbytes(300)),
    "emptied": lambda out: (out / STATE).write_bytes(b""),
    "null": lambda out: (out / STATE).write_text("null"),
    "deeply nested": lambda out: (out / STATE).write_text("[" * 100_000 + "]" * 100_000),
    "a folder": lambda out: ((out / STATE).unlink(), (out / STATE).mkdir()),
}


@pytest.mark.parametrize("name", list(STATE_DAMAGE))
def test_an_unreadable_cases_json_stops_with_one_line(dataset, clean, tmp_path, capsys, name):
    out = tmp_path / "run"
    finished_run(clean, out)
    STATE_DAMAGE[name](out)
    csv_before = (out / CSV).read_bytes()
    with pytest.raises(InputFileError) as info:
        EvaluationRun(MICRO, out, resume=True)
    message = str(info.value)
    assert "\n" not in message and "cases.json" in message
    assert "--overwrite" in message or "folder" in message
    assert (out / CSV).read_bytes() == csv_before  # nothing was changed
    assert not (out / ".napari-samlung.lock").exists()  # and the folder is free

    args = ["evaluate", str(dataset), "--out", str(out), *TINY]
    code = main([*args, "--resume"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == EXIT_USAGE and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("napari-samlung: error: ") and "cases.json" in lines[0]
    if name in ("truncated", "a JSON list", "no keys"):  # the fix it names works
        assert main([*args, "--overwrite"]) == 0
        capsys.readouterr()
        payload = json.loads((out / "summary.json").read_text())
        assert_same_as_clean(payload, _rows(out), clean)


def test_resume_through_the_console_script_reports_the_repair(dataset, clean, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["evaluate", str(dataset), "--out", str(out), *TINY]
    assert main(args) == 0
    rows_of_a_finished_case_deleted(out)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main([*args, "--resume"]) == 0
    capsys.readouterr()
    assert [str(w.message) for w in caught if "run again" in str(w.message)] == [
        f"{out}: the run record was damaged; 1 of the 3 finished cases will be run again"
    ]
    payload = json.loads((out / "summary.json").read_text())
    assert_same_as_clean(payload, _rows(out), clean)
    assert not (out / ".napari-samlung.lock").exists()


def test_the_record_is_replaced_atomically_on_resume(dataset, clean, tmp_path):
    """The rewrite of the trusted rows leaves no temporary file behind."""
    out = tmp_path / "run"
    finished_run(clean, out)
    garbage_line(out)
    resume(dataset, out)
    assert sorted(p.name for p in out.iterdir()) == sorted([CSV, STATE, "summary.json"])
    assert os.path.getsize(out / CSV) > 0
