"""Secrets come from files (mounted by Kubernetes or written by the dev scripts), never from
environment variables or the repository."""

from __future__ import annotations

import os
import stat
from pathlib import Path


class SecretFileError(RuntimeError):
    pass


def read_secret_bytes(path: str | os.PathLike[str]) -> bytes:
    p = Path(path)
    try:
        mode = p.stat().st_mode
        data = p.read_bytes()
    except OSError as exc:
        raise SecretFileError(f"cannot read secret file {p}: {exc.strerror}") from None
    # A key readable by other local users is a leak waiting to happen; refuse it.
    if mode & (stat.S_IRWXG | stat.S_IRWXO) and not _is_mounted_secret(p):
        raise SecretFileError(f"secret file {p} is readable by group/others (chmod 600 it)")
    return data


def read_secret(path: str | os.PathLike[str]) -> str:
    return read_secret_bytes(path).decode().strip()


def _is_mounted_secret(p: Path) -> bool:
    """A file of a Kubernetes secret volume, whose mode the pod spec governs (defaultMode),
    not us. Recognised by the kubelet's exact layout, `<dir>/<name> -> ..data/<name>` with
    `<dir>/..data` itself a symlink (to the timestamped folder it swaps atomically), not by
    "..data" anywhere in a link: any other symlink to a loose file is refused like the file."""
    if not p.is_symlink() or os.readlink(p) != f"..data/{p.name}":
        return False
    return (p.parent / "..data").is_symlink()
