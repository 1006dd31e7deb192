"""The HTTP application of ``s2s serve``: FastAPI on Starlette, served by uvicorn.

Every loaded run answers at the endpoint of its kind (``/translate``, ``/classify``, ``/tag``), through a batcher of
its own (``s2s.serve.batcher``), so that concurrent requests share batched searches. ``GET /models`` lists the loaded
runs; ``GET /health/live`` answers as soon as the server runs, ``GET /health/ready`` only once every run has loaded
and answered a warm-up request (503 before). Every refusal is an HTTP error status with one JSON line,
``{"error": "FIELD: what is wrong"}``: 404 for an unknown model, 413 for a request over a limit, 422 for a
request that does not validate, 503 while loading, 504 when answering takes longer than the request timeout.
"""

from __future__ import annotations

import asyncio
import functools
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from s2s.runs import Run, load_run
from s2s.serve.batcher import Batcher
from s2s.serve.tasks import ENDPOINTS, Endpoint, TextsRequest


@dataclass(frozen=True)
class Limits:
    max_batch: int = 32  # items (texts) per batch
    max_wait: float = 0.01  # seconds a batch stays open for more requests
    max_texts: int = 64  # texts per request
    max_chars: int = 2000  # characters per text
    max_body: int = 1_000_000  # bytes per request body
    timeout: float = 30.0  # seconds to answer a request


class Refused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class Served:
    """A loaded run, named by its folder, and the batcher of its requests (made with its first request)."""

    run: Run
    batcher: Batcher | None = None

    @property
    def name(self) -> str:
        return self.run.path.name

    @property
    def task(self) -> str:
        return self.run.recipe.task


def create_app(runs: dict[Path, str], limits: Limits, load=None) -> FastAPI:
    """An app that loads ``runs`` (run directory → its task) once, in the background, and answers at the endpoints
    of their tasks (``load``: a run directory → a ``s2s.runs.Run``)."""
    load = load or (lambda path: load_run(path, task=None))
    models: dict[str, Served] = {}
    status = {"ready": False, "failed": None}

    async def load_all() -> None:
        try:
            for path in runs:
                run = await asyncio.to_thread(load, path)
                models[path.name] = Served(run)
            for served in models.values():
                await answer(served, ENDPOINTS[served.task].request(texts=["warm up"]))
            status["ready"] = True
        except Exception as error:  # noqa: BLE001 — the server stays up and says why it is not ready
            status["failed"] = f"{type(error).__name__}: {error}"

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loading = asyncio.create_task(load_all())
        yield
        loading.cancel()
        for served in models.values():
            if served.batcher is not None:
                await served.batcher.stop()

    app = FastAPI(title="s2s", summary="Trained s2s runs over HTTP", lifespan=lifespan)

    async def answer(served: Served, request: TextsRequest) -> list:
        endpoint = ENDPOINTS[served.task]
        if served.batcher is None:
            run = functools.partial(answer_items, endpoint, served.run.predictor)
            served.batcher = Batcher(run, limits.max_batch, limits.max_wait)
            served.batcher.start()
        options = endpoint.options(request)
        return await served.batcher.submit([(text, options) for text in request.texts])

    install_errors(app, limits)
    add_status_routes(app, models, status)
    for task in dict.fromkeys(runs.values()):
        add_route(app, task, ENDPOINTS[task], models, status, limits, answer)
    return app


def install_errors(app: FastAPI, limits: Limits) -> None:
    """Every refusal as an HTTP status and one JSON line naming the field; bodies over the limit refused unread."""

    @app.exception_handler(Refused)
    async def refused(request: Request, error: Refused) -> JSONResponse:
        return JSONResponse({"error": str(error)}, status_code=error.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0]
        if first["type"] == "json_invalid":  # its location is a character position, not a field
            return JSONResponse({"error": f"body: not valid JSON ({first['msg']})"}, status_code=422)
        where = ".".join(str(part) for part in first["loc"] if part != "body") or "body"
        return JSONResponse({"error": f"{where}: {first['msg']}"}, status_code=422)

    @app.middleware("http")
    async def body_limit(request: Request, call_next):
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limits.max_body:
            message = f"body: {int(length):,} bytes, more than the limit of {limits.max_body:,}"
            return JSONResponse({"error": message}, status_code=413)
        return await call_next(request)


def add_status_routes(app: FastAPI, models: dict[str, Served], status: dict) -> None:
    """Liveness, readiness and the list of loaded models."""

    @app.get("/health/live")
    async def live() -> dict:
        return {"status": "live"}

    @app.get("/health/ready")
    async def ready() -> JSONResponse:
        if status["ready"]:
            return JSONResponse({"status": "ready", "models": list(models)})
        why = f"failed to load: {status['failed']}" if status["failed"] else "loading"
        return JSONResponse({"error": f"not ready: {why}"}, status_code=503)

    @app.get("/models")
    async def listed() -> dict:
        return {"models": [describe(served) for served in models.values()]}


def add_route(app: FastAPI, task: str, endpoint: Endpoint, models, status, limits: Limits, answer) -> None:
    async def route(request) -> dict:
        if not status["ready"]:
            raise Refused(503, "model: not ready yet (see /health/ready)")
        served = pick(models, task, request.model)
        check(request.texts, limits)
        try:
            results = await asyncio.wait_for(answer(served, request), limits.timeout)
        except asyncio.TimeoutError:  # noqa: UP041 — the builtin only from Python 3.11
            raise Refused(504, f"texts: not answered within the timeout of {limits.timeout:g} s") from None
        return {"model": served.name, "results": results}

    route.__annotations__ = {"request": endpoint.request, "return": dict}  # the schema FastAPI validates against
    app.add_api_route(endpoint.path, route, methods=["POST"], name=task)


def pick(models: dict[str, Served], task: str, name: str | None) -> Served:
    """The model a request names, or the first loaded model of the endpoint's task."""
    of_task = [served for served in models.values() if served.task == task]
    if name is None:
        if not of_task:
            raise Refused(404, f"model: no {task} model is loaded")
        return of_task[0]
    served = models.get(name)
    if served is None or served.task != task:
        names = ", ".join(s.name for s in of_task) or "none"
        raise Refused(404, f"model: no {task} model named {name!r} (loaded: {names})")
    return served


def check(texts: list[str], limits: Limits) -> None:
    if len(texts) > limits.max_texts:
        raise Refused(413, f"texts: {len(texts):,} texts, more than the limit of {limits.max_texts:,} per request")
    for number, text in enumerate(texts):
        if len(text) > limits.max_chars:
            raise Refused(
                413, f"texts[{number}]: {len(text):,} characters, more than the limit of {limits.max_chars:,}"
            )
        if not text.strip():
            raise Refused(422, f"texts[{number}]: empty")


def answer_items(endpoint: Endpoint, predictor, items: list[tuple[str, tuple]]) -> list:
    """The batch function of one model: (text, options) items from any number of requests → one result each; the
    texts that share options (beam, n-best, …) are answered together, in one call."""
    results: list = [None] * len(items)
    by_options: dict[tuple, list[int]] = {}
    for position, (_, options) in enumerate(items):
        by_options.setdefault(options, []).append(position)
    for options, positions in by_options.items():
        answers = endpoint.answer(predictor, [items[i][0] for i in positions], options)
        for position, found in zip(positions, answers, strict=True):
            results[position] = found
    return results


def describe(served: Served) -> dict:
    from s2s.models import count_parameters

    run = served.run
    return {
        "name": served.name,
        "task": served.task,
        "recipe": run.recipe.name,
        "parameters": count_parameters(run.predictor.model),
    }
