"""Running untrusted generated Python in a child process with limits, offline.

This is a best-effort fence for code a model wrote, not a security boundary
against a determined attacker: the child runs as the same user, in a fresh
folder, with an empty environment, capped memory, CPU time, file size and open
files, and without a network.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

logger = logging.getLogger(__name__)

_MIB = 2**20

# The runner is the child's entry point. A candidate that calls sys.exit(0)
# before the appended tests run must not pass, so a clean early exit fails.
_RUNNER = """\
import runpy
import sys

try:
    runpy.run_path("candidate.py", run_name="__main__")
except SystemExit as exc:
    if exc.code in (0, None):
        sys.exit("SystemExit: the code exited before its tests finished")
    raise
"""

# Used only where `unshare -n` is unavailable. Replacing the socket class stops
# ordinary library code from connecting, but code that reaches the system calls
# another way (ctypes, a subprocess) still can.
_OFFLINE_PRELUDE = """\
import _socket
import socket


class _OfflineSocket(socket.socket):
    def __init__(self, *args, **kwargs):
        raise OSError("network access is off while scoring generated code")


socket.socket = socket.SocketType = _socket.socket = _OfflineSocket
del _OfflineSocket

"""


@dataclass(frozen=True)
class Limits:
    """What one run of generated code may use."""

    timeout_s: float = 10.0
    memory_mb: int = 1024
    file_size_mb: int = 16
    open_files: int = 64


@dataclass(frozen=True)
class RunResult:
    """How one run ended; `returncode` is None when the timeout stopped it."""

    returncode: int | None
    timed_out: bool
    stderr_tail: str

    @property
    def passed(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def describe(self) -> str:
        if self.timed_out:
            return "timeout"
        if self.passed:
            return "passed"
        if self.stderr_tail:
            return self.stderr_tail
        if self.returncode is not None and self.returncode < 0:
            return f"killed by {_signal_name(-self.returncode)}"
        return f"exit code {self.returncode}"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def run_python(source: str, limits: Limits) -> RunResult:
    """Run `source` as a script in a fresh folder and report how it ended."""
    jail = network_jail()
    runner = _RUNNER if jail else _OFFLINE_PRELUDE + _RUNNER
    with tempfile.TemporaryDirectory(prefix="costroute-code-") as folder:
        workdir = Path(folder)
        (workdir / "candidate.py").write_text(source, encoding="utf-8")
        (workdir / "runner.py").write_text(runner, encoding="utf-8")
        command = [*(jail or ()), sys.executable, "-I", "runner.py"]

        # Stderr goes to a file so a child that prints without end fills at
        # most RLIMIT_FSIZE on disk rather than this process's memory.
        with tempfile.TemporaryFile() as stderr:
            returncode, timed_out = _run(command, workdir, stderr, limits)
            return RunResult(returncode, timed_out, _last_line(stderr))


def _run(
    command: list[str], workdir: Path, stderr: IO[bytes], limits: Limits
) -> tuple[int | None, bool]:
    process_cap = _process_cap()
    process = subprocess.Popen(
        command,
        cwd=workdir,
        env={"PATH": os.environ.get("PATH", os.defpath)},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        # The hook only calls setrlimit, which takes no lock another thread of
        # this process could hold at fork time.
        preexec_fn=functools.partial(_apply_limits, limits, process_cap),
        start_new_session=True,
    )
    try:
        return process.wait(timeout=limits.timeout_s), False
    except subprocess.TimeoutExpired:
        return None, True
    finally:
        _kill_session(process)


def _kill_session(process: subprocess.Popen[bytes]) -> None:
    """End the child and anything it started, which share its new session."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _apply_limits(limits: Limits, process_cap: int | None) -> None:
    # CPU time runs a second past the wall clock so that the timeout, which
    # says "timeout", normally ends the child first.
    _lower(resource.RLIMIT_CPU, math.ceil(limits.timeout_s) + 1)
    _lower(resource.RLIMIT_AS, limits.memory_mb * _MIB)
    _lower(resource.RLIMIT_FSIZE, limits.file_size_mb * _MIB)
    _lower(resource.RLIMIT_NOFILE, limits.open_files)
    _lower(resource.RLIMIT_CORE, 0)
    if process_cap is not None:
        _lower(resource.RLIMIT_NPROC, process_cap)


def _lower(which: int, value: int) -> None:
    _, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(which, (value, value))


def _process_cap() -> int | None:
    """A cap on processes that stops a fork bomb but leaves room for honest code.

    RLIMIT_NPROC counts every process of the user, not only the child's, so the
    cap sits 64 above the number running on the whole machine now.
    """
    try:
        running = sum(entry.isdigit() for entry in os.listdir("/proc"))
    except OSError:
        return None
    return running + 64


@functools.cache
def network_jail() -> tuple[str, ...] | None:
    """The `unshare` prefix that gives the child an empty network, if one works.

    Root can make a network namespace directly; other users need a user
    namespace too (`-r`), which some kernels and containers forbid. Each is
    tried once, and the answer kept for the life of the process.
    """
    unshare = shutil.which("unshare")
    if unshare is None:
        return None

    for flags in (("-n",), ("-r", "-n")):
        prefix = (unshare, *flags)
        if _works(prefix):
            return prefix
    logger.warning("unshare cannot drop the network here; blocking sockets instead")
    return None


def _works(prefix: tuple[str, ...]) -> bool:
    try:
        probe = subprocess.run(
            [*prefix, sys.executable, "-I", "-c", "pass"],
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


def _last_line(stream: IO[bytes]) -> str:
    stream.seek(0, os.SEEK_END)
    stream.seek(max(stream.tell() - 4096, 0))
    text = stream.read().decode("utf-8", errors="replace")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""
