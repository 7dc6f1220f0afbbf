"""Key files: load an identity from disk, creating it on first use.

Layer: ops (the operator surface: files on disk).

In: a path (and optionally a signature backend).  Out: an
:class:`~blueprint_net._core.identity.Identity`, or :class:`KeyFileError`
saying in one line what is wrong and, where it can, the command that fixes
it.  The checks are ssh's: a regular file, owned by this user, readable by
no one else.  The key's format (PKCS#8 PEM) is the core's business
(``Identity.to_pem``/``from_pem``); reading and writing files is not, so
the core stays free of I/O.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Optional, Union

from blueprint_net._core.errors import KeyFileError
from blueprint_net._core.identity import Identity
from blueprint_net._core.signatures import ISignatureBackend

PathLike = Union[str, "os.PathLike[str]"]


def load_identity(
    path: PathLike, backend: Optional[ISignatureBackend] = None
) -> Identity:
    """Load a key file, refusing one that others could read."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            status = os.fstat(handle.fileno())
            data = handle.read(64 * 1024)
        mode = status.st_mode
    except FileNotFoundError:
        raise KeyFileError(f"{path}: no such key file") from None
    except IsADirectoryError:
        raise KeyFileError(f"{path}: is a directory, not a key file") from None
    except OSError as error:
        raise KeyFileError(f"{path}: cannot read: {error.strerror}") from None
    if not stat.S_ISREG(mode):
        raise KeyFileError(f"{path}: not a regular file")
    if status.st_uid != os.geteuid():
        # As ssh: a key another user owns may be one they can swap for theirs.
        raise KeyFileError(
            f"{path}: owned by uid {status.st_uid}, not by this user"
            f" (uid {os.geteuid()}); run: chown {os.geteuid()} {path}"
        )
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"{path}: readable by group or others (mode {stat.S_IMODE(mode):04o});"
            f" run: chmod 600 {path}"
        )
    try:
        return Identity.from_pem(data, backend)
    except KeyFileError as error:
        raise KeyFileError(f"{path}: {error}") from None


def load_or_create_identity(
    path: PathLike, backend: Optional[ISignatureBackend] = None
) -> Identity:
    """Load the key file, creating it (mode 0600, PKCS#8 PEM) on first use.

    Creation is exclusive, so two processes starting at once end up with the
    same key rather than one overwriting the other's.
    """
    path = Path(path)
    if not path.exists():
        identity = Identity.generate(backend)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return load_identity(path, backend)
        except OSError as error:
            if error.errno == errno.ENOENT and not path.parent.is_dir():
                # (ENOENT also comes from a directory that exists but where
                # nothing may be created, like /proc: then strerror below.)
                raise KeyFileError(
                    f"{path}: cannot create: directory {path.parent} does not exist"
                ) from None
            raise KeyFileError(f"{path}: cannot create: {error.strerror}") from None
        with os.fdopen(fd, "wb") as handle:
            handle.write(identity.to_pem())
            handle.flush()
            os.fsync(handle.fileno())
        return identity
    return load_identity(path, backend)
