"""Crash-safe writes: every file and directory skp produces appears whole or not at all.

One scheme for everything (checkpoints, stage outputs, bundles, reports): the new content is
written and fsynced beside its destination under a hidden temporary name, then renamed over
it. A rename is atomic on POSIX file systems, so a reader (or a run resumed after a crash)
sees either the old content or the new one. A directory cannot be renamed over a non-empty
one, so it takes two renames: the old directory is moved aside first and put back if the
second rename fails; a hard crash between the two leaves it as ``.<name>.old-*`` beside the
destination, which `interrupted_backups` finds.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path


def _default_file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _default_file_mode()


def _hidden_sibling(path: Path, kind: str) -> Path:
    return path.parent / f".{path.name}.{kind}-{uuid.uuid4().hex[:12]}"


def fsync_dir(path: Path) -> None:
    """Persist the renames inside a directory; skipped where the platform cannot."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, fsync it, rename it over ``path``.

    ``tmp`` does not exist yet when ``write`` is called. The file gets the mode a plain
    ``open`` would give it (results are meant to be shared, not 0600).
    """
    path = Path(path)
    tmp = _hidden_sibling(path, "tmp")
    try:
        write(tmp)
        _fsync_file(tmp)
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` by ``data`` atomically."""
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: Path, text: str) -> None:
    """Replace ``path`` by UTF-8 ``text`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def replace_dir(path: Path, build: Callable[[Path], object]) -> None:
    """Fill a new directory with ``build(tmp)``, then swap it in for ``path`` (if any).

    Whatever fails (``build`` or a rename), the previous directory stays where it was and
    no temporary directory is left behind.
    """
    path = Path(path)
    tmp = _hidden_sibling(path, "tmp")
    tmp.mkdir()  # not mkdtemp: its 0700 mode would hide results from other users
    try:
        build(tmp)
        for child in tmp.iterdir():
            if child.is_file():
                _fsync_file(child)
        fsync_dir(tmp)
        if os.path.lexists(path):
            backup = _hidden_sibling(path, "old")
            os.replace(path, backup)
            try:
                os.replace(tmp, path)
            except BaseException:
                os.replace(backup, path)
                raise
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def interrupted_backups(path: Path) -> list[Path]:
    """Previous versions of ``path`` that a crash between `replace_dir`'s renames left."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    return sorted(path.parent.glob(f".{path.name}.old-*"))


__all__ = [
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "fsync_dir",
    "interrupted_backups",
    "replace_dir",
]
