"""Model weights on disk: the cache folder, resumable verified downloads,
checkpoint lookup and reading.

The only network access of the package is :func:`download`.
"""

from __future__ import annotations

import http.client
import os
import pickle
import re
import stat
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..errors import ModelError, OptionError, UnsafeCheckpointError, WeightsUnavailableError

if TYPE_CHECKING:
    from .models import ModelSpec


def cache_dir() -> Path:
    """User cache directory (``$SAMLUNG_CACHE_DIR`` overrides it)."""
    env = os.environ.get("SAMLUNG_CACHE_DIR")
    if env:
        path = Path(env).expanduser()
        check_folder(path, "$SAMLUNG_CACHE_DIR")
        return path
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("napari-samlung"))


def check_folder(path: Path, what: str) -> None:
    """Raise :class:`OptionError` when ``path`` cannot become a folder.

    ``path`` may not exist yet (it is created on first write), but neither it
    nor a folder above it may be a file; ``what`` names where the path came
    from (``$SAMLUNG_CACHE_DIR``, ``--cache-dir``).
    """
    path = Path(path)
    for candidate in (path, *path.parents):
        try:
            mode = candidate.stat().st_mode
        except (FileNotFoundError, NotADirectoryError):
            continue  # not there yet (or under a file: found further up)
        except OSError as exc:
            raise OptionError(
                f"{what} {path} cannot be used as a folder ({exc.strerror or exc}); "
                "point it at a folder you can write to"
            ) from None
        if stat.S_ISDIR(mode):
            return
        where = "it is a file" if candidate == path else f"{candidate} is a file"
        raise OptionError(
            f"{what} {path} is not a folder ({where}); point it at a folder, or at a path "
            "that does not exist yet"
        )


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
    try:
        os.replace(part, dest)
    except OSError as exc:
        raise WeightsUnavailableError(
            f"cannot save the downloaded weights as {dest} ({exc.strerror or exc}); remove what "
            "is in the way or set $SAMLUNG_CACHE_DIR to another folder"
        ) from None
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
        source = "--checkpoint" if checkpoint else f"${checkpoint_env_var(model_id)}"
        path = Path(explicit).expanduser()
        if path.is_dir():
            inside = sorted(p.name for p in path.glob("*.pth"))
            holds = f" (it holds {', '.join(inside[:3])})" if inside else ""
            raise WeightsUnavailableError(
                f"checkpoint {path} is a folder, not a weights file{holds}; point {source} "
                "at the .pth file itself"
            )
        if path.exists() and not path.is_file():
            raise WeightsUnavailableError(
                f"checkpoint {path} is not a regular file; point {source} at the .pth file"
            )
        if not path.is_file():
            raise WeightsUnavailableError(
                f"checkpoint {path} does not exist; check the path given to {source}"
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
    _check_writable(cached.parent, spec)
    try:
        return download(spec.url, cached, spec.xxh128, progress)
    except WeightsUnavailableError as exc:
        raise WeightsUnavailableError(
            f"{exc}. Offline? Download {spec.filename} from {spec.url} elsewhere and pass "
            f"--checkpoint PATH (or set ${checkpoint_env_var(model_id)})"
        ) from None


def _check_writable(folder: Path, spec: ModelSpec) -> None:
    """Make the checkpoint folder, or raise one line on why the download could not be kept."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise WeightsUnavailableError(
            f"cannot save downloaded weights in {folder} ({exc.strerror or exc}); set "
            f"$SAMLUNG_CACHE_DIR to a folder you can write to, or download {spec.filename} "
            f"from {spec.url} yourself and pass --checkpoint PATH"
        ) from None


#: What ``torch.load(weights_only=True)`` says when it refuses a pickled object
#: (code to call, or a class that is not a tensor or a plain container).
_REFUSED = re.compile(
    r"unsupported global|is blocked|not an allowed global|allowlisted|add_safe_globals|"
    r"trying to call reduce",
    re.IGNORECASE,
)
_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def load_state(path: Path) -> dict:
    """The state dict in a PyTorch checkpoint file (unwrapping ``model``/``state_dict``).

    Raises :class:`ModelError` for a truncated, corrupt or non-checkpoint file.
    """
    try:
        with warnings.catch_warnings():  # torch's notes on pickle protocols: not actionable
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if _REFUSED.search(text):
            found = _GLOBAL.search(text)
            what = f" ({found.group(1)})" if found else ""
            raise UnsafeCheckpointError(
                f"{path}: refused for safety: the checkpoint holds code or objects that are "
                f"not weights{what}, which would run when it is loaded; use a checkpoint from "
                "a trusted source that holds only a state dict of tensors"
            ) from None
        raise ModelError(
            f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}); the file is "
            "truncated or corrupt: delete it and download it again"
        ) from None
    except OSError as exc:
        raise ModelError(
            f"{path}: cannot read the checkpoint ({exc.strerror or exc}); check that the file "
            "is readable"
        ) from None
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
