"""A node's data folder: its paths, its lock and its stable node id."""

from __future__ import annotations

import fcntl
import os
import re
import secrets

NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class DataDirError(Exception):
    """The data folder cannot be used; the message says why."""


class DataDir:
    """Owns ``path`` for one process: ``open()`` takes an exclusive lock."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self.journal = os.path.join(self.path, "journal.jsonl")
        self.snapshot = os.path.join(self.path, "snapshot.jsonl")
        self._lock_path = os.path.join(self.path, "lock")
        self._id_path = os.path.join(self.path, "node-id")
        self._lock_fd: int | None = None

    def open(self) -> None:
        try:
            os.makedirs(self.path, exist_ok=True)
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise DataDirError(f"cannot use data folder {self.path}: {e}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise DataDirError(
                f"data folder {self.path} is in use by another agenda node "
                f"(pid {holder})"
            ) from None
        self._lock_fd = fd
        self.write_pid(os.getpid())

    def write_pid(self, pid: int) -> None:
        """Name the holder in the lock file (again after twistd forks)."""
        if self._lock_fd is not None:
            os.ftruncate(self._lock_fd, 0)
            os.pwrite(self._lock_fd, f"{pid}\n".encode(), 0)

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def node_id(self, wanted: str | None = None) -> str:
        """The id stored in the folder; created (or taken from ``wanted``) once."""
        stored = None
        if os.path.exists(self._id_path):
            with open(self._id_path, encoding="utf-8") as f:
                stored = f.read().strip()
        if stored and wanted and stored != wanted:
            raise DataDirError(
                f"data folder {self.path} belongs to node {stored!r}, "
                f"not {wanted!r}; use another --data-dir"
            )
        if stored:
            return stored
        node_id = wanted or f"n{secrets.token_hex(4)}"
        write_atomically(self._id_path, [node_id.encode()])
        return node_id


def write_atomically(path: str, lines) -> None:
    """Replace ``path`` with ``lines``: temp file, fsync, rename, fsync folder."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        for line in lines:
            f.write(line)
            f.write(b"\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(path))


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
