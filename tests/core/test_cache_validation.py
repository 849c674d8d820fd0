"""The disk cache checks every entry against its key and its checksums (issue 13, section 6).

A header altered while the file keeps its size (a permuted shape, another
original or input size), a header forged with a consistent checksum but
geometry the key's model cannot produce, and entries of the older format are
all discarded and recomputed, with one warning per cache.  Writing never
fails a run.  Runs on the micro random SAM (256 px).
"""

from __future__ import annotations

import dataclasses
import errno
import json
import math
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import fresh, random_rgb
from napari_samlung.core import cache as cache_mod
from napari_samlung.core import models
from napari_samlung.core.cache import MAGIC, DiskCache
from napari_samlung.core.embedding import Embedding
from napari_samlung.core.prompts import Prompt
from napari_samlung.errors import OptionError, SamlungWarning

# ``micro`` (the micro random SAM, module-scoped) comes from conftest.py.

BOX = [Prompt(box_xyxy=[10, 8, 60, 40])]


def read_header(path: Path) -> tuple[dict, bytes]:
    """The JSON header of a cache file and the bytes after it."""
    data = path.read_bytes()
    (n,) = struct.unpack_from("<I", data, len(MAGIC))
    start = len(MAGIC) + 4
    return json.loads(data[start : start + n]), data[start + n :]


def write_header(path: Path, header: dict, payload: bytes, *, same_size: bool = True) -> None:
    """Rewrite a cache file with another header (compact JSON, as the cache writes it)."""
    old_size = path.stat().st_size
    head = json.dumps(header, separators=(",", ":")).encode()
    path.write_bytes(MAGIC + struct.pack("<I", len(head)) + head + payload)
    if same_size:
        assert path.stat().st_size == old_size  # the damage keeps the file's size


def forge(header: dict) -> dict:
    """A header whose entry checksum fits its (altered) fields: only the key checks catch it."""
    header = dict(header)
    header["entry_xxh128"] = cache_mod._entry_checksum(header)
    return header


@pytest.fixture
def stored(micro, tmp_path):
    """(cache, image, good embedding, file) of one slice embedded by the micro model."""
    cache = DiskCache(tmp_path / "emb")
    image = random_rgb((40, 60), seed=3)
    good = fresh(micro, disk_cache=cache).embed(image)
    return cache, image, good, cache.path_for(good.key)


def recomputed(micro, cache: DiskCache, image: np.ndarray, good: Embedding) -> None:
    """A new segmenter recomputes the slice, gives the good masks, and says so once."""
    seg = fresh(micro, disk_cache=cache)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        emb = seg.embed(image)
    assert seg.encoder_calls == 1 and cache.corrupt == 1
    ours = [w for w in caught if issubclass(w.category, SamlungWarning)]
    assert len(ours) == 1 and "discarded an entry" in str(ours[0].message)
    assert "\n" not in str(ours[0].message)
    torch.testing.assert_close(emb.features, good.features, rtol=1e-5, atol=1e-5)
    expected = fresh(micro).predict(good, BOX).logits
    np.testing.assert_allclose(seg.predict(emb, BOX).logits, expected, rtol=1e-4, atol=1e-4)
    again = fresh(micro, disk_cache=cache)  # the good entry is back
    again.embed(image)
    assert again.encoder_calls == 0


# --------------------------------------------------------------------------- same-size damage


def _permute_shape(header: dict) -> None:
    c, h, w = header["shape"][1:]
    header["shape"] = [1, h, c, w]
    assert h != c and len(json.dumps(header["shape"])) == len(json.dumps([1, c, h, w]))


def _swap_original_size(header: dict) -> None:
    header["original_size_rc"] = header["original_size_rc"][::-1]


def _swap_input_size(header: dict) -> None:
    header["input_size_rc"] = header["input_size_rc"][::-1]


def _other_key_digit(header: dict) -> None:
    key = header["key"]
    header["key"] = key[:-1] + ("0" if key[-1] != "0" else "1")


def _other_tag(header: dict) -> None:
    header["tag"] = "x" * len(header["tag"] or "")


@pytest.mark.parametrize(
    "alter", [_permute_shape, _swap_original_size, _swap_input_size, _other_key_digit]
)
def test_header_altered_at_the_same_size_is_recomputed(micro, stored, alter):
    cache, image, good, path = stored
    header, payload = read_header(path)
    alter(header)
    write_header(path, header, payload)
    assert cache.header(good.key) is None and cache.entries() == []
    recomputed(micro, cache, image, good)


def test_altered_tag_breaks_the_entry_checksum(tmp_path):
    cache = DiskCache(tmp_path)
    feats = torch.zeros(1, 8, 4, 4)
    path = cache.put("k", Embedding(feats, (24, 32), (30, 40), "k"), tag="L-650/W1500")
    header, payload = read_header(path)
    _other_tag(header)
    write_header(path, header, payload)
    with pytest.warns(SamlungWarning, match="discarded an entry"):
        assert cache.get("k") is None
    assert not path.exists()


# --------------------------------------------------------------------------- what the key implies


