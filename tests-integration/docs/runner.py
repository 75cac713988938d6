"""Runs documented blocks as a reader would, with their doc-test markers applied.

Each document gets a working directory of its own: a copy of the
repository's files (those git tracks, and the untracked ones it does not
ignore, as in a fresh clone with the working tree's edits), so that what a
block writes (``docs/example/``, ``cp -r deployments/_template ...``) lands in
the test's folder and never in the checkout; only ``.hatch`` is a symbolic
link to the checkout's (read, never written). Its blocks run there in
document order: files persist from block to block, environment variables do
not. ``hatch run`` finds the copy's ``hatch.toml`` and fills ``{root}`` with
the copy.

* Shell blocks and the ``$`` lines of transcripts run in ``bash -eo pipefail``
  with the shims of :mod:`shims` first on ``PATH`` and the hatch environment's
  variables set, in a fresh ``HOME``.
* Python blocks run in the engine worker (:mod:`engine_worker`), which also
  runs every demo command; its engines use the suite's tiny model.

Placeholders in markers: ``{tiny}`` the tiny model's folder, ``{server}`` the
address of a running reference ``qr-entropy-server`` (unix socket, urandom),
``{engine_records}`` a folder in which qr-vllm wrote a record file (one demo
run, its name as qr-vllm names it), ``{root}`` the document's working
directory (the copy; the checkout itself is never named).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

from .blocks import Block
from .seeded_device import SEED_ENV
from .shims import REFUSED_COMMANDS, worker_request

__all__ = ["ROOT", "DocRunner", "Outcome", "checkout_state", "project_files"]

ROOT = Path(__file__).resolve().parents[2]
_HERE = Path(__file__).resolve().parent
_BLOCK_TIMEOUT_S = 600
# The stand-in device's seed: with it the documented `qr-entropy check` passes
# every test (byte chi-square p 0.754, bit bias p 0.637, KS of u p 0.449), on every run.
DEVICE_SEED = "1"
# Never copied: a clone has none of them (the fallback when git is missing).
_NOT_COPIED = frozenset({".git", ".hatch", "dist", "build", "__pycache__"})


# Tracked files and the untracked ones .gitignore does not ignore.
_CLONE_FILES = ("ls-files", "-z", "--cached", "--others", "--exclude-standard")


def project_files() -> list[Path]:
    """The checkout's files as a clone with its working tree's edits has them.

    git's own list when ``ROOT`` is a git checkout: tracked files (deleted ones
    left out) and untracked files that ``.gitignore`` does not ignore.
    Otherwise every file outside the caches and build outputs.
    """
    try:
        listed = subprocess.run(
            ["git", "-C", str(ROOT), *_CLONE_FILES],
            capture_output=True,
            check=True,
        ).stdout.decode()
    except (OSError, subprocess.CalledProcessError):
        return sorted(
            path.relative_to(ROOT)
            for path in ROOT.rglob("*")
            if path.is_file()
            and not any(
                part in _NOT_COPIED or part.endswith("_cache") or part == ".hypothesis"
                for part in path.relative_to(ROOT).parts
            )
        )
    names = {Path(name) for name in listed.split("\0") if name}
    return sorted(name for name in names if (ROOT / name).is_file())


def checkout_state() -> set[str] | None:
    """``git status --porcelain`` of the checkout, one entry per line (None: no git)."""
    try:
        done = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=all"],
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return set(done.stdout.splitlines())


@dataclass(frozen=True)
class Outcome:
    """What running one block gave."""

    status: int
    """Exit status (0: it worked)."""
    output: str
    """stdout and stderr together."""
    code: str
    """What ran: the block, or its equivalent, after substitutions."""


class DocRunner:
    """Runs blocks; owns the shims, the engine worker and the reference server.

    Args:
        work: An empty folder for everything the blocks write.
        tiny: The suite's tiny model.
    """

    def __init__(self, work: Path, tiny: Path) -> None:
        self.work = work
        self.tiny = tiny
        self._roots: dict[Path, Path] = {}
        # Unix socket paths are limited to about 100 bytes: a short folder.
        self._sockets = Path(tempfile.mkdtemp(prefix="qrdoc"))
        self._worker: subprocess.Popen[str] | None = None
        self._server: subprocess.Popen[str] | None = None
        self._server_address: str | None = None
        self._engine_records: Path | None = None
        shims = work / "shims"
        shims.mkdir()
        for name in ("hatch", "python", "python3", *REFUSED_COMMANDS):
            shim = shims / name
            shim.write_text(
                f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(_HERE)!r})\n"
                f"from shims import main\nsys.exit(main([{name!r}, *sys.argv[1:]]))\n"
            )
            shim.chmod(0o755)
        home = work / "home"
        home.mkdir()
        hatch_env = tomllib.loads((ROOT / "hatch.toml").read_text())["envs"]["default"]
        keep = {k: v for k, v in os.environ.items() if not k.startswith(("QR_", "VLLM_", "HF_"))}
        self.env = {
            **keep,
            **hatch_env.get("env-vars", {}),
            "PATH": os.pathsep.join([str(shims), str(Path(sys.executable).parent), keep["PATH"]]),
            "HOME": str(home),
            # The model cache stays the suite's: `--model tiny` is built once.
            "QR_TINY_MODEL_CACHE": str(tiny.parent),
            "VLLM_LOGGING_STREAM": "ext://sys.stderr",
            "DOCTEST_ENGINE_SOCKET": str(self._sockets / "engine.sock"),
            "PYTHONUNBUFFERED": "1",
        }

    # ------------------------------------------------------------------ places

    def root_for(self, document: Path) -> Path:
        """The working directory of ``document``'s blocks (made on first use)."""
        if document not in self._roots:
            root = self.work / "roots" / str(document).replace("/", "__")
            root.mkdir(parents=True)
            for relative in project_files():
                target = root / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / relative, target)
            if (ROOT / ".hatch").is_dir():
                (root / ".hatch").symlink_to(ROOT / ".hatch")
            self._roots[document] = root
        return self._roots[document]

    def _fill(self, text: str, root: Path) -> str:
        values = {"{tiny}": str(self.tiny), "{root}": str(root)}
        for key, value in values.items():
            text = text.replace(key, value)
        if "{server}" in text:
            text = text.replace("{server}", self.server_address())
        if "{engine_records}" in text:
            text = text.replace("{engine_records}", str(self.engine_records()))
        return text

    # ------------------------------------------------------------------ running

    def code_of(self, block: Block) -> str:
        """What runs for ``block``: the block or its equivalent, substitutions applied."""
        marker = block.marker
        if marker is not None and "equivalent" in marker.actions:
            code = marker.body
        elif block.kind == "transcript":
            code = "\n".join(block.transcript_commands())
        else:
            code = block.text
        for old, new in marker.subs if marker is not None else ():
            if old not in code:
                raise AssertionError(f"{block.id}: sub={old!r} matches nothing in the block")
            code = code.replace(old, new)
        if block.kind == "python" and marker is not None and "prelude" in marker.actions:
            code = marker.body + "\n" + code
        return code

    def run(self, block: Block) -> Outcome:
        """Run ``block`` (it must be runnable: not skipped, not covered elsewhere)."""
        root = self.root_for(block.path)
        code = self._fill(self.code_of(block), root)
        if block.kind == "python":
            return self._python(code, root)
        return self._shell(code, root)

    def _shell(self, code: str, root: Path) -> Outcome:
        script = self.work / "block.sh"
        script.write_text(code + "\n")
        done = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
            cwd=root,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=_BLOCK_TIMEOUT_S,
            check=False,
        )
        return Outcome(done.returncode, done.stdout, code)

    def _python(self, code: str, root: Path) -> Outcome:
        payload = {"kind": "python", "code": code, "cwd": str(root), "env": self.env}
        status, output = self._request(payload)
        return Outcome(status, output, code)

    def _request(self, payload: dict[str, object]) -> tuple[int, str]:
        """One request to the engine worker: its status and output."""
        self._start_worker()
        with tempfile.TemporaryFile(dir=self.work) as out:
            fd = out.fileno()
            status = worker_request(self.env["DOCTEST_ENGINE_SOCKET"], payload, fd, fd)
            out.seek(0)
            return status, out.read().decode(errors="replace")

    # ------------------------------------------------------------------ helpers

    def _start_worker(self) -> None:
        if self._worker is not None and self._worker.poll() is None:
            return
        socket_path = Path(self.env["DOCTEST_ENGINE_SOCKET"])
        socket_path.unlink(missing_ok=True)
        log = (self.work / "engine-worker.log").open("a")
        self._worker = subprocess.Popen(
            [sys.executable, str(_HERE / "engine_worker.py"), str(socket_path), str(self.tiny)],
            env=self.env,
            cwd=self.work,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        assert self._worker.stdout is not None
        line = self._worker.stdout.readline()
        assert line.strip() == "ready", f"the engine worker did not start: {line!r}"

    def server_address(self) -> str:
        """A reference entropy server (seeded stand-in device, unix socket), started on first use.

        Seeded so that the documented ``qr-entropy check`` gets the same bytes,
        and so the same verdict, on every run (see seeded_device.py).
        """
        if self._server is None:
            sock = self._sockets / "entropy.sock"
            path = os.pathsep.join(filter(None, [str(_HERE), self.env.get("PYTHONPATH")]))
            self._server = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "qr_entropy_server",
                    "--backend",
                    "seeded_device:SeededDevice",
                    "--address",
                    f"unix://{sock}",
                ],
                env={**self.env, "PYTHONPATH": path, SEED_ENV: DEVICE_SEED},
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            assert self._server.stdout is not None
            for line in self._server.stdout:
                if "listening on" in line:
                    break
            else:
                raise AssertionError("the reference entropy server did not start")
            self._server_address = f"unix://{sock}"
        assert self._server_address is not None
        return self._server_address

    def engine_records(self) -> Path:
        """A folder holding the record file of one real demo run (made on first use)."""
        if self._engine_records is None:
            folder = self.work / "engine-records"
            folder.mkdir()
            env = {**self.env, "QR_RECORD_PATH": str(folder / "records.jsonl")}
            argv = ["--model", "tiny", "--max-tokens", "4"]
            status, output = self._request(
                {"kind": "demo", "argv": argv, "cwd": str(folder), "env": env}
            )
            assert status == 0, output
            self._engine_records = folder
        return self._engine_records

    def close(self) -> None:
        """Stop the worker and the server; remove the sockets' folder."""
        if self._worker is not None and self._worker.poll() is None:
            try:
                worker_request(self.env["DOCTEST_ENGINE_SOCKET"], {"kind": "exit"}, 1, 2)
                self._worker.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self._worker.kill()
                self._worker.wait()
        if self._server is not None:
            self._server.terminate()
            self._server.wait(timeout=60)
        shutil.rmtree(self._sockets, ignore_errors=True)
