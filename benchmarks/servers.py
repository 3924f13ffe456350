"""Start `voice serve` processes on loopback for a benchmark, and watch their CPU and memory."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class RunningServer:
    process: subprocess.Popen
    port: int

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/realtime"

    def anonymous_mb(self) -> float | None:
        """Resident memory that is not a mapped file (the heaps of Python and of the native
        libraries, not the model weights), from /proc/PID/smaps_rollup; None where it is missing."""
        try:
            with open(f"/proc/{self.process.pid}/smaps_rollup", encoding="utf-8") as handle:
                for line in handle:
                    if line.startswith("Anonymous:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        return None

    def usage(self) -> tuple[float, int]:
        """(CPU seconds used so far, resident memory in bytes)."""
        proc = psutil.Process(self.process.pid)
        times = proc.cpu_times()
        return times.user + times.system, proc.memory_info().rss


@contextmanager
def voice_server(*args: str, log: Path | None = None, timeout: float = 180.0, root: Path = ROOT):
    """`voice serve` from the source tree `root` (another checkout, for an A/B comparison)."""
    port = free_port()
    out = open(log, "wb") if log else subprocess.DEVNULL
    path = os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": path}
    process = subprocess.Popen([sys.executable, "-m", "server.cli", "serve", "--port", str(port), *args], cwd=root,
                               stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"voice serve {' '.join(args)} exited with {process.returncode}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError("the server did not come up") from None
                time.sleep(0.3)
        yield RunningServer(process, port)
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
