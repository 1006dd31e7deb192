"""`s2s serve` through a real HTTP client (urllib over the loopback): each endpoint, each limit and refusal, readiness
before and after loading, and SIGTERM with requests in flight. The page in a real browser: test_serve_page.py."""

from __future__ import annotations

import base64
import contextlib
import http.client
import io
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
import torch
from PIL import Image

from s2s.data.shapes import shapes_split
from s2s.models import cpu_has_bf16
from s2s.runs import load_run
from s2s.search import Sampling
from s2s.serve.limits import Limits
from tests.helpers import ENV

LINES = ["March 3, 2021", "3 march 2021", "2021-03-03"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def call(port: int, path: str, body: dict | bytes | None = None, timeout: float = 60) -> tuple[int, dict]:
    """(HTTP status, JSON body) of a GET (no body) or a POST."""
    status, text = call_raw(port, path, body, timeout)
    return status, json.loads(text)


def call_raw(port: int, path: str, body: dict | bytes | None = None, timeout: float = 60) -> tuple[int, str]:
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def server_sent_events(text: str) -> list[tuple[str, dict]]:
    """(event, data) of each event of a text/event-stream body (event "message" when it names none)."""
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((fields.get("event", "message"), json.loads(fields["data"])))
    return events


def png_base64(picture) -> str:
    encoded = io.BytesIO()
    picture.save(encoded, format="PNG")
    return base64.b64encode(encoded.getvalue()).decode()


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
def server(trained_run, trained_classifier, trained_tagger, shapes_run, trained_language_model, tmp_path_factory):
    """One server with a run of every task (folders renamed where two share the name ``run``) and small limits."""
    served = tmp_path_factory.mktemp("served")
    for run, name in ((trained_tagger, "tagger"), (shapes_run, "shapes"), (trained_language_model, "play")):
        shutil.copytree(run, served / name)
    runs = [trained_run, trained_classifier, served / "tagger", served / "shapes", served / "play"]
    limits = ["--max-texts", "4", "--max-chars", "50", "--max-images", "2", "--max-image-bytes", "20000"]
    process, port = start(runs, *limits, "--max-pixels", "10000", "--max-generate", "100")
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
    assert {(m["name"], m["task"], m["endpoint"]) for m in answer["models"]} == {
        ("tiny", "translation", "/translate"),
        ("run", "classification", "/classify"),
        ("tagger", "tagging", "/tag"),
        ("shapes", "captioning", "/caption"),
        ("play", "language_model", "/generate"),
    }
    assert all(m["parameters"] > 0 and m["recipe"] for m in answer["models"])
    assert [m["attention"] for m in answer["models"] if m["task"] == "translation"] == [True]


def test_the_openapi_description_lists_every_endpoint(server):
    status, description = call(server, "/openapi.json")
    assert status == 200
    endpoints = {"/translate", "/caption", "/classify", "/tag", "/generate"}
    assert endpoints | {"/models", "/health/live", "/health/ready"} <= set(description["paths"])


def test_the_web_page_is_one_self_contained_file(server):
    status, page = call_raw(server, "/")
    assert status == 200 and "<title>s2s</title>" in page
    assert "http://" not in page and "https://" not in page  # nothing fetched from elsewhere


def test_translate_gives_the_attention_of_the_best_translation_when_asked(server, translator):
    status, answer = call(server, "/translate", {"texts": LINES[:1], "attention": True, "nbest": 2, "beam": 2})
    best, second = answer["results"][0]
    expected = translator.translate(LINES[:1], beam_size=2, nbest=2, attention=True)[0][0]
    attention = best["attention"]
    assert status == 200 and "attention" not in second
    assert attention["source"] == expected.source_pieces and attention["target"] == [*expected.target_pieces, "</s>"]
    assert len(attention["weights"]) == len(attention["target"])
    assert all(len(row) == len(attention["source"]) for row in attention["weights"])


def test_caption_answers_an_uploaded_image_as_the_captioner_does(server, shapes_run):
    picture = shapes_split(1, 32, seed=5)[0][0]
    status, answer = call(server, "/caption", {"images": ["data:image/png;base64," + png_base64(picture)]})
    expected = load_run(shapes_run, task=None).predictor.caption([picture])[0][0].text
    assert status == 200 and answer["model"] == "shapes" and answer["results"][0][0]["text"] == expected


def test_generate_answers_as_the_generator_does_for_a_seed(server, trained_language_model):
    request = {"prompt": "ROMEO:", "max_length": 30, "seed": 3, "num": 2}
    status, answer = call(server, "/generate", request)
    generator = load_run(trained_language_model, task=None).predictor
    settings = generator.config.generate
    sampling = Sampling(settings.temperature, settings.top_k, settings.top_p, seed=3)
    assert status == 200 and answer["model"] == "play"
    assert [r["text"] for r in answer["results"]] == generator.generate("ROMEO:", 30, sampling, count=2)


def test_generate_streams_server_sent_events_that_add_up_to_the_whole_text(server):
    request = {"prompt": "ROMEO:", "max_length": 40, "seed": 5, "num": 2}
    whole = call(server, "/generate", request)[1]["results"]
    status, body = call_raw(server, "/generate", {**request, "stream": True})
    events = server_sent_events(body)
    pieces = [data for event, data in events if event == "message"]
    assert status == 200 and events[-1] == ("done", {"model": "play", "results": whole})
    for index, result in enumerate(whole):
        assert "".join(p["text"] for p in pieces if p["index"] == index) == result["text"]
    assert len(pieces) > 2  # in pieces, not in one event at the end


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
        ("/caption", {"images": ["not base64!"]}, 422, "images[0]: not base64 (send the image file's bytes in base64)"),
        ("/caption", {"images": [base64.b64encode(b"plain text").decode()]}, 422, "images[0]: not an image file"),
        ("/caption", {"images": ["QUJD"] * 3}, 413, "images: 3 images, more than the limit of 2 per request"),
        ("/caption", {"images": ["QUJD" * 7000]}, 413, "images[0]: more than the limit of 20,000 bytes per image"),
        (
            "/generate",
            {"prompt": "ROMEO\u00e9"},
            422,
            "prompt: characters the model never saw in training: 'é' (U+00E9)",
        ),
        ("/generate", {"max_length": 101}, 413, "max_length: 101 tokens, more than the limit of 100"),
        ("/generate", {"prompt": "x" * 51}, 413, "prompt: 51 characters, more than the limit of 50"),
        ("/generate", {"top_p": 0}, 422, "top_p: Input should be greater than 0"),
        ("/translate", {"texts": LINES, "temperature": 1}, 422, "temperature: Extra inputs are not permitted"),
        ("/summarize", {"texts": LINES}, 404, "POST /summarize: Not Found (see /openapi.json)"),
        ("/models", {}, 405, "POST /models: Method Not Allowed (see /openapi.json)"),
    ],
)
def test_a_bad_request_is_an_http_error_with_a_one_line_json_message_naming_the_field(
    server, path, body, status, error
):
    assert call(server, path, body) == (status, {"error": error})
    assert call(server, "/health/ready")[0] == 200  # and the server stays up


