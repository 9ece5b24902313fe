"""Reading and writing files memsym did not create: regular files only, bounded, atomic.

Inputs (``--config``, a ``--checkpoint`` folder's files, Hugging Face cache files) are
opened with ``O_NONBLOCK`` and checked with ``fstat`` on the opened descriptor, so a FIFO
or a device (``/dev/zero``) is refused without blocking or reading forever, and a file that
is swapped between a check and the open cannot slip through. Reads stop at a size cap.

Outputs (``codegen -o``, ``plot -o``, ``latex -o``) go to a regular file or a new path, never
through a symbolic link and never onto a device, FIFO or socket: the text is written to a
new file in the same folder, flushed to disk, given the existing file's permission bits,
and renamed over the target (``os.replace``, atomic on POSIX), so a reader sees the old file
or the new one, never half of one. On any error the temporary file is removed.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from engine.errors import InputError, MemsymError
from engine.limits import printable

_READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
SHOWN_PATH = 120  # characters of a path an error line repeats


def shown_path(path: object) -> str:
    """A path for an error line: control characters escaped, cut to :data:`SHOWN_PATH`."""
    text = printable(os.fsdecode(path) if isinstance(path, (str, bytes, os.PathLike)) else path)
    head = 40  # the start, and most of the end (the file name and its folders say the most)
    return text if len(text) <= SHOWN_PATH else text[:head] + "..." + text[len(text) - (SHOWN_PATH - 3 - head):]


def _reason(exc: BaseException) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


def is_dir(path: str | os.PathLike) -> bool:
    """``Path.is_dir`` that never raises (a too-long name or a NUL byte is simply not a folder)."""
    try:
        return stat.S_ISDIR(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def exists(path: str | os.PathLike) -> bool:
    """``Path.exists`` (without following a final symlink) that never raises."""
    try:
        os.lstat(path)
    except (OSError, ValueError):
        return False
    return True


@contextlib.contextmanager
def open_regular(path: str | os.PathLike, error: type[MemsymError] = InputError) -> Iterator[tuple[BinaryIO, int]]:
    """(binary file, size) of a regular file; anything else is ``error`` naming the path."""
    try:
        fd = os.open(path, _READ_FLAGS)
    except (OSError, ValueError) as exc:
        raise error(f"{shown_path(path)}: cannot read ({_reason(exc)})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise error(f"{shown_path(path)}: not a regular file")
        os.set_blocking(fd, True)
        handle = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with handle:
        yield handle, info.st_size


def read_regular(path: str | os.PathLike, max_bytes: int, what: str,
                 error: type[MemsymError] = InputError) -> bytes:
    """The bytes of a regular file of at most ``max_bytes`` (``what``: 'a config.json', for the message)."""
    with open_regular(path, error) as (handle, size):
        if size > max_bytes:
            raise error(f"{shown_path(path)}: {size:,} bytes is too large for {what} (at most {max_bytes:,})")
        try:
            raw = handle.read(max_bytes + 1)
        except OSError as exc:
            raise error(f"{shown_path(path)}: cannot read ({_reason(exc)})") from None
    if len(raw) > max_bytes:  # it grew while being read
        raise error(f"{shown_path(path)}: more than {max_bytes:,} bytes is too large for {what}")
    return raw


# --- output -----------------------------------------------------------------------------

def _existing_mode(target: Path, flag: str) -> int | None:
    """The permission bits of the regular file at ``target``, None for a new path; refuses the rest."""
    try:
        info = os.lstat(target)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise InputError(f"{flag}: cannot write {shown_path(target)} ({_reason(exc)})") from None
    if stat.S_ISLNK(info.st_mode):
        raise InputError(f"{flag}: {shown_path(target)} is a symbolic link; memsym writes only to a regular "
                         f"file or a new path (give the link's target)")
    if stat.S_ISDIR(info.st_mode):
        raise InputError(f"{flag}: {shown_path(target)} is a directory")
    if not stat.S_ISREG(info.st_mode):
        raise InputError(f"{flag}: {shown_path(target)} is not a regular file (a device, FIFO or socket); "
                         f"memsym writes only to a regular file or a new path")
    return stat.S_IMODE(info.st_mode)


def check_output(path: str | os.PathLike, flag: str = "--output") -> Path:
    """Refuse, before any work, an output path :func:`write_atomically` would refuse."""
    target = Path(path)
    _existing_mode(target, flag)
    if not is_dir(target.parent):
        raise InputError(f"{flag}: cannot write {shown_path(target)} (its folder is missing or not a folder)")
    return target


def write_atomically(path: str | os.PathLike, write: Callable[[Path], None], flag: str = "--output") -> Path:
    """Create or replace the regular file ``path`` with what ``write(temporary path)`` writes there.

    Never half-written (a new file in the same folder, synced, renamed over the target),
    never through a symlink or onto a device; an existing file keeps its permission bits.
    """
    target = Path(path)
    mode = _existing_mode(target, flag)
    temporary = target.parent / f".memsym-{secrets.token_hex(6)}.tmp"  # short: a long target name still fits
    created = False
    try:
        os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666))
        created = True
        write(temporary)
        with open_regular(temporary) as (handle, _):
            os.fsync(handle.fileno())
        if mode is not None:
            os.chmod(temporary, mode)
        _existing_mode(target, flag)  # still a regular file or absent just before the rename
        os.replace(temporary, target)
        created = False
    except (OSError, ValueError) as exc:
        raise InputError(f"{flag}: cannot write {shown_path(target)} ({_reason(exc)})") from None
    finally:
        if created:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
    return target


def write_text(path: str | os.PathLike, text: str, flag: str = "--output") -> Path:
    """:func:`write_atomically` of UTF-8 text."""
    return write_atomically(path, lambda temporary: temporary.write_bytes(text.encode("utf-8")), flag)
