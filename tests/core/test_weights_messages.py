"""Checkpoint and cache-folder messages that say what is really wrong (issue 13, sections 5, 8).

A checkpoint that would run code when unpickled is refused *for safety*, not
called corrupt; a checkpoint that is a folder says so; a cache folder that is
a file, or cannot be written, is one line naming ``$SAMLUNG_CACHE_DIR``.
"""

from __future__ import annotations

import collections
import dataclasses
import os
from pathlib import Path

import pytest
import torch

from napari_samlung.core import weights
from napari_samlung.core.models import get_spec, load_model
from napari_samlung.core.weights import cache_dir, check_folder, load_state, resolve_checkpoint
from napari_samlung.errors import (
    ModelError,
    OptionError,
    UnsafeCheckpointError,
    WeightsUnavailableError,
)

# ``weights_cache`` ($SAMLUNG_CACHE_DIR in tmp_path, no checkpoint variables) is in conftest.py.


class _RunsCode:
    """Pickles as a call of ``func(arg)``: what a malicious checkpoint does."""

    def __init__(self, func, arg) -> None:
        self.func, self.arg = func, arg

    def __reduce__(self):
        return (self.func, (self.arg,))


class _CustomObject:
    """A class of this module: not a tensor nor a plain container."""

    def __init__(self) -> None:
        self.value = 1


def _touch_marker(path: str) -> None:  # pragma: no cover - must never run
    Path(path).write_text("code ran")


def _save(path: Path, obj, *, legacy: bool = False) -> Path:
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    return path


# --------------------------------------------------------------------------- unsafe checkpoints


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize(
    "payload",
    [
        lambda marker: {"model": _RunsCode(os.system, f"touch {marker}")},
        lambda marker: _RunsCode(_touch_marker, str(marker)),
        lambda marker: {"weight": torch.zeros(2), "hook": _RunsCode(eval, "1 + 1")},
        lambda marker: {"weight": torch.zeros(2), "extra": _CustomObject()},
    ],
    ids=["os.system", "own-function", "eval-beside-tensors", "custom-object"],
)
def test_checkpoint_that_holds_code_is_refused_for_safety(tmp_path, payload, legacy):
    marker = tmp_path / "marker"
    path = _save(tmp_path / "evil.pth", payload(marker), legacy=legacy)
    with pytest.raises(UnsafeCheckpointError) as info:
        load_state(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    assert "refused for safety" in message
    assert "holds code or objects that are not weights" in message
    assert "truncated or corrupt" not in message and "download it again" not in message
    assert not marker.exists()  # nothing ran


def test_unsafe_checkpoint_is_refused_by_load_model(tmp_path):
    path = _save(tmp_path / "evil.pth", {"state_dict": _RunsCode(os.system, "true")})
    with pytest.raises(UnsafeCheckpointError, match="refused for safety.*trusted source"):
        load_model("lite_medsam", checkpoint=path, device="cpu")


@pytest.mark.parametrize(
    "content",
    [b"\x80\x04garbage" * 10, b"PK\x03\x04junk", b"\x80\x02}q\x00(X"],
    ids=["pickle-junk", "broken-zip", "cut-pickle"],
)
def test_junk_is_still_called_corrupt_not_unsafe(tmp_path, content):
    path = tmp_path / "junk.pth"
    path.write_bytes(content)
    with pytest.raises(ModelError, match="truncated or corrupt") as info:
        load_state(path)
    assert not isinstance(info.value, UnsafeCheckpointError)


def test_allowed_containers_still_load(tmp_path):
    state = collections.OrderedDict(weight=torch.ones(2), bias=torch.zeros(1))
    path = _save(tmp_path / "ok.pth", {"model": state, "epoch": 3})
    loaded = load_state(path)
    assert set(loaded) == {"weight", "bias"}


def test_checkpoint_torch_cannot_read_is_named(tmp_path, monkeypatch):
    path = _save(tmp_path / "w.pth", {"w": torch.ones(1)})

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(weights.torch, "load", denied)
    with pytest.raises(ModelError, match=r"cannot read the checkpoint \(Permission denied\)"):
        load_state(path)


# --------------------------------------------------------------------------- checkpoint paths


def test_checkpoint_folder_says_folder(weights_cache, tmp_path):
    folder = tmp_path / "weights"
    folder.mkdir()
    with pytest.raises(WeightsUnavailableError) as info:
        resolve_checkpoint(get_spec("vit_b"), folder)
    message = str(info.value)
    assert f"checkpoint {folder} is a folder, not a weights file" in message
    assert "point --checkpoint at the .pth file" in message
    assert "does not exist" not in message


def test_checkpoint_folder_lists_the_weights_inside(weights_cache, tmp_path, monkeypatch):
    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / "sam_vit_b_01ec64.pth").write_bytes(b"w")
    monkeypatch.setenv("SAMLUNG_CHECKPOINT_VIT_B", str(folder))
    with pytest.raises(WeightsUnavailableError) as info:
        resolve_checkpoint(get_spec("vit_b"))
    message = str(info.value)
    assert "(it holds sam_vit_b_01ec64.pth)" in message
    assert "point $SAMLUNG_CHECKPOINT_VIT_B at the .pth file" in message


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_checkpoint_that_is_not_a_regular_file(weights_cache, tmp_path):
    fifo = tmp_path / "pipe.pth"
    os.mkfifo(fifo)
    with pytest.raises(WeightsUnavailableError, match="is not a regular file; point --checkpoint"):
        resolve_checkpoint(get_spec("vit_b"), fifo)


