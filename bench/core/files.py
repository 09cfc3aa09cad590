"""Whole-file writes that readers never see half done: write a temporary file beside the target, then rename.

A rename within one folder is atomic, so two grids writing one results folder, or a crash mid-write,
leave either the old file or the new one, never a torn one.
"""
from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path

from bench.core.errors import StorageFull


@contextlib.contextmanager
def replaced_atomically(path: str | os.PathLike):
    """Yields a temporary path in the target's folder; on success it replaces `path`, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; results are for reading
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StorageFull(f"no space left on the device holding {path.parent} while writing {path.name}; "
                              f"the results stored before are kept") from exc
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    with replaced_atomically(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