def test_an_image_over_the_pixel_limit_is_refused_before_it_is_decoded(server):
    big = png_base64(Image.new("RGB", (101, 100)))  # 10,100 pixels, over the limit of 10,000, in a few hundred bytes
    assert call(server, "/caption", {"images": [big]}) == (
        413,
        {"error": "images[0]: 101×100 pixels, more than the limit of 10,000"},
    )


def test_a_body_over_the_limit_is_refused_before_it_is_read(server):
    connection = http.client.HTTPConnection("127.0.0.1", server, timeout=60)
    connection.putrequest("POST", "/translate")
    connection.putheader("Content-Type", "application/json")
    connection.putheader("Content-Length", "1000001")
    connection.endheaders()  # and not a byte of the body: a server that waited for it would never answer
    response = connection.getresponse()
    assert response.status == 413 and json.loads(response.read())["error"].startswith("body: 1,000,001 bytes")
    connection.close()


def test_a_chunked_body_over_the_limit_is_refused_once_it_passes_the_limit(server):
    connection = http.client.HTTPConnection("127.0.0.1", server, timeout=60)
    connection.putrequest("POST", "/translate")
    connection.putheader("Content-Type", "application/json")
    connection.putheader("Transfer-Encoding", "chunked")  # no Content-Length to refuse it by
    connection.endheaders()
    for _ in range(15):  # 150,000 bytes, past the limit (about 120,000 with this server's limits), and no end
        connection.send(b"%x\r\n%s\r\n" % (10_000, b"x" * 10_000))
    response = connection.getresponse()
    assert response.status == 413 and json.loads(response.read())["error"].startswith("body: at least ")
    connection.close()


