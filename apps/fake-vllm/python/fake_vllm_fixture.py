"""Start fake-vllm from Python tests: a context manager and pytest fixtures.

fake-vllm is a Node program (``apps/fake-vllm/dist/cli.js``); this module starts it on port 0, reads the one JSON
line it prints on stdout when every engine listens::

    {"event":"ready","engines":[{"url":"http://127.0.0.1:41233"}],"control":"ws://127.0.0.1:40111"}

and stops it (SIGTERM, then SIGKILL) when the test is done. Only the standard library is used, so any Python 3.8+
can import it; the pytest fixtures need pytest.

Use it from a test file or a ``conftest.py``::

    pytest_plugins = ["fake_vllm_fixture"]      # with this directory on sys.path / PYTHONPATH

    def test_generate(fake_vllm):               # one server per test module, default flags
        url = fake_vllm.url

    def test_skyrl(start_fake_vllm):            # your own flags, stopped after the test
        server = start_fake_vllm("--preset", "skyrl", "--engines", "2")

or without pytest::

    with FakeVllmProcess(["--preset", "skyrl"]) as server:
        print(server.urls)

Environment: ``FAKE_VLLM_CLI`` (path of ``cli.js``; default: ``../dist/cli.js`` next to this file) and
``FAKE_VLLM_NODE`` (the node binary; default ``node`` on PATH). Build first with ``pnpm --filter fake-vllm build``.
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

DEFAULT_CLI = Path(__file__).resolve().parent.parent / "dist" / "cli.js"
"""``apps/fake-vllm/dist/cli.js`` in this repository."""

DEFAULT_READY_TIMEOUT_S = 30.0
"""How long to wait for the ready line: Node's start plus binding every engine takes well under a second."""

DEFAULT_STOP_TIMEOUT_S = 10.0
"""How long SIGTERM may take before SIGKILL."""


class FakeVllmStartError(RuntimeError):
    """fake-vllm exited or printed no ready line; the message carries its stderr (the CLI's one-line reason)."""


class FakeVllmProcess:
    """One ``fake-vllm`` CLI process: ``start()`` blocks until it is ready, ``stop()`` ends it.

    Attributes once started:
        urls: the engines' base URLs (``http://127.0.0.1:<port>``), one per ``--engines``.
        url: the first engine's URL.
        control: the control channel's ``ws://`` URL, or None with ``--no-control``.
        ready: the whole ready line, parsed.
    """

    def __init__(
        self,
        args: Sequence[str] = (),
        *,
        cli: Optional[str] = None,
        node: Optional[str] = None,
        env: Optional[Dict[str, str]] = None,
        ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S,
        stop_timeout_s: float = DEFAULT_STOP_TIMEOUT_S,
    ) -> None:
        self.args = list(args)
        self.cli = Path(cli or os.environ.get("FAKE_VLLM_CLI") or DEFAULT_CLI)
        self.node = node or os.environ.get("FAKE_VLLM_NODE") or shutil.which("node") or "node"
        self.env = env
        self.ready_timeout_s = ready_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.process: Optional[subprocess.Popen] = None
        self.ready: Dict[str, Any] = {}
        self.urls: List[str] = []
        self.url = ""
        self.control: Optional[str] = None
        self._stderr = tempfile.TemporaryFile()

    def _command(self) -> List[str]:
        args = list(self.args)
        # Port 0: the kernel picks free ports, so parallel test runs never collide. Abort on SIGTERM: a finished
        # test has nothing in flight worth draining, and a drain would hold teardown up to 30 s.
        if not any(arg == "--port" or arg.startswith("--port=") for arg in args):
            args += ["--port", "0"]
        if not any(arg == "--on-sigterm" or arg.startswith("--on-sigterm=") for arg in args):
            args += ["--on-sigterm", "abort"]
        return [self.node, str(self.cli), *args]

    def stderr_text(self) -> str:
        """What the process wrote on stderr so far."""
        # pread: the child shares this file's offset, so a seek here would make it overwrite what it wrote.
        fd = self._stderr.fileno()
        return os.pread(fd, os.fstat(fd).st_size, 0).decode("utf-8", "replace")

    def start(self) -> "FakeVllmProcess":
        if not self.cli.is_file():
            raise FakeVllmStartError(
                f"{self.cli} does not exist: build fake-vllm first (pnpm --filter fake-vllm build) or set FAKE_VLLM_CLI"
            )
        env = dict(os.environ if self.env is None else self.env)
        self.process = subprocess.Popen(
            self._command(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._stderr, env=env
        )
        try:
            line = self._read_ready_line()
            ready = json.loads(line)
            if not isinstance(ready, dict) or ready.get("event") != "ready":
                raise FakeVllmStartError(f"fake-vllm's first line is not the ready event: {line!r}")
        except BaseException:
            self.stop()
            raise
        self.ready = ready
        self.urls = [engine["url"] for engine in ready["engines"]]
        self.url = self.urls[0]
        self.control = ready.get("control")
        # The CLI prints nothing more on stdout, but drain it anyway so a full pipe can never block the server.
        threading.Thread(target=self._drain_stdout, daemon=True).start()
        return self

    def _read_ready_line(self) -> str:
        assert self.process is not None and self.process.stdout is not None
        stdout = self.process.stdout
        deadline = time.monotonic() + self.ready_timeout_s
        buffer = b""
        with selectors.DefaultSelector() as selector:
            selector.register(stdout, selectors.EVENT_READ)
            while b"\n" not in buffer:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise FakeVllmStartError(
                        f"fake-vllm printed no ready line within {self.ready_timeout_s} s; stderr: {self.stderr_text()}"
                    )
                if not selector.select(remaining):
                    continue
                chunk = os.read(stdout.fileno(), 65536)
                if not chunk:
                    code = self.process.wait()
                    raise FakeVllmStartError(
                        f"fake-vllm exited with code {code} before it was ready: {self.stderr_text().strip()}"
                    )
                buffer += chunk
        return buffer.split(b"\n", 1)[0].decode("utf-8")

    def _drain_stdout(self) -> None:
        process = self.process
        if process is None or process.stdout is None:
            return
        try:
            while os.read(process.stdout.fileno(), 65536):
                pass
        except (OSError, ValueError):
            pass

    def stop(self) -> Optional[int]:
        """SIGTERM, then SIGKILL after ``stop_timeout_s``; returns the exit code (None if it was never started)."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()
        return process.returncode

    def __enter__(self) -> "FakeVllmProcess":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


try:
    import pytest
except ImportError:  # the context manager above works without pytest
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    @pytest.fixture
    def start_fake_vllm():
        """A function ``start_fake_vllm(*flags) -> FakeVllmProcess``; every server it started stops after the test."""
        started: List[FakeVllmProcess] = []

        def start(*args: str, **kwargs: Any) -> FakeVllmProcess:
            server = FakeVllmProcess(args, **kwargs)
            started.append(server)
            return server.start()

        yield start
        for server in started:
            server.__exit__(None, None, None)

    @pytest.fixture(scope="module")
    def fake_vllm():
        """One fake-vllm with default flags, shared by the tests of a module."""
        with FakeVllmProcess() as server:
            yield server
