"""Reading a secret from a file the operator wrote: the heartbeat key, a webhook's signing secret.

One rule for every secret: a regular file (not a link), readable by its owner only, not empty; surrounding
whitespace stripped (so `echo KEY > file` and `printf KEY > file` give the same secret). Each refusal names the
file and what to do, through the caller's exception type, so the caller's error says which secret it was.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


def read_secret(path: Path, what: str, *, empty_hint: str, error: type[Exception]) -> bytes:
    """The secret in `path`; raises `error` whose message starts with `what` and the file's name."""
    try:
        # O_NOFOLLOW + fstat: the mode checked is the mode of the file actually read.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise error(f"{what} {str(path)!r}: cannot open: {exc.strerror}") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{what} {str(path)!r}: not a regular file")
        if st.st_mode & 0o077:
            raise error(
                f"{what} {str(path)!r}: readable by group or others "
                f"(mode {st.st_mode & 0o777:o}); run: chmod 600 {path}"
            )
        with os.fdopen(fd, "rb", closefd=False) as f:
            secret = f.read().strip()
    finally:
        os.close(fd)
    if not secret:
        raise error(f"{what} {str(path)!r}: empty; {empty_hint}")
    return secret
