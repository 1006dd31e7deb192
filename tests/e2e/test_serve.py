"""`s2s serve` through a real HTTP client (urllib over the loopback): each endpoint, each limit and refusal, readiness
before and after loading, and SIGTERM with requests in flight."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from s2s.runs import load_run
from tests.helpers import ENV

LINES = ["March 3, 2021", "3 march 2021", "2021-03-03"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def call(port: int, path: str, body: dict | bytes | None = None, timeout: float = 60) -> tuple[int, dict]:
    """(HTTP status, JSON body) of a GET (no body) or a POST."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def wait_ready(port: int, process: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read()
        try:
            if call(port, "/health/ready", timeout=5)[0] == 200:
                return
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.2)
    raise AssertionError("the server never became ready")


def start(runs: list[Path], *options: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    args = [sys.executable, "-m", "s2s", "serve", *map(str, runs), "--port", str(port), *options]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    wait_ready(port, process)
    return process, port


@pytest.fixture(scope="module")
def server(trained_run, trained_classifier, trained_tagger, tmp_path_factory):
    tagger = tmp_path_factory.mktemp("served") / "tagger"
    shutil.copytree(trained_tagger, tagger)
    process, port = start([trained_run, trained_classifier, tagger], "--max-texts", "4", "--max-chars", "50")
    yield port
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)


def test_translate_answers_as_the_translator_does(server, translator):
    status, answer = call(server, "/translate", {"texts": LINES})
    assert status == 200 and answer["model"] == "tiny"
    assert [results[0]["text"] for results in answer["results"]] == translator.best(LINES)


def test_translate_gives_an_nbest_list(server):
    status, answer = call(server, "/translate", {"texts": LINES[:1], "beam": 3, "nbest": 2})
    assert status == 200 and len(answer["results"][0]) == 2
    assert answer["results"][0][0]["score"] >= answer["results"][0][1]["score"]


def test_classify_and_tag_answer_at_their_endpoints(server, trained_classifier):
    status, answer = call(server, "/classify", {"texts": ["the film was very good"]})
    assert status == 200 and answer["results"][0]["label"] in answer["results"][0]["probabilities"]
    expected = load_run(trained_classifier, task=None).predictor.classify(["the film was very good"])[0]
    assert answer["results"][0]["label"] == expected.label
    status, answer = call(server, "/tag", {"texts": ["a cat eats ."], "pretokenized": True})
    assert status == 200 and [w["word"] for w in answer["results"][0]] == ["a", "cat", "eats", "."]


def test_models_lists_every_loaded_run_with_its_task_recipe_and_size(server):
    status, answer = call(server, "/models")
    assert status == 200
    assert {(m["name"], m["task"]) for m in answer["models"]} == {
        ("tiny", "translation"),
        ("run", "classification"),
        ("tagger", "tagging"),
    }
    assert all(m["parameters"] > 0 and m["recipe"] for m in answer["models"])


def test_the_openapi_description_lists_every_endpoint(server):
    status, description = call(server, "/openapi.json")
    assert status == 200
    assert {"/translate", "/classify", "/tag", "/models", "/health/live", "/health/ready"} <= set(description["paths"])


@pytest.mark.parametrize(
    ("path", "body", "status", "error"),
    [
        (
            "/translate",
            {"texts": LINES, "model": "nope"},
            404,
            "model: no translation model named 'nope' (loaded: tiny)",
        ),
        (
            "/classify",
            {"texts": ["x"], "model": "tiny"},
            404,
            "model: no classification model named 'tiny' (loaded: run)",
        ),
        ("/translate", {"texts": LINES * 2}, 413, "texts: 6 texts, more than the limit of 4 per request"),
        ("/translate", {"texts": ["x" * 51]}, 413, "texts[0]: 51 characters, more than the limit of 50"),
        ("/translate", {"texts": ["ok", "  "]}, 422, "texts[1]: empty"),
        ("/translate", {"sentences": LINES}, 422, "texts: Field required"),
        ("/translate", {"texts": "March 3"}, 422, "texts: Input should be a valid list"),
        ("/translate", {"texts": LINES, "beam": 0}, 422, "beam: Input should be greater than or equal to 1"),
        (
            "/translate",
            {"texts": LINES, "beam": 2, "nbest": 3},
            422,
            "body: Value error, nbest 3 is larger than beam 2",
        ),
        ("/translate", b"{not json", 422, "body: not valid JSON (JSON decode error)"),
    ],
)
def test_a_bad_request_is_an_http_error_with_a_one_line_json_message_naming_the_field(
    server, path, body, status, error
):
    assert call(server, path, body) == (status, {"error": error})
    assert call(server, "/health/ready")[0] == 200  # and the server stays up