def test_models_run_in_the_precision_asked_for(trained_run):
    process, port = start([trained_run], "--precision", "bf16")
    try:
        status, answer = call(port, "/translate", {"texts": LINES})
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    translator = load_run(trained_run, precision="bf16").predictor
    assert translator.autocast_dtype == (torch.bfloat16 if cpu_has_bf16() else None)  # else fp32, said at start
    assert status == 200 and [found[0]["text"] for found in answer["results"]] == translator.best(LINES)


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


@contextlib.contextmanager
def in_process(runs: dict, limits=None, load=None):
    """A server in a thread of this process (so that a test can change how a model loads or answers): its port."""
    import uvicorn

    from s2s.serve.app import create_app

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(runs, limits or Limits(), load=load), host="127.0.0.1", port=port, log_level="critical"
        )
    )
    thread = threading.Thread(target=server.run)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def wait_until_ready(port: int) -> None:
    deadline = time.monotonic() + 60
    while call(port, "/health/ready")[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.05)


def test_the_server_is_live_at_once_and_ready_only_once_every_model_has_loaded_and_answered(trained_run):
    loaded = threading.Event()

    def slow_load(path):
        loaded.wait(timeout=60)
        return load_run(path, task=None)

    try:
        with in_process({trained_run: "translation"}, load=slow_load) as port:
            assert call(port, "/health/live") == (200, {"status": "live"})
            assert call(port, "/health/ready") == (503, {"error": "not ready: loading"})
            assert call(port, "/translate", {"texts": LINES}) == (
                503,
                {"error": "model: not ready yet (see /health/ready)"},
            )
            loaded.set()
            wait_until_ready(port)
            assert call(port, "/health/ready") == (200, {"status": "ready", "models": ["tiny"]})
    finally:
        loaded.set()


def test_a_request_the_model_fails_on_is_a_500_and_the_others_of_its_batch_are_answered(trained_run):
    def breakable(path):
        run = load_run(path, task=None)
        translate = run.predictor.translate

        def failing_on_boom(texts, **options):
            if "boom" in texts:
                raise RuntimeError("cannot translate boom")
            return translate(texts, **options)

        run.predictor.translate = failing_on_boom
        return run

    limits = Limits(max_wait=0.5)  # the three requests share a batch
    with in_process({trained_run: "translation"}, limits, load=breakable) as port:
        wait_until_ready(port)
        answers = {}
        requests = {"bad": ["boom"], "good": LINES[:1], "also good": LINES[1:2]}
        clients = [
            threading.Thread(
                target=lambda n=name, t=texts: answers.__setitem__(n, call(port, "/translate", {"texts": t}))
            )
            for name, texts in requests.items()
        ]
        for client in clients:
            client.start()
        for client in clients:
            client.join(timeout=60)
        assert answers["bad"] == (500, {"error": "model: failed (RuntimeError: cannot translate boom)"})
        assert answers["good"][0] == answers["also good"][0] == 200
        assert call(port, "/health/ready")[0] == 200  # still up, still loaded


def test_a_request_not_answered_within_the_timeout_is_a_504(trained_run, trained_language_model):
    runs = {trained_run: "translation", trained_language_model: "language_model"}
    with in_process(runs, Limits(timeout=0.001)) as port:
        wait_until_ready(port)
        late = "request: not answered within the timeout of 0.001 s"
        assert call(port, "/translate", {"texts": LINES}) == (504, {"error": late})
        status, body = call_raw(port, "/generate", {"prompt": "ROMEO:", "stream": True})
        assert status == 200 and server_sent_events(body)[-1] == ("error", {"error": late})  # a stream ends so
        assert call(port, "/translate", {"texts": LINES})[0] == 504 and call(port, "/health/ready")[0] == 200


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
