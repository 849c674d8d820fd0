"""An on-disk cache of image embeddings, shared between runs and processes.

Identity
    An entry is found by the :class:`~napari_samlung.core.engine.Segmenter`'s
    ``cache_key``: the model id, a fingerprint of the model's weights, the
    encoder precision, and a 128-bit hash of the *exact* encoder input (the
    windowed uint8 RGB slice, with its shape).  Window level, width and
    normalisation all change that input, so a different window can never hit
    another window's embedding; the same pixels reached by two different
    windows (e.g. already 8-bit data) share one entry, which is correct,
    because the encoder sees the same input.  An optional free-text ``tag``
    (the window's description, say) is stored in the header for inspection
    (:meth:`DiskCache.entries`); it is not part of the identity.

Format (version 2), one file per embedding, named by a hash of the key::

    b"SAMLEMB\\0"  8 bytes magic
    uint32 LE      header length H
    H bytes        JSON header: version, key, tag, shape, dtype,
                   input_size_rc, original_size_rc, payload_bytes,
                   payload_xxh128 (checksum of the payload),
                   entry_xxh128 (checksum of all the other header fields,
                   payload_xxh128 included: binds the header to the payload)
    payload        the features, C-contiguous, in ``dtype``

Validation
    Every entry is checked before use: the magic, the version, the key, both
    checksums, and what the key implies.  The key names the model, so for a
    registered model the stored input size must be the model's resize of the
    stored original size, and the feature shape must be the model's
    (:attr:`~napari_samlung.core.models.ModelSpec.embedding_shape`); the dtype
    must be one this module writes and the shape ``(1, C, h, w)``.  A header
    altered while the file keeps its size (a permuted shape, another original
    size) fails the entry checksum.  A file that fails any check (including
    every file of an older format version) is deleted and reported as a miss,
    so the caller recomputes it; the first such file of a cache gives one
    :class:`~napari_samlung.errors.SamlungWarning`.

Files are written to a short temporary name (well under the 255-character
name limit) in the same folder and renamed into place (``os.replace``), so a
reader never sees a half-written file.  Writing is an optimisation: an
``OSError`` (read-only folder, full disk, name too long) skips the entry and
gives one warning per cache, never a failed run.

Size is bounded by ``limit_mb``: after each write the least recently used
files (by modification time, which a hit refreshes) are deleted until the
folder fits.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import struct
import tempfile
import threading
import warnings
from pathlib import Path

import numpy as np
import torch

from ..errors import OptionError, SamlungError, SamlungWarning
from . import write_guard

MAGIC = b"SAMLEMB\0"
FORMAT_VERSION = 2
SUFFIX = ".emb"
_LEN = struct.Struct("<I")
_MAX_HEADER = 1 << 16
#: the dtypes :meth:`DiskCache.put` writes (features are stored as bf16 when that is exact)
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
_TMP_PREFIX = ".tmp-"
_MODEL_ID = re.compile(r"^([^@:]+)@")


def default_cache_root() -> Path:
    """``core.weights.cache_dir() / "embeddings"`` (``$SAMLUNG_CACHE_DIR`` moves it)."""
    from .weights import cache_dir

    return cache_dir() / "embeddings"


def _xxh128(data) -> str:
    import xxhash

    return xxhash.xxh3_128(data).hexdigest()


class DiskCache:
    """Embeddings on disk, keyed by the segmenter's cache key.

    Parameters
    ----------
    root : path, optional
        Folder of the cache files; created on first write.  Default
        :func:`default_cache_root`.
    limit_mb : float
        Largest total size of the folder's cache files, in MiB; least recently
        used files are evicted beyond it.  ``0`` disables writing.
    """

    def __init__(self, root: str | Path | None = None, limit_mb: float = 2048.0) -> None:
        if not isinstance(limit_mb, (int, float)) or not math.isfinite(limit_mb) or limit_mb < 0:
            raise OptionError(
                f"embedding cache limit_mb={limit_mb!r} is not a size: give a number of MB, "
                "0 or more (--cache-limit-mb; 0 writes nothing)"
            )
        self.root = Path(root).expanduser() if root is not None else default_cache_root()
        self.limit_bytes = int(limit_mb * 2**20)
        self.hits = 0
        self.misses = 0
        self.corrupt = 0  # files found damaged and deleted
        self.writes = 0
        self.evictions = 0
        self._lock = threading.Lock()
        self._warned: set[str] = set()  # "damaged", "write": each said once per cache

    def __repr__(self) -> str:
        return f"DiskCache(root={str(self.root)!r}, limit_mb={self.limit_bytes / 2**20:g})"

    # ------------------------------------------------------------------ paths

    def path_for(self, key: str) -> Path:
        """The file that holds ``key`` (a hash of it: keys may hold any characters)."""
        return self.root / f"{_xxh128(key.encode())}{SUFFIX}"

    def files(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return [Path(e.path) for e in os.scandir(self.root) if e.name.endswith(SUFFIX)]

    def size_bytes(self) -> int:
        total = 0
        for path in self.files():
            with contextlib.suppress(OSError):
                total += path.stat().st_size
        return total

    def __len__(self) -> int:
        return len(self.files())

    def clear(self) -> None:
        """Delete every cache file (and stray temporary files) in ``root``."""
        if not self.root.is_dir():
            return
        for entry in os.scandir(self.root):
            if entry.name.endswith(SUFFIX) or entry.name.startswith(_TMP_PREFIX):
                _unlink(Path(entry.path))

    # ------------------------------------------------------------------ reading

    def get(self, key: str) -> tuple[torch.Tensor, tuple[int, int], tuple[int, int]] | None:
        """``(features float32 (1, C, h, w), input_size_rc, original_size_rc)`` or ``None``.

        A damaged file is deleted and ``None`` returned, so the caller
        recomputes the embedding (and writes a good file).
        """
        path = self.path_for(key)
        try:
            with open(path, "rb") as fh:
                blob = fh.read()
        except FileNotFoundError:
            self.misses += 1
            return None
        except OSError:
            self.misses += 1
            return None
        parsed = _parse(blob, key)
        if parsed is None:
            self.corrupt += 1
            self.misses += 1
            _unlink(path)
            self._warn_once(
                "damaged",
                f"embedding cache {self.root}: discarded an entry that was damaged or of an "
                "older format; it is recomputed (later ones are not reported)",
            )
            return None
        header, payload = parsed
        with contextlib.suppress(OSError):
            os.utime(path)  # LRU: a hit makes the file recent
        dtype = _DTYPES[header["dtype"]]
        feats = torch.frombuffer(bytearray(payload), dtype=dtype).reshape(header["shape"])
        self.hits += 1
        return (
            feats.to(torch.float32),
            tuple(header["input_size_rc"]),
            tuple(header["original_size_rc"]),
        )

    def header(self, key: str) -> dict | None:
        """The stored header of ``key`` (``None`` when absent or damaged); deletes nothing."""
        try:
            blob = self.path_for(key).read_bytes()
        except OSError:
            return None
        parsed = _parse(blob, key)
        return None if parsed is None else parsed[0]

    def entries(self) -> list[dict]:
        """Headers of all readable entries (key, tag, shape, dtype, sizes)."""
        out = []
        for path in self.files():
            try:
                blob = path.read_bytes()
            except OSError:
                continue
            parsed = _parse(blob, None)
            if parsed is not None:
                out.append(parsed[0])
        return out

    # ------------------------------------------------------------------ writing

    def put(self, key: str, embedding, tag: str | None = None) -> Path | None:
        """Store an :class:`~napari_samlung.core.engine.Embedding` (or anything with
        ``features``, ``input_size_rc`` and ``original_size_rc``).

        Features are stored as bfloat16 when that is exact (embeddings computed
        under bf16 autocast), else as float32.  Returns the file, or ``None``
        when nothing was written (limit 0, entry larger than the limit, or the
        folder is not writable: the cache is an optimisation and never fails a run).
        """
        feats = embedding.features.detach().to("cpu").contiguous()
        if feats.dtype != torch.float32:
            feats = feats.to(torch.float32)
        small = feats.to(torch.bfloat16)
        if torch.equal(small.to(torch.float32), feats):
            feats = small
        raw = feats.view(torch.uint8).numpy() if feats.numel() else np.zeros(0, np.uint8)
        payload = memoryview(np.ascontiguousarray(raw)).cast("B")
        header: dict = {
            "version": FORMAT_VERSION,
            "key": key,
            "tag": tag,
            "shape": list(feats.shape),
            "dtype": str(feats.dtype).removeprefix("torch."),
            "input_size_rc": [int(v) for v in embedding.input_size_rc],
            "original_size_rc": [int(v) for v in embedding.original_size_rc],
            "payload_bytes": payload.nbytes,
            "payload_xxh128": _xxh128(payload),
        }
        header["entry_xxh128"] = _entry_checksum(header)
        head = json.dumps(header, separators=(",", ":")).encode()
        total = len(MAGIC) + _LEN.size + len(head) + payload.nbytes
        if self.limit_bytes == 0 or total > self.limit_bytes:
            return None
        path = self.path_for(key)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            # a short name: the key's hash is not repeated, so it never nears 255 characters
            fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, suffix=".part", dir=self.root)
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(MAGIC)
                    fh.write(_LEN.pack(len(head)))
                    fh.write(head)
                    fh.write(payload)
                write_guard.check(path)  # never an input, whatever the folder holds
                os.replace(tmp, path)
            except BaseException:
                _unlink(Path(tmp))
                raise
        except SamlungError as exc:  # the entry's name is one of the run's inputs
            self._warn_once("input", f"embedding cache {self.root}: not written: {exc}")
            return None
        except OSError as exc:
            self._warn_once(
                "write",
                f"embedding cache {self.root}: cannot write ({exc.strerror or exc}); going on "
                "without saving embeddings (choose a writable folder with free space)",
            )
            return None
        self.writes += 1
        with contextlib.suppress(OSError):
            self.evict(keep=path)
        return path

    def _warn_once(self, kind: str, message: str) -> None:
        """One :class:`SamlungWarning` per kind and cache: the cache never fails a run."""
        with self._lock:
            if kind in self._warned:
                return
            self._warned.add(kind)
        warnings.warn(message, SamlungWarning, stacklevel=3)

    def evict(self, keep: Path | None = None) -> int:
        """Delete least recently used files until the folder fits the limit.

        Returns the number of files deleted.  ``keep`` (the file just written)
        goes last.
        """
        with self._lock:
            stats = []
            total = 0
            for path in self.files():
                try:
                    st = path.stat()
                except OSError:
                    continue
                total += st.st_size
                stats.append((path == keep, st.st_mtime_ns, path, st.st_size))
            if total <= self.limit_bytes:
                return 0
            stats.sort()
            removed = 0
            for _, _, path, size in stats:
                if total <= self.limit_bytes:
                    break
                try:
                    write_guard.check(path)
                except SamlungError:  # an input that happens to sit in the cache folder
                    continue
                _unlink(path)
                total -= size
                removed += 1
            self.evictions += removed
            return removed


def _parse(blob: bytes, key: str | None) -> tuple[dict, memoryview] | None:
    """Header and payload of a cache file, or ``None`` when anything is off."""
    start = len(MAGIC) + _LEN.size
    if len(blob) < start or blob[: len(MAGIC)] != MAGIC:
        return None
    (head_len,) = _LEN.unpack_from(blob, len(MAGIC))
    if head_len > _MAX_HEADER or len(blob) < start + head_len:
        return None
    try:
        header = json.loads(blob[start : start + head_len])
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    try:
        if not isinstance(header, dict) or header["version"] != FORMAT_VERSION:
            return None
        if not isinstance(header["key"], str) or (key is not None and header["key"] != key):
            return None
        if header.get("entry_xxh128") != _entry_checksum(header):
            return None
        if not _fits_key(header):
            return None
        itemsize = torch.empty(0, dtype=_DTYPES[header["dtype"]]).element_size()
        expected = math.prod(header["shape"]) * itemsize
        payload = memoryview(blob)[start + head_len :]
        if payload.nbytes != expected or header["payload_bytes"] != expected:
            return None
        if _xxh128(payload) != header["payload_xxh128"]:
            return None
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    return header, payload


def _entry_checksum(header: dict) -> str:
    """xxh128 of every header field but ``entry_xxh128`` (canonical JSON)."""
    fields = {k: v for k, v in header.items() if k != "entry_xxh128"}
    return _xxh128(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode())


def _positive_ints(values, length: int) -> bool:
    return (
        isinstance(values, list)
        and len(values) == length
        and all(type(v) is int and v > 0 for v in values)
    )


def _fits_key(header: dict) -> bool:
    """Whether a header agrees with what its key implies (model, shape, dtype, sizes)."""
    if header["dtype"] not in _DTYPES:
        return False
    shape = header["shape"]
    if not _positive_ints(shape, 4) or shape[0] != 1:
        return False
    input_rc, original_rc = header["input_size_rc"], header["original_size_rc"]
    if not (_positive_ints(input_rc, 2) and _positive_ints(original_rc, 2)):
        return False
    spec = _spec_of(header["key"])
    if spec is None:  # a key of another form (tests, tools): structural checks only
        return True
    from .embedding import preprocess_shape

    if tuple(input_rc) != preprocess_shape(*original_rc, spec.input_size):
        return False
    expected = getattr(spec, "embedding_shape", None)
    return expected is None or tuple(shape[1:]) == tuple(expected)


def _spec_of(key: str):
    """The registered model a segmenter key (``"<model id>@<weights>:..."``) names, if any."""
    found = _MODEL_ID.match(key)
    if found is None:
        return None
    from .models import REGISTRY

    return REGISTRY.get(found.group(1))


def _unlink(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
