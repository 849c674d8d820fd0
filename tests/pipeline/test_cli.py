"""The console script: exit codes, one-line errors, evaluate (with resume), segment,
and the quality floors on the real data (marked slow)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import DATA_DIR
from napari_samlung.cli import EXIT_INTERRUPTED, EXIT_SKIPPED, EXIT_USAGE, main
from napari_samlung.io.tables import read_scores_csv

MONTGOMERY = DATA_DIR / "montgomery"
COVID = DATA_DIR / "covid19_ct_slices"
CASES = ("MCUCXR_0001_0", "MCUCXR_0002_0", "MCUCXR_0003_0")
SUMMARY_KEYS = {
    "model",
    "strategy",
    "cases",
    "slices",
    "skipped_empty",
    "empty_predictions",
    "dice",
    "jaccard",
    "seconds",
}
STAT_KEYS = {"mean", "std", "min", "max", "median"}
#: A small random SAM (hidden registry entry ``micro_random``) for plumbing tests.
TINY = ["--model", "micro_random", "--precision", "fp32"]


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not found at {path}; set SAMLUNG_DATA to the shared data folder")
    return path


@pytest.fixture
def xrays(tmp_path) -> tuple[Path, Path]:
    """An images/ and a masks/ folder holding three real Montgomery cases (symlinks)."""
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    for name in CASES:
        (images / f"{name}.png").symlink_to(_need(MONTGOMERY / "images" / f"{name}.png"))
        (masks / f"{name}.png").symlink_to(_need(MONTGOMERY / "masks" / f"{name}.png"))
    return images, masks


@pytest.fixture
def synthetic_pair(tmp_path) -> tuple[Path, Path]:
    """A small synthetic X-ray PNG and its two-lung mask (no real data needed)."""
    image = np.full((64, 96), 200, np.uint8)
    mask = np.zeros((64, 96), np.uint8)
    mask[10:54, 10:40] = 255
    mask[12:50, 56:86] = 255
    image[mask > 0] = 40
    image_path, mask_path = tmp_path / "chest.png", tmp_path / "chest_mask.png"
    Image.fromarray(image).save(image_path)
    Image.fromarray(mask).save(mask_path)
    return image_path, mask_path


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("napari-samlung: error: ")
    return lines[0]


# --------------------------------------------------------------------------- errors


def test_missing_file_is_one_line_on_stderr(tmp_path, capsys):
    missing = tmp_path / "nope.png"
    code = main(["evaluate", str(missing), str(tmp_path / "nope_mask.png")])
    assert code == EXIT_USAGE
    line = _one_error_line(capsys)
    assert str(missing) in line and "not found" in line


def test_unknown_model(synthetic_pair, capsys):
    images, masks = synthetic_pair
    code = main(["evaluate", str(images), str(masks), "--model", "vit_x"])
    assert code == EXIT_USAGE
    line = _one_error_line(capsys)
    assert "unknown model 'vit_x'" in line and "lite_medsam" in line


def test_both_window_options_is_an_error(synthetic_pair, capsys):
    images, masks = synthetic_pair
    code = main(
        ["evaluate", str(images), str(masks), "--window-preset", "paper", "--window-level", "-600"]
    )
    assert code == EXIT_USAGE
    assert "--window-preset" in _one_error_line(capsys)


def test_bad_window_width_is_an_error(synthetic_pair, capsys):
    images, masks = synthetic_pair
    args = ["evaluate", str(images), str(masks), "--window-level", "-600", "--window-width", "0"]
    assert main(args) == EXIT_USAGE
    assert "window width must be a positive number" in _one_error_line(capsys)


def _small_mask(tmp_path) -> Path:
    mask = np.zeros((100, 80), np.uint8)
    mask[20:80, 10:30] = 255
    mask[20:80, 50:70] = 255
    path = tmp_path / "small_mask.png"
    Image.fromarray(mask).save(path)
    return path


def test_segment_with_a_mask_of_another_shape(synthetic_pair, tmp_path, capsys):
    image, _ = synthetic_pair
    out = tmp_path / "out.png"
    code = main(
        ["segment", str(image), "--prompts-from", str(_small_mask(tmp_path)), "-o", str(out)] + TINY
    )
    assert code == EXIT_USAGE
    line = _one_error_line(capsys)
    assert "small_mask.png" in line and "(100, 80)" in line
    assert not out.exists()


def test_evaluate_skips_a_case_whose_mask_does_not_fit(synthetic_pair, tmp_path, capsys):
    image, _ = synthetic_pair
    code = main(["evaluate", str(image), str(_small_mask(tmp_path))] + TINY)
    assert code == EXIT_SKIPPED
    err = capsys.readouterr().err
    assert "napari-samlung: skipped: chest:" in err and "small_mask.png" in err


def test_resume_without_out_is_an_error(synthetic_pair, capsys):
    images, masks = synthetic_pair
    assert main(["evaluate", str(images), str(masks), "--resume"] + TINY) == EXIT_USAGE
    assert "--resume needs --out" in _one_error_line(capsys)


# --------------------------------------------------------------------------- evaluate


def test_evaluate_writes_per_slice_csv_and_summary(xrays, tmp_path, capsys):
    images, masks = xrays
    out, summary_json = tmp_path / "run", tmp_path / "summary.json"
    code = main(
        ["evaluate", str(images), str(masks), "--limit", "2"]
        + ["--out", str(out), "--json", str(summary_json)]
    )
    assert code == 0, capsys.readouterr().err
    stdout = capsys.readouterr().out
    assert "Dice" in stdout and "Jaccard" in stdout

    rows = read_scores_csv(out / "per_slice.csv")
    assert [r.case for r in rows] == list(CASES[:2])
    assert all(r.dice >= 0.9 for r in rows)

    summary = json.loads(summary_json.read_text())
    assert set(summary) >= SUMMARY_KEYS
    assert set(summary["dice"]) == STAT_KEYS and set(summary["jaccard"]) == STAT_KEYS
    assert summary["model"] == "lite_medsam" and summary["strategy"] == "per-lung"
    assert (summary["cases"], summary["slices"]) == (2, 2)
    assert summary["skipped_empty"] == 0 and summary["empty_predictions"] == 0
    assert summary["dice"]["mean"] == pytest.approx(np.mean([r.dice for r in rows]), abs=1e-6)
    assert summary["dice"]["mean"] >= 0.95
    assert summary["jaccard"]["mean"] <= summary["dice"]["mean"]
    assert summary["seconds"] > 0
    assert json.loads((out / "summary.json").read_text())["dice"] == summary["dice"]


def test_resume_gives_the_same_summary_as_an_uninterrupted_run(xrays, tmp_path, capsys):
    images, masks = xrays
    full, part = tmp_path / "full", tmp_path / "part"
    base = ["evaluate", str(images), str(masks)] + TINY
    assert main(base + ["--out", str(full)]) == 0
    # "interrupted" after the first case
    assert main(base + ["--out", str(part), "--limit", "1"]) == 0
    assert [r.case for r in read_scores_csv(part / "per_slice.csv")] == [CASES[0]]
    assert main(base + ["--out", str(part), "--resume"]) == 0
    capsys.readouterr()

    a = json.loads((full / "summary.json").read_text())
    b = json.loads((part / "summary.json").read_text())
    assert (b["cases"], b["slices"]) == (3, 3)
    assert_same_summary(a, b)
    rows_a = read_scores_csv(full / "per_slice.csv")
    rows_b = read_scores_csv(part / "per_slice.csv")
    assert [r.case for r in rows_b] == [r.case for r in rows_a] == list(CASES)
    assert [r.dice for r in rows_b] == [r.dice for r in rows_a]


def test_resume_after_ctrl_c_and_a_crash_mid_case(xrays, tmp_path, capsys, monkeypatch):
    """Ctrl-C during the second case exits 130; rows of a case that was not recorded as
    done (a crash between the CSV and the state file) are dropped on --resume."""
    import napari_samlung.pipeline.evaluate as evaluation

    images, masks = xrays
    full, part = tmp_path / "full", tmp_path / "part"
    base = ["evaluate", str(images), str(masks)] + TINY
    assert main(base + ["--out", str(full)]) == 0
    real_evaluate_case = evaluation.evaluate_case

    def interrupted(segmenter, case, config, *args, **kwargs):
        if case.name == CASES[1]:
            raise KeyboardInterrupt
        return real_evaluate_case(segmenter, case, config, *args, **kwargs)

    monkeypatch.setattr(evaluation, "evaluate_case", interrupted)
    capsys.readouterr()
    assert main(base + ["--out", str(part)]) == EXIT_INTERRUPTED
    err = capsys.readouterr().err
    assert "interrupted" in err and "--resume" in err
    assert [r.case for r in read_scores_csv(part / "per_slice.csv")] == [CASES[0]]
    # a crash after writing CASES[2]'s rows but before recording it as done
    with open(part / "per_slice.csv", "a") as fh:
        fh.write(f"{CASES[2]},0,0.100000,0.050000,,,,,0\n")
    monkeypatch.setattr(evaluation, "evaluate_case", real_evaluate_case)
    assert main(base + ["--out", str(part), "--resume"]) == 0
    a = json.loads((full / "summary.json").read_text())
    b = json.loads((part / "summary.json").read_text())
    assert_same_summary(a, b)
    assert [r.case for r in read_scores_csv(part / "per_slice.csv")] == list(CASES)


def assert_same_summary(a: dict, b: dict) -> None:
    """Equal but for the run time (resumed scores come back from the CSV's 6 decimals)."""
    assert set(a) == set(b)
    for key in set(a) - {"seconds", "dice", "jaccard"}:
        assert a[key] == b[key], key
    for key in ("dice", "jaccard"):
        for stat in STAT_KEYS:
            assert b[key][stat] == pytest.approx(a[key][stat], abs=2e-6), (key, stat)


def test_existing_output_needs_overwrite_or_resume(synthetic_pair, tmp_path, capsys):
    images, masks = synthetic_pair
    out = tmp_path / "run"
    args = ["evaluate", str(images), str(masks), "--out", str(out), "--limit", "1"] + TINY
    assert main(args) == 0
    before = (out / "per_slice.csv").read_text()
    capsys.readouterr()
    assert main(args) == EXIT_USAGE
    line = _one_error_line(capsys)
    assert "exists" in line and "--overwrite" in line and "--resume" in line
    assert (out / "per_slice.csv").read_text() == before
    assert main(args + ["--overwrite"]) == 0


def test_existing_json_needs_overwrite(synthetic_pair, tmp_path, capsys):
    images, masks = synthetic_pair
    target = tmp_path / "s.json"
    target.write_text("{}")
    args = ["evaluate", str(images), str(masks), "--limit", "1", "--json", str(target)] + TINY
    assert main(args) == EXIT_USAGE
    assert "--overwrite" in _one_error_line(capsys)
    assert target.read_text() == "{}"


def test_existing_json_is_refused_before_any_work(synthetic_pair, tmp_path, capsys, monkeypatch):
    from napari_samlung.core.config import RunConfig

    def no_model(self):
        raise AssertionError("the run started although its output cannot be written")

    monkeypatch.setattr(RunConfig, "make_segmenter", no_model)
    images, masks = synthetic_pair
    target = tmp_path / "s.json"
    target.write_text("{}")
    args = ["evaluate", str(images), str(masks), "--json", str(target)] + TINY
    assert main(args) == EXIT_USAGE
    assert "--overwrite" in _one_error_line(capsys)


# --------------------------------------------------------------------------- segment


def test_segment_writes_a_mask_and_refuses_to_overwrite(synthetic_pair, tmp_path, capsys):
    image, mask = synthetic_pair
    out = tmp_path / "pred.png"
    args = ["segment", str(image), "--prompts-from", str(mask), "-o", str(out)] + TINY
    assert main(args) == 0, capsys.readouterr().err
    stdout = capsys.readouterr().out
    assert f"wrote {out}" in stdout and "Dice" in stdout
    pred = np.asarray(Image.open(out))
    assert pred.shape == (64, 96) and pred.dtype == np.uint8
    assert set(np.unique(pred)) <= {0, 1, 2}
    written = out.read_bytes()

    assert main(args) == EXIT_USAGE
    line = _one_error_line(capsys)
    assert str(out) in line and "--overwrite" in line
    assert out.read_bytes() == written
    out.write_bytes(b"stale")
    assert main(args + ["--overwrite"]) == 0
    assert out.read_bytes() == written


# --------------------------------------------------------------------------- quality floors


@pytest.mark.slow
def test_montgomery_quality_floor(tmp_path, capsys):
    """The issue's "done when": all 138 Montgomery X-rays with the defaults."""
    images, masks = _need(MONTGOMERY / "images"), _need(MONTGOMERY / "masks")
    target = tmp_path / "summary.json"
    code = main(["evaluate", str(images), str(masks), "--json", str(target)])
    assert code == 0, capsys.readouterr().err
    summary = json.loads(target.read_text())
    assert summary["cases"] == summary["slices"] == 138
    assert summary["empty_predictions"] == 0
    assert summary["dice"]["mean"] >= 0.97
    assert summary["jaccard"]["mean"] >= 0.94


@pytest.mark.slow
def test_covid_ct_slices_quality_floor(tmp_path, capsys):
    """coronacases_001 slices 98/110/122 (int16 HU), each evaluated as a file pair."""
    means = []
    for z in (98, 110, 122):
        image = _need(COVID / f"coronacases_001_image_slice_{z}.npy")
        mask = _need(COVID / f"coronacases_001_masks_slice_{z}.npy")
        target = tmp_path / f"s{z}.json"
        assert main(["evaluate", str(image), str(mask), "--json", str(target)]) == 0
        summary = json.loads(target.read_text())
        assert summary["slices"] == 1
        means.append(summary["dice"]["mean"])
    capsys.readouterr()
    assert np.mean(means) >= 0.95, means


def test_cache_dir_option_reuses_embeddings_across_runs(tmp_path):
    """--cache-dir: a second process-like run makes no encoder call."""
    import numpy as np

    from napari_samlung.cli import _config, build_parser

    args = build_parser().parse_args(
        [
            "segment",
            "x.png",
            "--prompts-from",
            "m.png",
            "-o",
            "o.png",
            *TINY,
            "--cache-dir",
            str(tmp_path / "emb"),
        ]
    )
    cfg = _config(args)
    rgb = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    first = cfg.make_segmenter()
    first.embed(rgb)
    assert first.encoder_calls == 1 and any((tmp_path / "emb").iterdir())
    second = cfg.make_segmenter()
    second.embed(rgb)
    assert second.encoder_calls == 0
    no_cache = _config(
        build_parser().parse_args(
            ["segment", "x.png", "--prompts-from", "m.png", "-o", "o.png", *TINY]
        )
    )
    assert no_cache.make_segmenter().disk_cache is None
