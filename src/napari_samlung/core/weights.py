"""Model weights on disk: the cache folder, resumable verified downloads,
checkpoint lookup and reading.

The only network access of the package is :func:`download`.
"""

from __future__ import annotations

import http.client
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..errors import ModelError, WeightsUnavailableError

if TYPE_CHECKING:
    from .models import ModelSpec


def cache_dir() -> Path:
    """User cache directory (``$SAMLUNG_CACHE_DIR`` overrides it)."""
    env = os.environ.get("SAMLUNG_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("napari-samlung"))


def checkpoint_env_var(model_id: str) -> str:
    """The environment variable that names a model's checkpoint file."""
    return f"SAMLUNG_CHECKPOINT_{model_id.upper()}"


def file_xxh128(path: Path) -> str:
    """xxh3-128 digest of a file's bytes (32 hex digits)."""
    import xxhash

    digest = xxhash.xxh3_128()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(url: str, dest: Path, xxh128: str | None = None, progress=None) -> Path:
    """Download ``url`` to ``dest`` through ``dest.part``, resuming a partial file.

    The partial file is never used: only a complete download whose digest
    matches is renamed into place.  ``progress(done_bytes, total_bytes)`` is
    called as data arrives.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    done = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url)
    if done and url.startswith(("http://", "https://")):
        request.add_header("Range", f"bytes={done}-")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status = getattr(response, "status", None)
            resumed = done > 0 and status == 206
            if not resumed:
                done = 0
            length = response.headers.get("Content-Length")
            total = done + int(length) if length else None
            with open(part, "ab" if resumed else "wb") as fh:
                while chunk := response.read(1 << 20):
                    fh.write(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, total)
            if total is not None and done < total:
                raise OSError(f"connection closed after {done} of {total} bytes")
    except (urllib.error.URLError, http.client.HTTPException, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        partial = part.exists() and part.stat().st_size > 0
        if part.exists() and not partial:
            part.unlink()
        resume = f"; the partial file {part} will be resumed next time" if partial else ""
        raise WeightsUnavailableError(f"could not download {url} ({reason}){resume}") from None
    if xxh128 is not None:
        actual = file_xxh128(part)
        if actual != xxh128:
            part.unlink(missing_ok=True)
            raise WeightsUnavailableError(
                f"{url}: downloaded file has xxh128 {actual}, expected {xxh128}; it was deleted, "
                "try again"
            )
    os.replace(part, dest)
    return dest


def resolve_checkpoint(
    spec: ModelSpec,
    checkpoint: str | Path | None = None,
    *,
    allow_download: bool = True,
    progress=None,
) -> Path | None:
    """Find the weights file for a model; download it if allowed.

    Order: explicit ``checkpoint``; ``$SAMLUNG_CHECKPOINT_<ID>``; the bundled
    file (``spec.bundled_path``, LiteMedSAM); the user cache; a download from
    ``spec.url``, verified against ``spec.xxh128``.

    Parameters
    ----------
    spec : ModelSpec
        The registry entry (:func:`~.models.get_spec`).
    checkpoint : str or Path, optional
        An explicit checkpoint file.
    allow_download : bool
        False raises instead of downloading.
    progress : callable, optional
        ``progress(done_bytes, total_bytes)`` while downloading.

    Returns
    -------
    Path or None
        None for models without weights files (random test models).
    """
    model_id = spec.id
    explicit = checkpoint or os.environ.get(checkpoint_env_var(model_id))
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise WeightsUnavailableError(
                f"checkpoint {path} does not exist; check the path given to --checkpoint "
                f"or ${checkpoint_env_var(model_id)}"
            )
        if path.stat().st_size == 0:
            raise ModelError(f"checkpoint {path} is empty; download it again")
        return path
    if spec.bundled_path is not None:
        return spec.bundled_path()
    if not spec.needs_checkpoint:
        return None
    assert spec.filename is not None
    cached = cache_dir() / "checkpoints" / spec.filename
    if cached.is_file():
        return cached
    if spec.url is None or not allow_download:
        raise WeightsUnavailableError(
            f"no weights for {model_id}: put {spec.filename} at {cached} or pass "
            f"--checkpoint PATH (or set ${checkpoint_env_var(model_id)})"
        )
    try:
        return download(spec.url, cached, spec.xxh128, progress)
    except WeightsUnavailableError as exc:
        raise WeightsUnavailableError(
            f"{exc}. Offline? Download {spec.filename} from {spec.url} elsewhere and pass "
            f"--checkpoint PATH (or set ${checkpoint_env_var(model_id)})"
        ) from None


def load_state(path: Path) -> dict:
    """The state dict in a PyTorch checkpoint file (unwrapping ``model``/``state_dict``).

    Raises :class:`ModelError` for a truncated, corrupt or non-checkpoint file.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, pickle junk, not a checkpoint at all
        raise ModelError(
            f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}); the file is "
            "truncated or corrupt: delete it and download it again"
        ) from None
    if isinstance(state, dict):
        for key in ("model", "state_dict"):
            if key in state and isinstance(state[key], dict):
                state = state[key]
    if not isinstance(state, dict):
        raise ModelError(f"{path}: the checkpoint holds no state dict; pass a SAM checkpoint")
    return state
