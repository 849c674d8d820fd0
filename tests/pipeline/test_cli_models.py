"""Models and devices: checkpoints of another architecture, truncated or interrupted
downloads, a missing GPU, and no float64 tensor anywhere on the segment path (MPS).

The conventions and helpers are in ``cli_helpers.py``.
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
import torch
from cli_helpers import (
    refused,
    run_cli,
    segment_args,
    two_lungs,
    xray_fixture,  # noqa: F401 (the xray fixture)
)

from conftest import closed_port, serve_bytes
from napari_samlung.core import models

# --------------------------------------------------------------------------- models


@pytest.fixture(scope="module")
def micro_state() -> dict:
    model, _, _ = models.load_model("micro_random", device="cpu")
    return model.state_dict()


def _payload(state: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def test_checkpoint_of_another_architecture(tmp_path, xray, capsys, micro_state):
    ckpt = tmp_path / "micro.pth"
    torch.save(micro_state, ckpt)
    out = tmp_path / "pred.png"
    args = segment_args(*xray, out)
    args[args.index("micro_random")] = "tiny_random"
    line = refused(capsys, args + ["--checkpoint", ckpt])
    assert "micro.pth: these weights do not fit the vit_tiny architecture" in line
    assert "choose the model that matches the checkpoint" in line
    assert not out.exists()


def test_checkpoint_of_another_architecture_names_the_likely_one(tmp_path, xray, capsys):
    ckpt = tmp_path / "sam_b_like.pth"
    torch.save({"image_encoder.patch_embed.proj.weight": torch.zeros(768, 3, 16, 16)}, ckpt)
    line = refused(capsys, segment_args(*xray, tmp_path / "pred.png") + ["--checkpoint", ckpt])
    assert "do not fit the vit_micro architecture (it looks like vit_b weights)" in line


def test_checkpoint_of_micro_random_is_recognised(tmp_path, xray, capsys, micro_state):
    ckpt = tmp_path / "micro.pth"
    torch.save(micro_state, ckpt)
    args = segment_args(*xray, tmp_path / "pred.png")
    args[args.index("micro_random")] = "tiny_random"
    assert "looks like micro_random" in refused(capsys, args + ["--checkpoint", ckpt])


def test_truncated_checkpoint(tmp_path, xray, capsys, micro_state):
    content = _payload(micro_state)
    ckpt = tmp_path / "cut.pth"
    ckpt.write_bytes(content[: len(content) // 2])
    line = refused(capsys, segment_args(*xray, tmp_path / "pred.png") + ["--checkpoint", ckpt])
    assert "cut.pth: not a readable PyTorch checkpoint" in line
    assert "truncated or corrupt: delete it and download it again" in line


def test_no_network_while_downloading(tmp_path, xray, capsys, weights_cache, monkeypatch):
    url = f"http://127.0.0.1:{closed_port()}/x.pth"
    monkeypatch.setitem(
        models.REGISTRY, "vit_b", dataclasses.replace(models.get_spec("vit_b"), url=url)
    )
    out = tmp_path / "pred.png"
    args = ["segment", xray[0], "--prompts-from", xray[1], "-o", out, "--model", "vit_b"]
    line = refused(capsys, args)
    assert f"could not download {url}" in line and "Offline?" in line
    assert "sam_vit_b_01ec64.pth" in line and "--checkpoint PATH" in line
    assert not out.exists()
    assert not (weights_cache / "checkpoints" / "sam_vit_b_01ec64.pth").exists()


@pytest.fixture
def weights_server(micro_state):
    """A local server of the micro model's weights (``conftest.serve_bytes``)."""
    with serve_bytes(_payload(micro_state), "micro_dl.pth") as srv:
        yield srv


def _downloadable_micro(monkeypatch, url: str, payload: bytes) -> None:
    import xxhash

    spec = dataclasses.replace(
        models.get_spec("micro_random"),
        id="micro_dl",
        url=url,
        filename="micro_dl.pth",
        xxh128=xxhash.xxh3_128(payload).hexdigest(),
        needs_checkpoint=True,
    )
    monkeypatch.setitem(models.REGISTRY, "micro_dl", spec)


def test_interrupted_download_is_never_used_and_is_resumed(
    tmp_path, xray, capsys, weights_cache, monkeypatch, weights_server
):
    payload = weights_server.payload
    _downloadable_micro(monkeypatch, weights_server.url, payload)
    out = tmp_path / "pred.png"
    args = ["segment", xray[0], "--prompts-from", xray[1], "-o", out]
    args += ["--model", "micro_dl", "--precision", "fp32"]
    final = weights_cache / "checkpoints" / "micro_dl.pth"
    part = final.with_name("micro_dl.pth.part")

    weights_server.cut = len(payload) // 2
    line = refused(capsys, args)
    assert "could not download" in line and "will be resumed next time" in line
    assert part.stat().st_size == len(payload) // 2
    assert not final.exists() and not out.exists()

    weights_server.cut = None
    code, _, err = run_cli(capsys, args)
    assert code == 0, err
    assert weights_server.requests[-1]["Range"] == f"bytes={len(payload) // 2}-"
    assert final.read_bytes() == payload and not part.exists()
    assert out.exists()


