"""A loopback-only network namespace for a Ray cluster and its vLLM drivers.

``ray start --node-ip-address 127.0.0.1`` still binds some of its servers to
every address of the machine. Instead of trusting each component's options,
the cluster runs where no other address exists: a fresh network namespace
whose only interface is ``lo`` (``unshare --net``). It also gets its own PID
namespace (``--pid --fork --mount-proc``):

* its first process (the anchor, PID 1 inside) reads its stdin until EOF;
  when the anchor ends, for any reason, the kernel kills every process of the
  namespace: Ray's daemons, its workers, vLLM servers. Nothing outlives the
  test session, not even after a crash of pytest (its pipe closes);
* ``ray stop`` run inside sees, and kills, only this namespace's processes.

Commands join it with ``nsenter``. As root, nothing else is needed; as another
user, ``--map-root-user`` adds a user namespace in which the caller is root
(unprivileged user namespaces must be allowed by the kernel).
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

_READY = "qr-namespace-ready"
# PID 1 of the namespace: brings up lo, says so, then waits for its stdin to
# close. Orphans (Ray's daemons) become its children: SIGCHLD ignored, the
# kernel reaps them, so `ray stop` does not wait on zombies.
_ANCHOR = (
    "import signal, subprocess, sys\n"
    "subprocess.run(['ip', 'link', 'set', 'lo', 'up'], check=True)\n"
    "signal.signal(signal.SIGCHLD, signal.SIG_IGN)\n"
    f"print({_READY!r}, flush=True)\n"
    "sys.stdin.read()\n"
)


class NamespaceUnavailableError(RuntimeError):
    """This machine cannot create the namespace (the message says why)."""


@dataclass(frozen=True)
class Listener:
    """One listening TCP socket: its local address and the process that owns it."""

    address: str
    port: int
    process: str

    @property
    def is_wildcard(self) -> bool:
        """Bound to every address of its network namespace (``*``, ``0.0.0.0``, ``[::]``)."""
        return self.address.strip("[]") in ("*", "0.0.0.0", "::")

    @property
    def is_loopback(self) -> bool:
        """Bound to a loopback address (127.0.0.0/8, ``::1``)."""
        return is_loopback_address(self.address)


def is_loopback_address(address: str) -> bool:
    """Whether ``address`` (``ss`` or ``ip`` notation, with or without a prefix) is loopback."""
    host = address.strip("[]").split("/")[0].split("%")[0]
    host = host.removeprefix("::ffff:")  # an IPv4 address on an IPv6 socket
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a wildcard is not an address
        return False


def parse_listeners(ss_output: str) -> list[Listener]:
    """The listening sockets in ``ss -ltnpH`` output."""
    found: list[Listener] = []
    for line in ss_output.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        local = fields[3]
        host, _, port = local.rpartition(":")
        process = fields[5] if len(fields) > 5 else ""
        found.append(Listener(host, int(port) if port.isdigit() else -1, process))
    return found


def _tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")
    if path is None:
        raise NamespaceUnavailableError(f"`{name}` is not installed (util-linux / iproute2)")
    return path


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid``, children first."""
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = [int(c) for c in (task / "children").read_text().split()]
            except OSError:  # exited meanwhile
                continue
            found.extend(children)
            todo.extend(children)
    return found


