"""Start ``ppd serve`` as users do (its own process, a real uvicorn on loopback) for tests and benchmarks."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from ppd.errors import PPDError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``with Server(cache_dir=...) as srv: srv.url`` — a ``ppd serve`` process, stopped on exit."""

    def __init__(self, cache_dir: str | os.PathLike | None = None, port: int | None = None,
                 extra: list[str] | None = None, start_timeout: float = 180.0) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cmd = [sys.executable, "-m", "ppd.cli", "serve", "--port", str(self.port)]
        if cache_dir is not None:
            self.cmd += ["--cache-dir", str(cache_dir)]
        self.cmd += list(extra or [])
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen | None = None
        self.log: Path | None = None

    def __enter__(self) -> Server:
        fd, name = tempfile.mkstemp(prefix=f"ppd-serve-{self.port}-", suffix=".log")
        self.log, self._log = Path(name), os.fdopen(fd, "w")
        self.proc = subprocess.Popen(self.cmd, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log.read_text()[-500:]
                self.__exit__(None, None, None)
                raise PPDError(f"ppd serve exited with {self.proc.returncode}: {tail}")
            try:
                with urllib.request.urlopen(self.url + "/api/health", timeout=2) as r:
                    if json.load(r).get("ok"):
                        return self
            except OSError:
                time.sleep(0.3)
        self.__exit__(None, None, None)
        raise PPDError(f"ppd serve did not answer within {self.start_timeout:.0f} s")

    def rss_mb(self) -> tuple[float, float]:
        """The server's resident memory now and at its peak (VmRSS, VmHWM), in MiB (Linux)."""
        fields = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, val = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(val.split()[0]) / 1024
        return fields.get("VmRSS", float("nan")), fields.get("VmHWM", float("nan"))

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        self.log.unlink(missing_ok=True)  # a failed start already quoted it in its error
