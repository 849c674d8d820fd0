"""``evaluate --strategy auto``, ``segment --auto``, ``--combine`` and ``--no-hu-refine`` on
the synthetic CT phantom (HU, lung on slices 1-4 of 6) with the micro random SAM.

The scores of the random model mean nothing; what is checked is the plumbing: the
automatic path writes only where the CT has air-filled lung, the summary counts the
slices written outside the true lung, X-rays are refused in one line, Ctrl-C exits 130
without writing, and the HU refinement is on by default for CT and never for X-rays.
The quality floors on real CT are in ``test_auto_real_ct.py``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from cli_helpers import TINY, refused, run_cli, xray_fixture  # noqa: F401 (the xray fixture)
from pipeline_data import SHAPE, lung_slices, write_phantom_ct

from napari_samlung.cli import EXIT_INTERRUPTED
from napari_samlung.core.config import RunConfig
from napari_samlung.core.metrics import dice
from napari_samlung.io import read_image, read_mask, write_labels
from napari_samlung.pipeline.segment import segment_image


@pytest.fixture
def phantom(tmp_path):
    return write_phantom_ct(tmp_path)


def _mean_dice(pred: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([dice(pred[z] > 0, truth[z] > 0) for z in lung_slices(truth)]))


def test_segment_auto_writes_only_the_lung_slices_on_the_source_grid(phantom, tmp_path, capsys):
    image_path, _, labels = phantom
    out = tmp_path / "auto.nii.gz"
    code, stdout, _ = run_cli(capsys, ["segment", image_path, "--auto", "-o", out, *TINY])
    assert code == 0
    assert f"lung found on {len(lung_slices(labels))} of {SHAPE[0]} slices" in stdout
    written = read_image(out)
    assert np.allclose(written.affine, read_image(image_path).affine)
    pred = read_mask(out, like=read_image(image_path))
    assert lung_slices(pred) == lung_slices(labels)


def test_combine_candidates_needs_no_model_and_follows_the_air(phantom, tmp_path, capsys):
    image_path, _, labels = phantom
    out = tmp_path / "air.nii.gz"
    args = ["segment", image_path, "--auto", "--combine", "candidates", "-o", out, *TINY]
    assert run_cli(capsys, args)[0] == 0
    pred = read_mask(out, like=read_image(image_path))
    assert _mean_dice(pred, labels) >= 0.95
    assert set(np.unique(pred)) == {0, 1, 2}


def test_evaluate_auto_reports_false_positive_slices(phantom, tmp_path, capsys):
    image_path, mask_path, labels = phantom
    target = tmp_path / "summary.json"
    args = ["evaluate", image_path, mask_path, "--strategy", "auto", "--json", target, *TINY]
    code, stdout, _ = run_cli(capsys, args)
    assert code == 0
    assert "strategy auto (refined)" in stdout
    assert "false-positive slices (a mask where the ground truth has no lung): 0" in stdout
    payload = json.loads(target.read_text())
    assert payload["strategy"] == "auto" and payload["combine"] == "refined"
    assert payload["false_positive_slices"] == 0
    assert payload["slices"] == len(lung_slices(labels))
    assert payload["skipped_empty"] == SHAPE[0] - len(lung_slices(labels))


def test_a_slice_with_lung_the_automatic_path_misses_scores_zero(phantom, tmp_path, capsys):
    """Slice 0 of the phantom has no air; a mask that puts lung there counts it as missed."""
    image_path, _, labels = phantom
    more = labels.copy()
    more[0] = labels[lung_slices(labels)[0]]
    mask = tmp_path / "more_mask.nii.gz"
    write_labels(mask, more, like=read_image(image_path))
    target = tmp_path / "summary.json"
    args = ["evaluate", image_path, mask, "--strategy", "auto", "--json", target, *TINY]
    assert run_cli(capsys, args)[0] == 0
    payload = json.loads(target.read_text())
    assert payload["slices"] == len(lung_slices(labels)) + 1
    assert payload["empty_predictions"] == 1 and payload["dice"]["min"] == 0.0
    assert payload["false_positive_slices"] == 0


def test_a_prompted_evaluate_has_no_false_positive_key(phantom, tmp_path, capsys):
    image_path, mask_path, _ = phantom
    target = tmp_path / "summary.json"
    assert run_cli(capsys, ["evaluate", image_path, mask_path, "--json", target, *TINY])[0] == 0
    assert "false_positive_slices" not in json.loads(target.read_text())


def test_auto_on_an_xray_is_one_line(xray, tmp_path, capsys):
    image, mask = xray
    line = refused(capsys, ["evaluate", image, mask, "--strategy", "auto", *TINY])
    assert "needs a CT in HU" in line and "--strategy per-lung" in line
    line = refused(capsys, ["segment", image, "--auto", "-o", tmp_path / "o.png", *TINY])
    assert "needs a CT in HU" in line and "--prompts-from" in line
    assert not (tmp_path / "o.png").exists()


def test_ctrl_c_during_segment_auto_exits_130_and_writes_nothing(
    phantom, tmp_path, capsys, monkeypatch
):
    import napari_samlung.pipeline.auto as auto_module

    real = auto_module.segment_auto

    def interrupted_after_one_slice(*args, **kwargs):
        def progress(done, total):
            raise KeyboardInterrupt

        return real(*args, **{**kwargs, "progress": progress})

    monkeypatch.setattr(auto_module, "segment_auto", interrupted_after_one_slice)
    out = tmp_path / "auto.nii.gz"
    code, _, err = run_cli(capsys, ["segment", phantom[0], "--auto", "-o", out, *TINY])
    assert code == EXIT_INTERRUPTED
    assert "interrupted" in err and not out.exists()


def test_a_cancelled_auto_run_keeps_its_completed_slices(phantom):
    image_path, _, labels = phantom
    config = RunConfig(model_id="micro_random", device="cpu", precision="fp32")
    seen = []
    result = segment_image(
        image_path,
        config,
        auto=True,
        progress=lambda done, total: seen.append((done, total)),
        should_cancel=lambda: True,
    )
    assert seen == [(1, len(lung_slices(labels)))]
    assert result.written == lung_slices(labels)[:1]
    assert lung_slices(result.labels) == result.written


def test_hu_refinement_is_the_default_for_ct(phantom, tmp_path, capsys):
    """The masks of a ground-truth-prompted CT run are checked against its air unless
    --no-hu-refine (the gain is measured on real CT in ``test_auto_real_ct.py``)."""
    image_path, mask_path, _ = phantom
    outs = []
    for name, extra in (("default", []), ("off", ["--no-hu-refine"])):
        out = tmp_path / f"{name}.nii.gz"
        args = ["segment", image_path, "--prompts-from", mask_path, "-o", out, *TINY, *extra]
        assert run_cli(capsys, args)[0] == 0
        outs.append(read_mask(out, like=read_image(image_path)))
    assert not np.array_equal(*outs)


def test_xrays_are_never_refined(xray, tmp_path, capsys):
    image, mask = xray
    outs = []
    for name, extra in (("default", []), ("off", ["--no-hu-refine"])):
        out = tmp_path / f"{name}.png"
        args = ["segment", image, "--prompts-from", mask, "-o", out, *TINY, *extra]
        assert run_cli(capsys, args)[0] == 0
        outs.append(read_mask(out))
    assert np.array_equal(*outs)


def test_guarded_propagation_stays_on_the_air_filled_slices(phantom):
    image_path, mask_path, labels = phantom
    config = RunConfig(model_id="micro_random", device="cpu", precision="fp32")
    result = segment_image(image_path, config, seed_from=mask_path)
    assert set(result.propagation.written) <= set(lung_slices(labels))


def test_settings_that_decide_the_scores():
    """What a resumed run must match: the refinement, or an automatic run's rule."""
    plain = RunConfig(model_id="micro_random")
    assert plain.settings()["hu_refine"] is True
    assert RunConfig(model_id="micro_random", hu_refine=False).settings() != plain.settings()
    auto = RunConfig(model_id="micro_random", strategy="auto", combine="model")
    assert auto.settings()["strategy"] == "auto" and auto.settings()["combine"] == "model"
    with pytest.raises(ValueError, match="combine must be one of"):
        RunConfig(combine="union")


def test_resume_with_the_refinement_switched_off_is_refused(phantom, tmp_path, capsys):
    image_path, mask_path, _ = phantom
    out = tmp_path / "run"
    base = ["evaluate", image_path, mask_path, "--out", out, *TINY]
    assert run_cli(capsys, base)[0] == 0
    line = refused(capsys, [*base, "--resume", "--no-hu-refine"])
    assert "hu_refine" in line
