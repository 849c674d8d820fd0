"""The on-disk embedding cache: round trips, identity, damage, eviction, atomicity.

Runs on the tiny random-weight SAM (a fraction of a second per embedding).
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_samlung.core import cache as cache_mod
from napari_samlung.core.cache import MAGIC, DiskCache
from napari_samlung.core.embedding import Embedding
from napari_samlung.core.engine import Segmenter
from napari_samlung.core.windowing import Window, to_rgb

# ``tiny`` (the registered tiny random SAM, module-scoped) comes from conftest.py.


def fresh(seg: Segmenter, **kwargs) -> Segmenter:
    """A new segmenter (empty memory cache, zero counters) around the same model."""
    return Segmenter(seg.model, seg.spec, seg.device, precision=seg.precision, **kwargs)


def rgb(seed: int = 0, shape=(40, 60)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


def fake_embedding(seed: int = 0, key: str = "k", channels: int = 8) -> Embedding:
    feats = torch.from_numpy(
        np.random.default_rng(seed).standard_normal((1, channels, 4, 4)).astype(np.float32)
    )
    return Embedding(feats, (24, 32), (30, 40), key)


# --------------------------------------------------------------------------- basics


def test_round_trip_and_header(tmp_path):
    cache = DiskCache(tmp_path / "emb")
    emb = fake_embedding(key="model@w:fp32:abc")
    assert cache.get(emb.key) is None  # empty (and the folder need not exist)
    path = cache.put(emb.key, emb, tag="L-650/W1500/fixed")
    assert path is not None and path.parent == tmp_path / "emb" and path.suffix == ".emb"
    feats, input_rc, original_rc = cache.get(emb.key)
    torch.testing.assert_close(feats, emb.features, rtol=0, atol=0)
    assert feats.dtype == torch.float32
    assert input_rc == (24, 32) and original_rc == (30, 40)
    header = cache.header(emb.key)
    assert header["key"] == emb.key and header["tag"] == "L-650/W1500/fixed"
    assert header["version"] == cache_mod.FORMAT_VERSION and header["shape"] == [1, 8, 4, 4]
    assert [e["key"] for e in cache.entries()] == [emb.key]
    assert len(cache) == 1 and cache.size_bytes() == path.stat().st_size
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".tmp-")]
    assert path.read_bytes().startswith(MAGIC)


def test_bf16_exact_features_are_stored_as_bf16(tmp_path):
    cache = DiskCache(tmp_path)
    exact = fake_embedding(key="a")
    exact.features = exact.features.to(torch.bfloat16).to(torch.float32)
    cache.put("a", exact)
    assert cache.header("a")["dtype"] == "bfloat16"
    torch.testing.assert_close(cache.get("a")[0], exact.features, rtol=0, atol=0)
    cache.put("b", fake_embedding(key="b"))  # full float32 precision: kept as float32
    assert cache.header("b")["dtype"] == "float32"


def test_default_root_follows_the_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SAMLUNG_CACHE_DIR", str(tmp_path))
    assert DiskCache().root == tmp_path / "embeddings"
    with pytest.raises(ValueError, match="limit_mb"):
        DiskCache(tmp_path, limit_mb=-1)


def test_unwritable_folder_never_fails_a_run(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    cache = DiskCache(blocker / "sub")
    assert cache.put("k", fake_embedding()) is None
    assert cache.get("k") is None
    assert DiskCache(tmp_path, limit_mb=0).put("k", fake_embedding()) is None


# --------------------------------------------------------------------------- with the segmenter


def test_second_segmenter_reads_embeddings_from_disk(tiny, tmp_path):
    cache = DiskCache(tmp_path)
    hu = np.linspace(-1200, 300, 40 * 60, dtype=np.float32).reshape(40, 60)
    paper = to_rgb(hu, Window.preset("paper"))
    first = fresh(tiny, disk_cache=cache)
    emb = first.embed_many([paper], tag=Window.preset("paper").describe())[0]
    assert first.encoder_calls == 1 and len(cache) == 1
    assert cache.header(emb.key)["tag"] == "L-650/W1500/fixed"

    second = fresh(tiny, disk_cache=cache)  # e.g. napari restarted
    again = second.embed(paper)
    assert second.encoder_calls == 0
    torch.testing.assert_close(again.features, emb.features, rtol=0, atol=0)
    assert again.input_size_rc == emb.input_size_rc
    assert again.original_size_rc == emb.original_size_rc
    # the same prompts give the same masks from the disk embedding
    from napari_samlung.core.prompts import Prompt

    box = [Prompt(box_xyxy=[5, 5, 40, 30])]
    np.testing.assert_array_equal(first.predict(emb, box).logits, second.predict(again, box).logits)

    # another window is another encoder input: never served from this entry
    lung = to_rgb(hu, Window.preset("mediastinum"))
    second.embed(lung)
    assert second.encoder_calls == 1 and len(cache) == 2


def test_key_covers_model_weights_precision_and_input(tiny):
    image = rgb(1)
    other = rgb(2)
    base = fresh(tiny)
    assert base.cache_key(image) == fresh(tiny).cache_key(image.copy())
    assert base.cache_key(image) != base.cache_key(other)
    bf16 = Segmenter(tiny.model, tiny.spec, tiny.device, precision="bf16")
    assert bf16.cache_key(image) != base.cache_key(image)
    reference = fresh(tiny, fast=False)
    assert reference.cache_key(image) != base.cache_key(image)
    # the same architecture with other weights (a fine-tune) gets other keys
    import copy

    tuned = copy.deepcopy(tiny.model)
    with torch.no_grad():
        next(tuned.mask_decoder.parameters()).add_(1e-3)
    assert Segmenter(tuned, tiny.spec, "cpu", precision="fp32").cache_key(image) != base.cache_key(
        image
    )
    assert base.cache_key(image).startswith(f"tiny_random@{base.weights_id}:fp32:")


def test_entry_for_another_slice_size_is_not_used(tiny, tmp_path):
    cache = DiskCache(tmp_path)
    seg = fresh(tiny, disk_cache=cache)
    image = rgb(3)
    key = seg.cache_key(image)
    cache.put(key, Embedding(torch.zeros(1, 256, 64, 64), (10, 10), (20, 20), key))
    seg.embed(image)  # stored geometry does not match this slice: recomputed
    assert seg.encoder_calls == 1
    assert cache.get(key)[2] == (40, 60)  # and the good entry replaced the bad one


# --------------------------------------------------------------------------- damage


def _damage_truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _damage_flip_payload(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    data[-7] ^= 0x10
    path.write_bytes(bytes(data))


def _damage_flip_header(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(MAGIC) + 4 + 3] ^= 0x5A  # inside the JSON header
    path.write_bytes(bytes(data))


def _damage_garbage(path: Path) -> None:
    path.write_bytes(b"\x00" * 10)


def _damage_header_length(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(MAGIC) : len(MAGIC) + 4] = struct.pack("<I", 10**6)
    path.write_bytes(bytes(data))


def _damage_empty(path: Path) -> None:
    path.write_bytes(b"")


@pytest.mark.parametrize(
    "damage",
    [
        _damage_truncate,
        _damage_flip_payload,
        _damage_flip_header,
        _damage_garbage,
        _damage_header_length,
        _damage_empty,
    ],
)
def test_damaged_file_is_detected_and_deleted(tmp_path, damage):
    cache = DiskCache(tmp_path)
    emb = fake_embedding(key="model@w:fp32:abc", channels=64)
    path = cache.put(emb.key, emb)
    damage(path)
    assert cache.header(emb.key) is None
    assert cache.get(emb.key) is None  # detected ...
    assert cache.corrupt == 1 and cache.misses == 1
    assert not path.exists()  # ... and deleted
    cache.put(emb.key, emb)  # the recomputed embedding is written again
    torch.testing.assert_close(cache.get(emb.key)[0], emb.features, rtol=0, atol=0)


@pytest.mark.parametrize("damage", [_damage_truncate, _damage_flip_payload])
def test_segmenter_recomputes_a_damaged_file(tiny, tmp_path, damage):
    cache = DiskCache(tmp_path)
    image = rgb(5)
    good = fresh(tiny, disk_cache=cache).embed(image)
    damage(cache.path_for(good.key))
    seg = fresh(tiny, disk_cache=cache)
    emb = seg.embed(image)  # detected, deleted, recomputed ...
    assert seg.encoder_calls == 1 and cache.corrupt == 1
    torch.testing.assert_close(emb.features, good.features, rtol=1e-5, atol=1e-5)
    again = fresh(tiny, disk_cache=cache)  # ... and a good file is back
    again.embed(image)
    assert again.encoder_calls == 0


def test_file_of_another_key_or_version_is_refused(tmp_path):
    cache = DiskCache(tmp_path)
    cache.put("a", fake_embedding(key="a"))
    os.replace(cache.path_for("a"), cache.path_for("b"))  # a file under the wrong name
    assert cache.get("b") is None and not cache.path_for("b").exists()

    cache.put("c", fake_embedding(key="c"))
    path = cache.path_for("c")
    data = path.read_bytes()
    (n,) = struct.unpack_from("<I", data, len(MAGIC))
    header = json.loads(data[len(MAGIC) + 4 : len(MAGIC) + 4 + n])
    header["version"] = cache_mod.FORMAT_VERSION + 1
    head = json.dumps(header).encode()
    path.write_bytes(MAGIC + struct.pack("<I", len(head)) + head + data[len(MAGIC) + 4 + n :])
    assert cache.get("c") is None and not path.exists()


# --------------------------------------------------------------------------- writing


def test_write_is_atomic(tmp_path, monkeypatch):
    cache = DiskCache(tmp_path)
    cache.put("k", fake_embedding(seed=1, key="k"))
    before = cache.path_for("k").read_bytes()

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(cache_mod.os, "replace", crash)
    assert cache.put("k", fake_embedding(seed=2, key="k")) is None
    monkeypatch.undo()
    # the old entry is intact and no temporary file is left behind
    assert cache.path_for("k").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [cache.path_for("k").name]


def test_size_limit_evicts_least_recently_used(tmp_path):
    one = DiskCache(tmp_path / "probe")
    size = one.put("probe", fake_embedding(channels=64)).stat().st_size
    cache = DiskCache(tmp_path / "lru", limit_mb=2.5 * size / 2**20)  # room for two
    for i, key in enumerate("abc"):
        path = cache.put(key, fake_embedding(seed=i, key=key, channels=64))
        os.utime(path, ns=(10**18 + i * 10**9, 10**18 + i * 10**9))  # a, b, c: oldest first
    # writing c evicted the oldest, a
    assert cache.get("a") is None and cache.evictions == 1
    assert cache.size_bytes() <= cache.limit_bytes
    os.utime(cache.path_for("c"), ns=(10**18 + 5 * 10**9,) * 2)
    assert cache.get("b") is not None  # a hit makes b the most recent
    cache.put("d", fake_embedding(seed=3, key="d", channels=64))
    assert cache.get("c") is None  # c is now the least recently used
    assert cache.get("b") is not None and cache.get("d") is not None
    assert len(cache) == 2


def test_entry_larger_than_the_limit_is_not_written(tmp_path):
    cache = DiskCache(tmp_path, limit_mb=0.001)
    assert cache.put("big", fake_embedding(channels=256)) is None
    assert len(cache) == 0


def test_clear_removes_entries_and_stray_temporaries(tmp_path):
    cache = DiskCache(tmp_path)
    cache.put("a", fake_embedding())
    (tmp_path / ".tmp-crashed.emb.part").write_bytes(b"partial")
    (tmp_path / "unrelated.txt").write_text("keep me")
    cache.clear()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["unrelated.txt"]
