"""``s2s serve``: the runs checked before anything starts (a bad one is a one-line error), then uvicorn, which
stops on SIGTERM or Ctrl-C by refusing new connections and finishing the requests in flight."""

from __future__ import annotations

import contextlib
import signal
import socket
import sys
import threading
from pathlib import Path

from s2s.errors import RunError, UsageError
from s2s.serve.limits import Limits


def serve_runs(runs: list[Path], host: str, port: int, limits: Limits, precision: str = "fp32") -> None:
    import torch
    import uvicorn

    from s2s.config import load_recipe
    from s2s.models import bf16_fallback
    from s2s.runs import require_run
    from s2s.serve.app import create_app

    tasks = {}
    for path in runs:
        task = load_recipe(require_run(path) / "recipe.yaml", check_files=False).task
        if path.name in {p.name for p in tasks}:
            raise RunError(f"{path}: two runs named {path.name!r}; requests name models by their folder's name")
        tasks[path] = task
    check_port(host, port)
    if precision == "bf16" and (why := bf16_fallback(torch.device("cpu"))):
        print(f"s2s: note: --precision: {why}", file=sys.stderr)
    app = create_app(tasks, limits, precision=precision)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=30)
    server_class(uvicorn)(config).run()


def check_port(host: str, port: int) -> None:
    """The address can be listened on (checked before any model loads, so that a busy port is one clear line)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise UsageError(f"--port: cannot listen on {host}:{port}: {error.strerror or error}") from None


def server_class(uvicorn):
    class Server(uvicorn.Server):
        """uvicorn's server, less one thing: after a graceful stop on SIGTERM or Ctrl-C uvicorn raises the signal
        again, so the process would end as killed by it (exit 143 or 130); a stop that answered every request in
        flight is a normal end, exit 0."""

        @contextlib.contextmanager
        def capture_signals(self):
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    return Server