@pytest.mark.parametrize(
    "field, value",
    [
        ("input_size_rc", [170, 256]),  # not the model's resize of (40, 60)
        ("original_size_rc", [60, 40]),  # nor is (170, 256) of this
        ("input_size_rc", [0, 256]),
        ("original_size_rc", [40]),
        ("shape", [2, 16, 16, 16]),  # one slice per entry
        ("shape", [1, 16, 16, -16]),
        ("shape", [1, 16, 16]),
        ("dtype", "float16"),  # never written by the cache
        ("dtype", "int64"),
        ("version", 99),
        ("key", 7),
    ],
)
def test_forged_header_that_the_key_rules_out_is_refused(micro, stored, field, value):
    cache, image, good, path = stored
    header, payload = read_header(path)
    header[field] = value
    write_header(path, forge(header), payload, same_size=False)
    assert cache.header(good.key) is None
    recomputed(micro, cache, image, good)


def test_feature_shape_is_checked_against_the_model(micro, stored, monkeypatch):
    """A registered model's embedding shape: a forged permutation of it is refused."""
    cache, image, good, path = stored
    real = tuple(good.features.shape[1:])
    spec = dataclasses.replace(models.get_spec("micro_random"), embedding_shape=real)
    monkeypatch.setitem(models.REGISTRY, "micro_random", spec)
    assert cache.header(good.key) is not None  # the true shape passes
    header, payload = read_header(path)
    c, h, w = real
    header["shape"] = [1, c // 4, h * 4, w]
    assert header["shape"] != [1, c, h, w] and math.prod(header["shape"]) == c * h * w
    write_header(path, forge(header), payload, same_size=False)
    assert cache.header(good.key) is None
    recomputed(micro, cache, image, good)


def test_builtin_models_declare_their_embedding_shape():
    for model_id in ("lite_medsam", "vit_b", "vit_l", "vit_h"):
        assert models.get_spec(model_id).embedding_shape == (256, 64, 64)


# --------------------------------------------------------------------------- older format


def test_entry_of_the_older_format_is_recomputed(micro, stored):
    """Version 1 files (no entry checksum) are bad entries: recomputed, no crash."""
    cache, image, good, path = stored
    header, payload = read_header(path)
    header["version"] = 1
    del header["entry_xxh128"]
    write_header(path, header, payload, same_size=False)
    recomputed(micro, cache, image, good)


def test_many_bad_entries_give_one_warning(micro, tmp_path):
    cache = DiskCache(tmp_path)
    images = [random_rgb((40, 60), seed=s) for s in range(3)]
    fresh(micro, disk_cache=cache).embed_many(images)
    for path in cache.files():
        data = bytearray(path.read_bytes())
        data[-3] ^= 0xFF
        path.write_bytes(bytes(data))
    seg = fresh(micro, disk_cache=cache)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        seg.embed_many(images)
    assert seg.encoder_calls == 3 and cache.corrupt == 3
    assert len([w for w in caught if issubclass(w.category, SamlungWarning)]) == 1


# --------------------------------------------------------------------------- writing


def test_temporary_name_is_short_even_in_a_long_folder(tmp_path, monkeypatch):
    root = tmp_path / ("d" * 250)  # a folder name near the 255-character limit
    cache = DiskCache(root)
    names: list[str] = []
    real_replace = cache_mod.os.replace

    def record(src, dst):
        names.append(Path(src).name)
        real_replace(src, dst)

    monkeypatch.setattr(cache_mod.os, "replace", record)
    emb = Embedding(torch.ones(1, 8, 4, 4), (24, 32), (30, 40), "k")
    assert cache.put("k" * 5000, emb) is not None
    assert names and all(len(name) < 40 for name in names)
    assert len(cache.path_for("k" * 5000).name) < 40


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES, errno.ENAMETOOLONG, errno.EROFS])
def test_write_error_warns_once_and_the_run_goes_on(micro, tmp_path, monkeypatch, code):
    cache = DiskCache(tmp_path / "emb")

    def fail(*args, **kwargs):
        raise OSError(code, "simulated")

    monkeypatch.setattr(cache_mod.tempfile, "mkstemp", fail)
    seg = fresh(micro, disk_cache=cache)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        embs = seg.embed_many([random_rgb((40, 60), seed=s) for s in range(3)])
    assert len(embs) == 3 and seg.encoder_calls == 3 and cache.writes == 0
    ours = [str(w.message) for w in caught if issubclass(w.category, SamlungWarning)]
    assert len(ours) == 1 and "cannot write (simulated); going on without" in ours[0]


def test_a_full_disk_mid_write_leaves_nothing_behind(tmp_path, monkeypatch):
    cache = DiskCache(tmp_path)
    real_fdopen = cache_mod.os.fdopen

    class Full:
        def __init__(self, fh):
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache_mod.os, "fdopen", lambda fd, mode: Full(real_fdopen(fd, mode)))
    with pytest.warns(SamlungWarning, match="No space left on device"):
        assert cache.put("k", Embedding(torch.ones(1, 8, 4, 4), (24, 32), (30, 40), "k")) is None
    assert list(tmp_path.iterdir()) == []


def test_eviction_error_does_not_fail_the_write(tmp_path, monkeypatch):
    cache = DiskCache(tmp_path)

    def broken(keep=None):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(cache, "evict", broken)
    path = cache.put("k", Embedding(torch.ones(1, 8, 4, 4), (24, 32), (30, 40), "k"))
    assert path is not None and cache.get("k") is not None


@pytest.mark.parametrize("limit", [-5, -0.1, float("nan"), float("inf"), float("-inf")])
def test_limit_that_is_not_a_size_is_refused(tmp_path, limit):
    with pytest.raises(OptionError, match="limit_mb.*0 or more"):
        DiskCache(tmp_path, limit_mb=limit)
