#!/usr/bin/env python3
"""Load test of ``s2s serve``: N concurrent clients for T seconds against a server on the loopback address, once
with batching across requests and once with ``--max-batch 1`` (batching off), in the same run.

    python tools/loadtest.py runs/translation --clients 32 --seconds 20
    python tools/loadtest.py runs/translation --input sentences.txt --json

The tool starts each server itself (``s2s serve RUN --port P``), waits until it is ready, lets every client send
one sentence per request (the run's valid sources, or ``--input`` lines, in turn) as soon as its last answer came,
stops the clients after ``--seconds``, and stops the server with SIGTERM. It reports requests/second,
sentences/second, p50/p95/p99 latency and the error count of each, and the ratio of their sentences/second. The
clients are threads of this process and share the machine with the server: on a small machine they take some of
its CPU, the same in both settings.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

MAX_CLIENTS, MAX_SECONDS = 256, 600


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    sentences = read_sentences(args)
    rows = {}
    for name, max_batch in (("batched", args.max_batch), ("unbatched", 1)):
        rows[name] = measure(args, sentences, max_batch)
        print(f"loadtest: {name}: {describe(rows[name])}", file=sys.stderr)
    ratio = rows["batched"]["sentences_per_s"] / max(1e-9, rows["unbatched"]["sentences_per_s"])
    result = {
        **rows,
        "ratio": round(ratio, 2),
        "clients": args.clients,
        "seconds": args.seconds,
        "precision": args.precision,
    }
    print(json.dumps(result) if args.json else f"batching gives {ratio:.2f}x the sentences/second of --max-batch 1")
    return 0 if all(row["errors"] == 0 for row in rows.values()) else 1


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a trained translation run")
    parser.add_argument("--clients", type=int, default=32, help=f"concurrent clients, 1 to {MAX_CLIENTS} (32)")
    parser.add_argument(
        "--seconds", type=float, default=20.0, help=f"how long each setting is loaded, at most {MAX_SECONDS}"
    )
    parser.add_argument("--input", type=Path, help="sentences to send, one per line (default: the run's valid sources)")
    parser.add_argument("--max-batch", type=int, default=32, help="the batched server's --max-batch (32)")
    parser.add_argument("--max-wait-ms", type=float, default=30.0, help="the batched server's --max-wait-ms (30)")
    parser.add_argument(
        "--precision", choices=["fp32", "bf16"], default="fp32", help="both servers' --precision (fp32)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if not 1 <= args.clients <= MAX_CLIENTS:
        parser.error(f"--clients: {args.clients} is not between 1 and {MAX_CLIENTS}")
    if not 0 < args.seconds <= MAX_SECONDS:
        parser.error(f"--seconds: {args.seconds} is not in (0, {MAX_SECONDS}]")
    return args


def read_sentences(args) -> list[str]:
    if args.input is not None:
        lines = [line for line in args.input.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        from s2s.config import load_recipe
        from s2s.data.corpus import load_split

        lines = [src for src, _ in load_split(load_recipe(args.run / "recipe.yaml", check_files=False).data, "valid")]
    if not lines:
        raise SystemExit("loadtest: no sentences to send")
    return lines


def measure(args, sentences: list[str], max_batch: int) -> dict:
    port = free_port()
    command = [sys.executable, "-m", "s2s", "serve", str(args.run), "--port", str(port), "--max-batch", str(max_batch)]
    command += ["--max-wait-ms", str(args.max_wait_ms), "--max-texts", "1", "--precision", args.precision]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_ready(port, server)
        return load(port, sentences, args.clients, args.seconds)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)


def load(port: int, sentences: list[str], clients: int, seconds: float) -> dict:
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    ends = time.monotonic() + seconds

    def client(number: int) -> None:
        turn = number
        while time.monotonic() < ends:
            started = time.perf_counter()
            ok = post(port, sentences[turn % len(sentences)])
            with lock:
                if ok:
                    latencies.append(time.perf_counter() - started)
                else:
                    errors[0] += 1
            turn += clients

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - began
    ranked = sorted(latencies)
    pick = lambda q: round(ranked[min(len(ranked) - 1, int(q * len(ranked)))] * 1000, 1) if ranked else None  # noqa: E731
    return {
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "sentences_per_s": round(len(latencies) / elapsed, 1),  # one sentence per request
        "p50_ms": pick(0.50),
        "p95_ms": pick(0.95),
        "p99_ms": pick(0.99),
        "mean_ms": round(statistics.fmean(latencies) * 1000, 1) if latencies else None,
        "answered": len(latencies),
        "errors": errors[0],
    }


def post(port: int, sentence: str) -> bool:
    body = json.dumps({"texts": [sentence]}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/translate", data=body)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status == 200 and bool(json.loads(response.read())["results"])
    except (urllib.error.URLError, OSError, ValueError):
        return False


def describe(row: dict) -> str:
    return (
        f"{row['requests_per_s']:,} requests/s, {row['sentences_per_s']:,} sentences/s, "
        f"latency p50 {row['p50_ms']} ms, p95 {row['p95_ms']} ms, p99 {row['p99_ms']} ms, {row['errors']} errors"
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_ready(port: int, server: subprocess.Popen, seconds: float = 300) -> None:
    """Until the server at ``port`` says it is ready (exits with the server's error if it ends first)."""
    tool = Path(sys.argv[0]).stem
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"{tool}: the server ended: {server.stderr.read().strip()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise SystemExit(f"{tool}: the server did not become ready")


if __name__ == "__main__":
    sys.exit(main())