def test_a_body_over_the_limit_is_refused_before_it_is_read(server):
    status, answer = call(server, "/translate", b'{"texts": ["' + b"x" * 1_000_001 + b'"]}')
    assert status == 413 and answer["error"].startswith("body: 1,000,0")


def test_sigterm_answers_the_requests_in_flight_and_exits_0(trained_run):
    process, port = start([trained_run], "--max-wait-ms", "1500")  # requests wait in the batch while SIGTERM comes
    answers = []
    clients = [
        threading.Thread(target=lambda: answers.append(call(port, "/translate", {"texts": LINES}))) for _ in range(4)
    ]
    for client in clients:
        client.start()
    time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    for client in clients:
        client.join(timeout=60)
    assert process.wait(timeout=60) == 0
    assert [status for status, _ in answers] == [200] * 4


def test_a_run_of_a_kind_not_served_yet_is_refused_before_the_server_starts(trained_language_model):
    done = subprocess.run(
        [sys.executable, "-m", "s2s", "serve", str(trained_language_model)], capture_output=True, text=True, env=ENV
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == (
        f"s2s: error: {trained_language_model}: a language_model run; s2s serve answers translation, "
        "classification, tagging runs so far\n"
    )


def test_the_server_is_live_at_once_and_ready_only_once_every_model_has_loaded_and_answered(trained_run):
    import uvicorn

    from s2s.serve.app import Limits, create_app

    loaded = threading.Event()

    def slow_load(path):
        loaded.wait(timeout=60)
        return load_run(path, task=None)

    port = free_port()
    app = create_app({trained_run: "translation"}, Limits(), load=slow_load)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert call(port, "/health/live") == (200, {"status": "live"})
        assert call(port, "/health/ready") == (503, {"error": "not ready: loading"})
        assert call(port, "/translate", {"texts": LINES}) == (
            503,
            {"error": "model: not ready yet (see /health/ready)"},
        )
        loaded.set()
        while call(port, "/health/ready")[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert call(port, "/health/ready") == (200, {"status": "ready", "models": ["tiny"]})
    finally:
        loaded.set()
        server.should_exit = True
        thread.join(timeout=30)


def test_the_load_test_measures_both_settings_and_stops_by_itself(trained_run):
    done = subprocess.run(
        [sys.executable, "tools/loadtest.py", str(trained_run), "--clients", "4", "--seconds", "1", "--json"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    for setting in ("batched", "unbatched"):
        row = result[setting]
        assert row["errors"] == 0 and row["answered"] > 0
        assert row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
    assert result["ratio"] > 0 and result["clients"] == 4


def test_the_load_test_refuses_unbounded_settings(trained_run):
    done = subprocess.run(
        [sys.executable, "tools/loadtest.py", str(trained_run), "--clients", "1000"],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 2 and "--clients: 1000 is not between 1 and 256" in done.stderr


def test_a_busy_port_is_one_line_before_anything_loads(trained_run):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "s2s", "serve", str(trained_run), "--port", str(port)],
            capture_output=True,
            text=True,
            env=ENV,
            timeout=120,
        )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == f"s2s: error: --port: cannot listen on 127.0.0.1:{port}: Address already in use\n"
