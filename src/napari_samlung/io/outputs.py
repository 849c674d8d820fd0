"""Where the program may write: the one rule, the one write error, and the run-folder lock.

:func:`check_output` is the one function that decides whether a file may be
written.  Every writer calls it (through :func:`~napari_samlung.io.atomic.atomic_write`
or directly, like the CSV append).  It refuses, whatever the flags
(``--overwrite`` included), a path that is the same file as an input, however
it is spelt: relative, with ``..``, through a symlink (resolved-path equality)
or as a hard link (same device and inode).  The inputs are those passed to the
call plus those a run registers for its duration with :func:`protecting`.

:class:`RunLock` keeps two runs out of one ``--out`` folder: a lock file made
with ``O_EXCL`` that holds the owner's pid; a lock whose pid is dead is taken
over.
"""

from __future__ import annotations

import atexit
import errno
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from ..core import write_guard
from ..errors import InputFileError

PathLike = str | os.PathLike
#: File-name length most file systems allow, in bytes (used when ``pathconf`` cannot say).
NAME_MAX = 255
#: Less free space than this in an output folder is reported as a full disk, before any work.
MIN_FREE_BYTES = 1 << 20
#: A folder given as an input (a DICOM series) protects at most this many files in it.
MAX_FOLDER_FILES = 100_000
#: Name of the lock file in a run folder.
LOCK_NAME = ".napari-samlung.lock"
#: An empty lock file younger than this is a lock being made, not a stale one (seconds).
LOCK_GRACE_S = 10.0

WRITE_FIX = "check the folder is writable and has free space"


# --------------------------------------------------------------------------- identities


@dataclass(frozen=True)
class FileIdentity:
    """Who a file is: its resolved path and, where it exists, ``(st_dev, st_ino)``."""

    path: str
    shown: str
    inode: tuple[int, int] | None

    def same_as(self, other: FileIdentity) -> bool:
        """Same resolved path, or same device and inode (hard links)."""
        if self.path == other.path:
            return True
        return self.inode is not None and self.inode == other.inode


def identity(path: PathLike) -> FileIdentity:
    """The :class:`FileIdentity` of ``path`` (never raises: a loop or a long name has no inode)."""
    text = os.path.expanduser(os.fspath(path))
    try:
        real = os.path.realpath(text)
    except (OSError, RuntimeError, ValueError):
        real = os.path.abspath(text)
    try:
        st = os.stat(text)
        inode = (st.st_dev, st.st_ino)
    except (OSError, ValueError):
        inode = None
    return FileIdentity(real, os.fspath(path), inode)


def input_identities(paths: Iterable[PathLike | FileIdentity | None]) -> list[FileIdentity]:
    """Identities of the inputs; a folder (a DICOM series) adds the files directly in it.

    Identities already made are kept as they are.
    """
    found: list[FileIdentity] = []
    for p in paths:
        if p is None:
            continue
        if isinstance(p, FileIdentity):
            found.append(p)
            continue
        ident = identity(p)
        found.append(ident)
        if os.path.isdir(ident.path):
            try:
                with os.scandir(ident.path) as entries:
                    for i, entry in enumerate(entries):
                        if i >= MAX_FOLDER_FILES:
                            break
                        if entry.is_file():
                            found.append(identity(entry.path))
            except OSError:
                pass
    return found


_REGISTRY: list[FileIdentity] = []
_REGISTRY_LOCK = threading.Lock()


@contextmanager
def protecting(paths: Iterable[PathLike | FileIdentity | None]) -> Iterator[list[FileIdentity]]:
    """Register ``paths`` as inputs for the duration of a run: no writer may touch them."""
    idents = input_identities(paths)
    with _REGISTRY_LOCK:
        _REGISTRY.extend(idents)
    try:
        yield idents
    finally:
        with _REGISTRY_LOCK:
            for ident in idents:
                _REGISTRY.remove(ident)


def protected_inputs() -> list[FileIdentity]:
    """The inputs registered now by :func:`protecting`."""
    with _REGISTRY_LOCK:
        return list(_REGISTRY)


def input_match(
    path: PathLike, inputs: Iterable[PathLike | FileIdentity | None] = ()
) -> FileIdentity | None:
    """The input ``path`` is the same file as (given or registered), or None."""
    target = identity(path)
    for ident in input_identities(inputs) + protected_inputs():
        if target.same_as(ident):
            return ident
    return None


# --------------------------------------------------------------------------- the rule


def check_output(
    path: PathLike,
    *,
    overwrite: bool = False,
    inputs: Iterable[PathLike | FileIdentity | None] = (),
    probe: bool = False,
) -> Path:
    """Decide whether ``path`` may be written; return it (``~`` expanded) or raise one line.

    Refused, in this order: a name the file system cannot hold (too long), a
    symlink loop, an input (always, ``overwrite`` or not), a folder, a missing
    parent folder, an existing file without ``overwrite``.  With ``probe`` the
    parent folder is also tried for writing and for free space (for the checks
    made before any work).

    Raises
    ------
    InputFileError
        Naming the file, the problem and the fix.
    """
    path = Path(os.path.expanduser(os.fspath(path)))
    if not path.name or path.name in (".", ".."):
        raise InputFileError(f"{path} is a folder; choose a file name")
    limit = _name_max(path.parent)
    if len(os.fsencode(path.name)) > limit:
        raise InputFileError(
            f"{_short(path)}: the file name is {len(os.fsencode(path.name))} bytes long, more "
            f"than the file system allows ({limit}); choose a shorter name"
        )
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    except NotADirectoryError:
        raise InputFileError(
            f"{path}: a part of the folder path is a file, not a folder; choose another path"
        ) from None
    except OSError as exc:
        raise _path_error(path, exc) from None
    match = input_match(path, inputs)
    if match is not None:
        raise InputFileError(
            f"{path} is one of the input files ({match.shown}); choose another output name "
            "(an input is never overwritten, even with --overwrite)"
        )
    if st is not None and os.path.isdir(path):
        raise InputFileError(f"{path} is a folder; choose a file name")
    if not path.parent.is_dir():
        raise InputFileError(f"{path}: folder {path.parent} does not exist; create it first")
    if st is not None and not overwrite:
        raise InputFileError(f"{path} exists; pass --overwrite (or choose another name)")
    if probe:
        check_folder_writable(path.parent, path)
    return path