def test_missing_checkpoint_names_only_its_source(weights_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("SAMLUNG_CHECKPOINT_VIT_B", str(tmp_path / "gone.pth"))
    with pytest.raises(WeightsUnavailableError) as info:
        resolve_checkpoint(get_spec("vit_b"))
    assert "check the path given to $SAMLUNG_CHECKPOINT_VIT_B" in str(info.value)
    assert "--checkpoint" not in str(info.value)


# --------------------------------------------------------------------------- the cache folder


def test_cache_dir_that_is_a_file(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("SAMLUNG_CACHE_DIR", str(blocker))
    with pytest.raises(OptionError, match=r"\$SAMLUNG_CACHE_DIR .*file is not a folder"):
        cache_dir()
    monkeypatch.setenv("SAMLUNG_CACHE_DIR", str(blocker / "below"))
    with pytest.raises(OptionError, match=f"{blocker} is a file"):
        cache_dir()


def test_cache_dir_that_does_not_exist_yet_is_fine(tmp_path, monkeypatch):
    monkeypatch.setenv("SAMLUNG_CACHE_DIR", str(tmp_path / "new" / "deeper"))
    assert cache_dir() == tmp_path / "new" / "deeper"
    check_folder(tmp_path, "--cache-dir")  # an existing folder


def test_cache_dir_name_too_long(tmp_path):
    with pytest.raises(OptionError, match="cannot be used as a folder.*too long"):
        check_folder(tmp_path / ("x" * 300), "--cache-dir")


def test_unwritable_checkpoint_folder_is_one_line(weights_cache, monkeypatch):
    weights_cache.mkdir()
    (weights_cache / "checkpoints").write_text("a file where the folder goes")

    def no_network(*args, **kwargs):  # pragma: no cover - must not be reached
        raise AssertionError("the folder is checked before any download")

    monkeypatch.setattr(weights, "download", no_network)
    spec = dataclasses.replace(get_spec("vit_b"))
    with pytest.raises(WeightsUnavailableError) as info:
        resolve_checkpoint(spec)
    message = str(info.value)
    assert f"cannot save downloaded weights in {weights_cache / 'checkpoints'}" in message
    assert "$SAMLUNG_CACHE_DIR" in message and "--checkpoint PATH" in message
    assert "Offline?" not in message


def test_download_onto_a_folder_is_one_line(tmp_path, monkeypatch):
    dest = tmp_path / "w.pth"
    dest.mkdir()  # something in the way of the finished download
    (dest / "inside").write_text("x")
    (tmp_path / "w.pth.part").write_bytes(b"done")

    class Response:
        status = 206
        headers: dict = {"Content-Length": "0"}

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self, n):
            return b""

    monkeypatch.setattr(weights.urllib.request, "urlopen", lambda *a, **k: Response())
    with pytest.raises(WeightsUnavailableError, match="cannot save the downloaded weights as"):
        weights.download("http://example.invalid/w.pth", dest)
