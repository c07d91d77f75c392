"""Small shared helpers: atomic writes, JSON, file digests, and cleaning what a killed writer
left."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from lit_itpo.errors import StorageError


def atomic_torch_save(
    obj: Any, path: str | Path, prefix: str | None = None, fsync: bool = False
) -> None:
    """``torch.save`` to a temp file beside ``path``, then rename: no partial file on a crash or
    a full disk (the temp file is removed; an old ``path`` stays as it was).

    Args:
        prefix: the temp file's name starts with this (default ``.<name>.``; ``temp_prefix()``
            names the writer, for :func:`remove_stale_temps`).
        fsync: the data reaches the disk before the rename, so a power loss leaves the old
            file or the whole new one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix or f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; these files are meant to be shared
        torch.save(obj, tmp)
        if fsync:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(text: str, path: str | Path) -> None:
    """Write text to a temp file beside ``path``, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(obj: Any, path: str | Path) -> None:
    atomic_write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n", path)


def write_record(obj: Any, path: str | Path) -> None:
    """:func:`atomic_write_json` for a file a rerun reads back (a run's ``metrics.json``, the
    pipeline's ``results.json``): a failed write (a full disk, a read-only folder) is a
    :class:`StorageError` naming the file and the OS's reason, printed as one line, and leaves
    no partial or temp file, so the same command, rerun, resumes and writes it."""
    try:
        atomic_write_json(obj, path)
    except OSError as exc:
        raise StorageError.writing(path, exc) from None


_DIGESTS: dict[tuple, str] = {}


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's content (hex). Kept per process by path, size, mtime and inode,
    so a file read by several stages is hashed once (0.2 s for 300 MB from the page cache,
    measured)."""
    path = Path(path).resolve()
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns, st.st_ino)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


def replace_dir(src: str | Path, dst: str | Path) -> None:
    """Move a finished directory into place, replacing ``dst`` (rename on the same filesystem)."""
    src, dst = Path(src), Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)


def remove_dir(path: str | Path) -> None:
    """Delete a directory: renamed aside first (``.tmp-<pid>-<name>``, beside it), so a kill
    midway leaves no half of it under its own name (:func:`remove_stale_temps` clears the
    rest)."""
    path = Path(path)
    if not path.exists():
        return
    aside = path.with_name(f"{temp_prefix()}{path.name}")
    os.replace(path, aside)
    shutil.rmtree(aside, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def temp_prefix() -> str:
    """Prefix of a temp file or dir this process writes beside its target (``.tmp-<pid>-``),
    so a later run can tell a crashed writer's leftovers from a live writer's."""
    return f".tmp-{os.getpid()}-"


def remove_stale_temps(folder: str | Path, pattern: str = ".tmp-*") -> list[Path]:
    """Delete ``pattern`` entries in ``folder`` left by writers that are no longer running
    (a kill -9 mid-write); a live process's are kept. Returns what was removed."""
    removed = []
    for p in Path(folder).glob(pattern):
        m = re.match(r"\.tmp-(\d+)-", p.name)
        if m and _pid_alive(int(m.group(1))):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p)
    return removed
