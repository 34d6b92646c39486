"""A real `python -m runtime.serve` on the default model, shared by the server tests.

It runs as a subprocess on a free port with a small context and KV cache so that it
starts quickly, and with an API key so that every test also exercises authentication.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest

API_KEY = "test-key-123"
MAX_MODEL_LEN = 512
STARTUP_TIMEOUT_S = 300


@dataclass
class Server:
    proc: subprocess.Popen
    base_url: str
    log_path: str
    api_key: str | None = None
    max_model_len: int = MAX_MODEL_LEN

    @property
    def v1(self) -> str:
        return self.base_url + "/v1"

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()[-4000:]

    def metric(self, name: str) -> float:
        """Sum of a Prometheus sample over its label sets (e.g. all finish reasons)."""
        text = httpx.get(self.base_url + "/metrics", timeout=10).text
        values = [float(m.group(1)) for m in re.finditer(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M)]
        if not values:
            raise KeyError(f"{name} not in /metrics")
        return sum(values)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(api_key: str | None = None) -> Server:
    """Start the server and wait until /health answers; fail with its log if it cannot."""
    extra = ["--api-key", api_key] if api_key else []
    port = free_port()
    log = tempfile.NamedTemporaryFile("w", prefix="kf-serve-", suffix=".log", delete=False)
    cmd = [sys.executable, "-m", "runtime.serve", "--port", str(port), "--max-model-len", str(MAX_MODEL_LEN),
           "--kv-cache-memory", "48MiB", "--uvicorn-log-level", "info", *extra]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    log.close()  # the child holds its own descriptor
    server = Server(proc, f"http://127.0.0.1:{port}", log.name, api_key)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode} during startup:\n{server.log()}")
        try:
            if httpx.get(server.base_url + "/health", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    proc.kill()
    pytest.fail(f"server not healthy after {STARTUP_TIMEOUT_S}s:\n{server.log()}")


def stop_server(server: Server, timeout: float = 60) -> None:
    """SIGTERM (kill if it hangs), then delete its log."""
    if server.proc.poll() is None:
        server.proc.terminate()
        try:
            server.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()
    os.unlink(server.log_path)


@pytest.fixture
def start_server() -> Iterator[Callable[..., Server]]:
    """A factory for servers of a test's own (stopped at the test's end if still running)."""
    started: list[Server] = []

    def start(api_key: str | None = None) -> Server:
        started.append(_start_server(api_key))
        return started[-1]

    yield start
    for srv in started:
        stop_server(srv)


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    srv = _start_server(api_key=API_KEY)
    yield srv
    stop_server(srv)