def _kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and everything it started.

    ``nsenter`` forks to enter the PID namespace: killing it alone would leave
    its child (a vLLM driver, say) running, and holding the Ray resources of
    its actors. Ray's own processes are children of the raylet, not of a
    driver; Ray ends a dead driver's actors itself.
    """
    victims = [*_descendants(pid), pid]
    for victim in victims:
        try:
            os.kill(victim, signal.SIGKILL)
        except ProcessLookupError:
            continue
    # SIGKILL takes effect asynchronously: wait until each is gone or a zombie.
    deadline = time.monotonic() + 30
    while any(_running(v) for v in victims) and time.monotonic() < deadline:
        time.sleep(0.05)


def _running(pid: int) -> bool:
    """``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class LoopbackNamespace:
    """PID and network namespaces whose only network is 127.0.0.0/8 (and ::1)."""

    def __init__(self) -> None:
        self._unshare = _tool("unshare")
        self._nsenter = _tool("nsenter")
        self._ss = _tool("ss")
        _tool("ip")
        self._user_ns = os.geteuid() != 0
        flags = ["--net", "--pid", "--fork", "--mount-proc", "--kill-child"]
        if self._user_ns:
            flags = ["--user", "--map-root-user", *flags]
        self._proc = subprocess.Popen(
            [self._unshare, *flags, sys.executable, "-c", _ANCHOR],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline().strip()
        if line != _READY:
            self._proc.kill()
            _, err = self._proc.communicate()
            how = "unshare --map-root-user" if self._user_ns else "unshare (as root)"
            raise NamespaceUnavailableError(f"{how} failed: {line} {err.strip()}")
        self.anchor_pid = self._anchor_pid()
        self._pid_ns = os.readlink(f"/proc/{self.anchor_pid}/ns/pid")
        self._net_ns = os.readlink(f"/proc/{self.anchor_pid}/ns/net")

    def _anchor_pid(self) -> int:
        """The anchor's PID as seen from here (the only child of ``unshare``)."""
        pid = self._proc.pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        (child,) = children
        return int(child)

    def enter(self, argv: Sequence[str], cwd: str | os.PathLike[str] | None = None) -> list[str]:
        """``argv`` run inside both namespaces, from ``cwd`` (default: the caller's)."""
        where = ["--net", "--pid", "--mount"]
        if self._user_ns:
            where = ["--user", "--preserve-credentials", *where]
        wd = os.fspath(cwd) if cwd is not None else os.getcwd()
        return [self._nsenter, f"--target={self.anchor_pid}", *where, f"--wd={wd}", *argv]

    def run(
        self,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        timeout: float = 120,
        cwd: str | os.PathLike[str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside (from ``cwd``, default the caller's) and wait for it.

        Raises:
            subprocess.TimeoutExpired: ``argv`` ran past ``timeout``; it was
                killed with every process it started (see :func:`_kill_tree`).
        """
        with subprocess.Popen(
            self.enter(argv, cwd),
            env=dict(env) if env is not None else None,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ) as proc:
            try:
                stdout, stderr = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired as exc:
                _kill_tree(proc.pid)
                exc.stdout, exc.stderr = proc.communicate()
                raise
            return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)

    def listeners(self) -> list[Listener]:
        """Every listening TCP socket inside the namespace."""
        done = self.run([self._ss, "-ltnpH"])
        assert done.returncode == 0, done.stderr
        return parse_listeners(done.stdout)

    def listeners_outside(self) -> list[Listener]:
        """Listening TCP sockets of this machine's own network owned by the namespace's processes.

        (Sockets always belong to their creator's network namespace; this
        checks it from the outside.)
        """
        done = subprocess.run([self._ss, "-ltnpH"], capture_output=True, text=True, check=True)
        members = {str(pid) for pid in self.member_pids()}
        return [
            x
            for x in parse_listeners(done.stdout)
            if any(f"pid={pid}," in x.process for pid in members)
        ]

    def interfaces(self) -> list[str]:
        """The network interfaces inside the namespace."""
        # /proc/PID/net is the view of that process's network namespace.
        lines = Path(f"/proc/{self.anchor_pid}/net/dev").read_text().splitlines()[2:]
        return sorted(line.split(":")[0].strip() for line in lines)

    def member_pids(self) -> list[int]:
        """PIDs (as seen from here) of the processes in the namespace's PID namespace.

        After :meth:`close`, the processes left over (none: the kernel kills them).
        """
        found: list[int] = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if os.readlink(entry / "ns" / "pid") == self._pid_ns:
                    found.append(int(entry.name))
            except OSError:  # exited meanwhile, or not ours to look at
                continue
        return found

    def outside_network(self) -> list[int]:
        """Member processes whose network namespace is not the loopback-only one."""
        strays: list[int] = []
        for pid in self.member_pids():
            try:
                if os.readlink(f"/proc/{pid}/ns/net") != self._net_ns:
                    strays.append(pid)
            except OSError:
                continue
        return strays

    def close(self) -> None:
        """End the anchor, and wait until the kernel has killed every process left inside."""
        if self._proc.poll() is None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        for stream in (self._proc.stdout, self._proc.stderr):
            if stream is not None:
                stream.close()
        deadline = time.monotonic() + 30
        while self.member_pids() and time.monotonic() < deadline:
            time.sleep(0.1)
