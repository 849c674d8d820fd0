"""The benchmark scripts run and keep the interface the README and issue promise.

Each script runs in-process on its smallest settings and writes its JSON; the
tests check the keys, the machine record and the facts that do not depend on
timing (encoder calls, identical labels, Dice agreement).  No test asserts a
time or a speed-up: those numbers come from running the scripts on a quiet
machine (docs/performance.md).
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

from conftest import DATA_DIR, requires_data

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
COMMON = ["--data", str(DATA_DIR), "--threads", "2"]

pytestmark = pytest.mark.slow


@pytest.fixture
def bench(monkeypatch):
    """Import a script of benchmarks/ as a module (they import ``_common`` by path)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))

    def load(name: str):
        sys.modules.pop(name, None)
        return importlib.import_module(name)

    return load


def _written(path: Path) -> dict:
    data = json.loads(path.read_text())
    assert data["machine"]["cores"] >= 1 and data["machine"]["torch"]
    assert data["command"].startswith("python")
    return data


@requires_data("montgomery")
def test_latency_reports_p50_p95_over_at_least_50_prompts(bench, tmp_path):
    out = tmp_path / "latency.json"
    bench("latency").main(["--prompts", "50", "--rounds", "1", "--json", str(out), *COMMON])
    data = _written(out)
    assert data["model"] == "lite_medsam" and data["n"] >= 50
    assert 0 < data["p50_ms"] <= data["p95_ms"]
    assert data["sampredictor_n"] == data["n"]  # the reference ran on the same prompts


@requires_data("ct_volumes_128")
def test_cache_second_run_makes_no_encoder_calls(bench, tmp_path):
    out = tmp_path / "cache.json"
    args = ["--max-slices", "3", "--repeats", "1", "--cache-dir", str(tmp_path / "c")]
    bench("cache").main([*args, "--json", str(out), *COMMON])
    data = _written(out)
    for key in ("first_s", "second_s", "encoder_calls_second"):
        assert key in data
    assert data["slices"] == 3
    assert data["encoder_calls_first"] == 3 and data["encoder_calls_second"] == 0
    assert data["disk_hits_second"] == 3 and data["same_labels"]
    assert data["first_dice"] == data["second_dice"]


@requires_data("ct_volumes_128")
@requires_data("montgomery")
def test_volume_times_ours_and_the_baseline_with_the_same_dice(bench, tmp_path):
    out = tmp_path / "volume.json"
    bench("volume").main(["--quick", "--json", str(out), *COMMON])
    data = _written(out)
    for key in ("ours_s", "baseline_s", "ratio", "ours_dice", "baseline_dice", "slices"):
        assert key in data
    assert data["slices"] == 21  # 16 CT slices with lung + 5 X-rays
    assert abs(data["ours_dice"] - data["baseline_dice"]) <= 0.002


@requires_data("montgomery")
def test_embed_reports_per_slice_and_batched_times_per_model(bench, tmp_path):
    out = tmp_path / "embed.json"
    bench("embed").main(["--slices", "2", "--repeat", "1", "--json", str(out), *COMMON])
    data = _written(out)
    for model in ("lite_medsam", "tiny_random"):
        assert data[model]["s_per_slice"] > 0 and data[model]["batched_s_per_slice"] > 0
    assert data["lite_medsam_fast_vs_plain_dice"]["n"] >= 2


@requires_data("montgomery")
def test_agreement_fp32_fast_path_gives_sampredictors_masks(bench, tmp_path):
    out = tmp_path / "agreement.json"
    bench("agreement").main(["--ct-step", "200", "--xrays", "2", "--json", str(out), *COMMON])
    data = _written(out)
    fp32 = data["fast_fp32"]
    assert fp32["n_masks"] >= 4 and fp32["min"] == 1.0 and fp32["below_0_995"] == []
    bf16 = [v for k, v in data.items() if k.startswith("fast_") and k != "fast_fp32"]
    assert bf16 and bf16[0]["pooled_dice"] >= 0.99


def test_gpu_says_so_and_exits_0_without_a_gpu(bench, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here: the script would measure it")
    assert bench("gpu").main(["--data", str(BENCHMARKS)]) == 0
    assert "no CUDA GPU" in capsys.readouterr().out


@requires_data("ct_volumes_128")
def test_annotator_writes_the_promised_json_and_plot(bench, tmp_path):
    out, png = tmp_path / "annotator.json", tmp_path / "annotator.png"
    args = ["--volumes", "1", "--max-interactions", "2", "--plot", str(png)]
    bench("annotator").main([*args, "--json", str(out), *COMMON])
    data = _written(out)
    assert set(data) >= {"volumes", "mean_interactions_to_within_0_01"}
    (vol,) = data["volumes"]
    for key in (
        "name",
        "every_slice_dice",
        "dice_by_interactions",
        "false_positive_slices_by_interactions",
        "interactions_to_within_0_01",
        "seconds_per_interaction",
    ):
        assert key in vol
    assert (
        len(vol["dice_by_interactions"]) == len(vol["false_positive_slices_by_interactions"]) == 3
    )
    # the automatic start already holds the floors the issue sets
    assert vol["dice_by_interactions"][0] >= 0.95
    assert vol["false_positive_slices_by_interactions"][0] <= 1
    reached = vol["interactions_to_within_0_01"]
    expected = 11 if reached is None else reached
    assert data["mean_interactions_to_within_0_01"] == expected
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"