def test_a_complete_looking_part_file_is_not_used_offline(
    tmp_path, xray, capsys, weights_cache, monkeypatch, micro_state
):
    payload = _payload(micro_state)
    _downloadable_micro(monkeypatch, f"http://127.0.0.1:{closed_port()}/micro_dl.pth", payload)
    part = weights_cache / "checkpoints" / "micro_dl.pth.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(payload)
    args = ["segment", xray[0], "--prompts-from", xray[1], "-o", tmp_path / "pred.png"]
    line = refused(capsys, args + ["--model", "micro_dl", "--precision", "fp32"])
    assert "could not download" in line
    assert not (weights_cache / "checkpoints" / "micro_dl.pth").exists()
    assert part.read_bytes() == payload


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_requested_where_there_is_none(tmp_path, xray, capsys):
    line = refused(capsys, segment_args(*xray, tmp_path / "pred.png") + ["--device", "cuda"])
    assert "CUDA was requested but no CUDA GPU is available; use --device cpu" in line


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="needs a machine without MPS")
def test_mps_requested_where_there_is_none(tmp_path, xray, capsys):
    line = refused(capsys, segment_args(*xray, tmp_path / "pred.png") + ["--device", "mps"])
    assert "MPS was requested but is not available here; use --device cpu" in line


# --------------------------------------------------------------------------- no float64 (MPS)


def _tensors(value):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item)


def test_the_segment_path_never_makes_a_float64_tensor(monkeypatch):
    """MPS has no float64: every tensor made or fed to a module while segmenting (points,
    boxes, per-lung prompts, multimask, volumes, propagation) must be float32 or smaller."""
    from torch.overrides import TorchFunctionMode

    from napari_samlung.core.engine import Segmenter
    from napari_samlung.core.prompts import Prompt, get_strategy
    from napari_samlung.core.propagation import propagate, seeds_from_labels
    from napari_samlung.core.volume import segment_from_labels
    from napari_samlung.core.windowing import Window, to_rgb

    segmenter = Segmenter.from_registry("micro_random", device="cpu", precision="fp32")
    found: list[str] = []

    def check(where: str, value) -> None:
        found.extend(where for t in _tensors(value) if t.dtype == torch.float64)

    class NoFloat64(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            result = func(*args, **(kwargs or {}))
            check(getattr(func, "__name__", str(func)), result)
            return result

    real_from_numpy = torch.from_numpy

    def from_numpy(array):
        assert array.dtype != np.float64, f"float64 array handed to torch: {array.shape}"
        return real_from_numpy(array)

    monkeypatch.setattr(torch, "from_numpy", from_numpy)
    hooks = [
        module.register_forward_pre_hook(
            lambda mod, args, kwargs: check(type(mod).__name__, (args, kwargs)), with_kwargs=True
        )
        for module in segmenter.model.modules()
    ]
    with NoFloat64():  # the detector itself works
        torch.zeros(2, dtype=torch.float64)
    assert found == ["zeros"]
    found.clear()

    labels = two_lungs()
    window = Window.preset("lung")
    rgb = to_rgb(np.where(labels > 0, -850, 40).astype(np.int16), window)
    # float64 numpy prompts, as a user script would make them
    prompts = [
        Prompt(
            points_xy=np.array([[8.0, 16.0], [24.0, 16.0]]),
            point_labels=[1, 0],
            box_xyxy=np.array([2.0, 3.0, 14.0, 28.0]),
            target_label=2,
        ),
        Prompt(points_xy=np.array([[24.0, 16.0]]), point_labels=[1]),
        Prompt(box_xyxy=np.array([18.0, 3.0, 29.0, 28.0]), target_label=1),
    ]
    volume = np.stack([np.where(labels > 0, -850, 40)] * 3).astype(np.float64)
    with NoFloat64():
        for strategy in (None, get_strategy("per-lung-multimask"), get_strategy("per-lung-post")):
            segmenter.clear_cache()
            out, score = segmenter.segment_slice(rgb, prompts, strategy=strategy)
            assert out.shape == labels.shape and np.isfinite(score)
        segment_from_labels(
            segmenter, volume, np.stack([labels] * 3), window=window, strategy="paper"
        )
        propagate(segmenter, volume, seeds_from_labels(np.stack([labels] * 3), 1), window=window)
    for hook in hooks:
        hook.remove()
    assert found == [], sorted(set(found))
    assert {p.dtype for p in segmenter.model.parameters()} == {torch.float32}