def check_folder_writable(folder: PathLike, target: PathLike | None = None) -> None:
    """Refuse, before any work, a folder that cannot take a new file or has no free space.

    A small file is created there and removed (this catches read-only disks
    and permissions, even for root), and the free space is measured.
    """
    folder = Path(folder)
    named = Path(target) if target is not None else folder
    probe = folder / f".samlung-probe-{uuid.uuid4().hex[:12]}.tmp"
    try:
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        os.close(fd)
    except OSError as exc:
        raise write_error(named, exc) from None
    finally:
        remove_quietly(probe)
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    if free < MIN_FREE_BYTES:
        raise InputFileError(
            f"{named}: cannot write (the disk is full: {free} bytes free); {WRITE_FIX}"
        )


def write_error(path: PathLike, exc: OSError) -> InputFileError:
    """The one line for a failed write: ``PATH: cannot write (why); check the folder ...``."""
    if exc.errno == errno.ENAMETOOLONG:
        return InputFileError(
            f"{_short(path)}: cannot write (the file name is longer than the file system "
            "allows); choose a shorter name"
        )
    if exc.errno == errno.ELOOP:
        return InputFileError(f"{path}: cannot write (a symlink loop); choose another output name")
    if exc.errno == errno.EISDIR:
        return InputFileError(f"{path} is a folder; remove it or choose another name")
    return InputFileError(f"{path}: cannot write ({exc.strerror or exc}); {WRITE_FIX}")


def _path_error(path: Path, exc: OSError) -> InputFileError:
    if exc.errno == errno.ELOOP:
        return InputFileError(f"{path} is a symlink loop; remove it or choose another output name")
    return write_error(path, exc)


def _name_max(folder: Path) -> int:
    try:
        return int(os.pathconf(folder if folder.is_dir() else ".", "PC_NAME_MAX"))
    except (OSError, ValueError):
        return NAME_MAX


def _short(path: PathLike, keep: int = 60) -> str:
    """A path whose name is shortened to ``keep`` characters for a one-line message."""
    path = Path(path)
    name = path.name
    if len(name) <= keep:
        return str(path)
    return str(path.parent / f"{name[: keep // 2]}...{name[-keep // 2 :]}")


def remove_quietly(path: PathLike) -> None:
    """Remove a file if it is there; never raise (a cleanup must not hide the real error)."""
    with suppress(OSError, ValueError):
        os.unlink(path)


def unlink_output(path: PathLike, inputs: Iterable[PathLike | FileIdentity | None] = ()) -> None:
    """Remove an old output (e.g. a run record started again); inputs are never removed."""
    path = check_output(path, overwrite=True, inputs=inputs)
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        raise write_error(path, exc) from None


# --------------------------------------------------------------------------- the lock


class RunLock:
    """A lock file in a run folder: ``O_EXCL``, holding the owner's pid.

    A second process is refused with one line while the owner lives.  A lock
    whose pid is dead (a killed run), or this process's own (an earlier run
    here that was not closed), is taken over.  :meth:`release` (also at exit)
    removes it.
    """

    def __init__(self, folder: PathLike) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.held = False
        self.token = f"{os.getpid()} {uuid.uuid4().hex}"

    def acquire(self) -> RunLock:
        """Take the lock or raise :class:`InputFileError` naming the run that holds it."""
        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if self._owner_alive():
                    raise InputFileError(
                        f"{self.folder}: another napari-samlung run (pid {self._owner()}) is "
                        "using this folder; wait for it to finish or choose another --out"
                    ) from None
                remove_quietly(self.path)  # stale: its run is gone
                continue
            except OSError as exc:
                raise write_error(self.path, exc) from None
            try:
                os.write(fd, f"{self.token}\n".encode())
            except OSError as exc:
                os.close(fd)
                remove_quietly(self.path)
                raise write_error(self.path, exc) from None
            os.close(fd)
            self.held = True
            atexit.register(self.release)
            return self
        raise InputFileError(
            f"{self.path}: cannot take the run folder's lock; remove this file if no run is "
            "using the folder"
        )

    def release(self) -> None:
        """Remove the lock if this process holds it (never raises)."""
        if not self.held:
            return
        self.held = False
        atexit.unregister(self.release)
        if self._content() == self.token:
            remove_quietly(self.path)

    def _content(self) -> str:
        try:
            return self.path.read_text(encoding="ascii", errors="replace").strip()
        except OSError:
            return ""

    def _owner(self) -> int | None:
        pid = self._content().split(" ", 1)[0]
        return int(pid) if pid.isdigit() and len(pid) < 12 else None

    def _owner_alive(self) -> bool:
        pid = self._owner()
        if pid is None:  # being written right now, or garbage
            try:
                age = time.time() - self.path.stat().st_mtime
            except OSError:
                return False
            return age < LOCK_GRACE_S
        if pid == os.getpid():
            return False
        return _pid_alive(pid)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def _guard_core_writes(path: Path) -> None:
    """The embedding cache's files obey the same rule (see ``core.write_guard``)."""
    check_output(path, overwrite=True)


write_guard.set_guard(_guard_core_writes)
