"""Unix-socket listeners that never take over, or delete, another server's socket.

gRPC unlinks whatever file sits at a unix-socket path when it binds, and again
when it stops. A second server on the same path would therefore steal the
first one's clients and, on exit, delete the file so that nobody can reach
the first any more. So the server binds a private name in the same directory
and publishes it with ``link(2)``, which fails if the public path exists: a
live listener there is an error, a stale file (nothing accepts on it) is
removed first, and at stop the public path is removed only while it is still
the file this server created.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import stat
from pathlib import Path

from qr_entropy_server._errors import ServerConfigError

__all__ = ["UnixListener", "socket_path"]

logger = logging.getLogger(__name__)

# A listener too busy to accept within this time is still a live listener.
_PROBE_TIMEOUT_S = 2.0


def socket_path(address: str) -> Path | None:
    """The filesystem path of a ``unix:`` address, or None for any other address."""
    if address.startswith("unix://"):
        return Path(address[len("unix://") :])
    if address.startswith("unix:"):
        return Path(address[len("unix:") :])
    return None


def _is_live(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(_PROBE_TIMEOUT_S)
        try:
            probe.connect(str(path))
        except TimeoutError:
            return True
        except OSError as exc:
            if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
                return False
            raise ServerConfigError(
                f"cannot tell whether a server listens on unix socket {str(path)!r}: {exc.strerror}"
            ) from exc
    return True


class UnixListener:
    """The bookkeeping of one unix-socket listener.

    Args:
        path: The public socket path clients connect to.
        mode: Permission bits for the socket file (None: the umask decides).
    """

    def __init__(self, path: Path, mode: int | None) -> None:
        self.path = path
        self.mode = mode
        self.private = path.parent / f".qrs-{os.getpid()}-{id(self) & 0xFFFF:x}"
        self._identity: tuple[int, int] | None = None

    def check_free(self) -> None:
        """Fail if a server listens on the path; remove a stale socket file.

        Raises:
            ServerConfigError: a live listener, a file that is not a socket, or
                a directory that is missing or not writable.
        """
        # Checked here, by name: gRPC's bind error would name the private file.
        folder = self.path.parent
        if not folder.is_dir():
            raise ServerConfigError(
                f"cannot listen on unix socket {str(self.path)!r}: the directory "
                f"{str(folder)!r} does not exist; create it or choose another --address "
                "(under systemd the unit's RuntimeDirectory= creates /run/qr-entropy-server)"
            )
        if not os.access(folder, os.W_OK | os.X_OK):
            raise ServerConfigError(
                f"cannot listen on unix socket {str(self.path)!r}: the directory "
                f"{str(folder)!r} is not writable by this user; choose another --address"
            )
        try:
            info = self.path.lstat()
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(info.st_mode):
            raise ServerConfigError(f"{str(self.path)!r} exists and is not a unix socket")
        if _is_live(self.path):
            raise ServerConfigError(
                f"another server is already listening on unix socket {str(self.path)!r}; "
                "stop it or choose another --address"
            )
        logger.warning("replacing stale unix socket file %s (no server listens on it)", self.path)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def publish(self) -> None:
        """Give the bound private socket its mode and its public name.

        Raises:
            ServerConfigError: another server created the path in the meantime.
        """
        if self.mode is not None:
            os.chmod(self.private, self.mode)
        try:
            os.link(self.private, self.path)
        except FileExistsError as exc:
            raise ServerConfigError(
                f"another server is already listening on unix socket {str(self.path)!r}"
            ) from exc
        except OSError as exc:
            raise ServerConfigError(
                f"cannot create unix socket {str(self.path)!r}: {exc.strerror}"
            ) from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                self.private.unlink()
        info = self.path.lstat()
        self._identity = (info.st_dev, info.st_ino)

    def remove(self) -> None:
        """Remove the public path if it is still the socket this server created."""
        if self._identity is None:
            return
        try:
            info = self.path.lstat()
        except FileNotFoundError:
            return
        if (info.st_dev, info.st_ino) == self._identity:
            self.path.unlink()
        else:
            logger.info("%s is no longer this server's socket; left in place", self.path)
        self._identity = None
