"""Unix-socket listeners as real processes: no takeover, stale files, ownership, mode.

Socket paths are limited to about 107 bytes, so each test works in a short
directory under /tmp rather than pytest's tmp_path.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import socket
import stat
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from qr_entropy_server.proto import entropy_service_pb2 as pb2
from qr_entropy_server.proto import entropy_service_pb2_grpc as pb2_grpc

Spawn = Callable[..., Any]
RunCli = Callable[..., subprocess.CompletedProcess[str]]
GUARD_S = 60.0


@pytest.fixture
def short_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="qrs-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _fetch(address: str, n: int = 16) -> bytes:
    with grpc.insecure_channel(address) as channel:
        stub = pb2_grpc.EntropyServiceStub(channel)
        return stub.GetEntropy(pb2.EntropyRequest(bytes_needed=n), timeout=GUARD_S).data


def test_a_second_server_on_a_live_socket_exits_and_the_first_keeps_serving(
    spawn: Spawn, run_cli: RunCli, short_dir: Path
) -> None:
    sock = short_dir / "e.sock"
    first = spawn("--address", f"unix://{sock}")
    second = run_cli("--address", f"unix://{sock}")
    assert second.returncode == 2
    assert f"another server is already listening on unix socket '{sock}'" in second.stderr
    assert len(_fetch(first.address)) == 16  # still reachable after the second gave up
    assert first.stop() == 0
    assert not sock.exists()  # the first created it, so the first removed it


def test_a_stale_socket_file_is_replaced(spawn: Spawn, short_dir: Path) -> None:
    sock = short_dir / "e.sock"
    leftover = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    leftover.bind(str(sock))
    leftover.close()  # the file stays, nobody listens: what a crashed server leaves
    assert stat.S_ISSOCK(sock.lstat().st_mode)
    server = spawn("--address", f"unix://{sock}")
    assert len(_fetch(server.address)) == 16
    assert server.stop() == 0
    assert "replacing stale unix socket file" in server.stderr


def test_a_socket_file_another_process_made_is_left_alone(spawn: Spawn, short_dir: Path) -> None:
    sock = short_dir / "e.sock"
    server = spawn("--address", f"unix://{sock}")
    sock.unlink()  # someone removed ours and put their own socket there
    other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        other.bind(str(sock))
        other.listen()
        identity = sock.lstat().st_ino
        assert server.stop() == 0
        assert sock.lstat().st_ino == identity
    finally:
        other.close()


def test_a_path_that_is_not_a_socket_is_an_error(run_cli: RunCli, short_dir: Path) -> None:
    path = short_dir / "e.sock"
    path.write_text("not a socket")
    done = run_cli("--address", f"unix://{path}")
    assert done.returncode == 2
    assert f"'{path}' exists and is not a unix socket" in done.stderr
    assert path.read_text() == "not a socket"


def test_a_missing_directory_is_named(run_cli: RunCli, short_dir: Path) -> None:
    # By hand, /run/qr-entropy-server exists only under the systemd unit.
    folder = short_dir / "absent"
    done = run_cli("--address", f"unix://{folder}/e.sock")
    assert done.returncode == 2
    assert f"the directory '{folder}' does not exist" in done.stderr
    # The error names the directory, not the private file the server would bind.
    assert ".qrs-" not in done.stderr
    assert not folder.exists()


def test_socket_mode_sets_the_file_mode(spawn: Spawn, short_dir: Path) -> None:
    sock = short_dir / "e.sock"
    server = spawn("--address", f"unix://{sock}", "--socket-mode", "660")
    assert stat.S_IMODE(sock.lstat().st_mode) == 0o660
    assert server.stop() == 0


# A client with the standard library only: the test's virtualenv lives under
# /root, which another user cannot enter. It connects and reads the first
# HTTP/2 frame the server sends after the client preface: a SETTINGS frame
# (type 4) proves that the gRPC server itself answered.
_CLIENT = """
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(30)
try:
    s.connect(sys.argv[1])
except PermissionError:
    print("EACCES"); sys.exit(0)
s.sendall(b"PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]))
header = b""
while len(header) < 9:
    chunk = s.recv(9 - len(header))
    if not chunk:
        break
    header += chunk
print("FRAME", header[3] if len(header) == 9 else -1)
"""


@pytest.fixture(scope="module")
def other_user() -> Iterator[tuple[int, int]]:
    """A throw-away user and group (uid, gid of the group): needs root and useradd."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create a second user (useradd); run as root to test")
    if shutil.which("useradd") is None or shutil.which("groupadd") is None:
        pytest.skip("useradd/groupadd not installed")
    if not Path("/usr/bin/python3").exists():
        pytest.skip("the other user's client needs /usr/bin/python3")
    user, group = f"qrc{os.getpid()}", f"qrg{os.getpid()}"
    subprocess.run(["groupadd", "--system", group], check=True)
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", user],
        check=True,
    )
    try:
        yield pwd.getpwnam(user).pw_uid, grp.getgrnam(group).gr_gid
    finally:
        subprocess.run(["userdel", user], check=False)
        subprocess.run(["groupdel", group], check=False)


def _connect_as(uid: int, groups: list[int], path: Path) -> str:
    done = subprocess.run(
        ["/usr/bin/python3", "-c", _CLIENT, str(path)],
        user=uid,
        group=pwd.getpwuid(uid).pw_gid,
        extra_groups=groups,
        capture_output=True,
        text=True,
        timeout=GUARD_S,
        check=False,
        cwd="/",
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.parametrize("mode", [None, "660"])
def test_socket_mode_lets_a_group_member_of_another_user_connect(
    spawn: Spawn, short_dir: Path, other_user: tuple[int, int], mode: str | None
) -> None:
    uid, gid = other_user
    short_dir.chmod(0o755)
    sock = short_dir / "e.sock"
    flags = ["--socket-mode", mode] if mode else []
    # The server runs as root with the shared group as its primary group and the
    # usual umask 022, like a service whose socket the vLLM user must reach.
    server = spawn("--address", f"unix://{sock}", *flags, group=gid, umask=0o022)
    assert sock.stat().st_gid == gid
    outsider = _connect_as(uid, [], sock)
    member = _connect_as(uid, [gid], sock)
    assert server.stop() == 0
    assert outsider == "EACCES"
    # Without --socket-mode the file is srwxr-xr-x: not even the group may connect.
    assert member == ("FRAME 4" if mode else "EACCES")
