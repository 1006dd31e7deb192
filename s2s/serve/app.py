"""The HTTP application of ``s2s serve``: FastAPI on Starlette, served by uvicorn.

Every loaded run answers at the endpoint of its kind (``/translate``, ``/caption``, ``/classify``, ``/tag``,
``/generate``), through a batcher of its own (``s2s.serve.batcher``), so that concurrent requests share batched
searches. ``GET /`` is a web page over the same API and ``GET /models`` lists the loaded runs; ``GET /health/live``
answers as soon as the server runs, ``GET /health/ready`` only once every run has loaded and answered a warm-up
request (503 before). Every refusal is an HTTP error status with one JSON line, ``{"error": "FIELD: what is
wrong"}``: 404 for an unknown model, 413 for a request over a limit, 422 for a request that does not validate, 500
when the model fails on it, 503 while loading, 504 when answering takes longer than the request timeout.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from s2s.runs import Run, load_run
from s2s.serve.batcher import Batcher
from s2s.serve.limits import Limits, Refused
from s2s.serve.tasks import ENDPOINTS, Endpoint, GenerateRequest


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


def create_app(runs: dict[Path, str], limits: Limits, load=None, precision: str = "fp32") -> FastAPI:
    """An app that loads ``runs`` (run directory → its task) once, in the background, and answers at the endpoints
    of their tasks (``load``: a run directory → a ``s2s.runs.Run``; by default in ``precision``)."""
    load = load or (lambda path: load_run(path, task=None, precision=precision))
    models: dict[str, Served] = {}
    status = {"ready": False, "failed": None}

    async def load_all() -> None:
        try:
            for path in runs:
                run = await asyncio.to_thread(load, path)
                models[path.name] = Served(run)
            for served in models.values():
                endpoint = ENDPOINTS[served.task]
                warm_up = endpoint.request.model_validate(endpoint.example())
                inputs = await asyncio.to_thread(endpoint.inputs, warm_up, served.run.predictor, limits)
                await answer(served, inputs, endpoint.options(warm_up))
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

    async def answer(served: Served, inputs: list, options: tuple) -> list:
        if served.batcher is None:
            run = functools.partial(answer_items, ENDPOINTS[served.task], served.run.predictor)
            served.batcher = Batcher(run, limits.max_batch, limits.max_wait)
            served.batcher.start()
        return await served.batcher.submit([(one, options) for one in inputs])

    def chosen(task: str, name: str | None) -> Served:
        if not status["ready"]:
            raise Refused(503, "model: not ready yet (see /health/ready)")
        return pick(models, task, name)

    install_errors(app, limits)
    add_status_routes(app, models, status)
    for task in dict.fromkeys(runs.values()):
        endpoint = ENDPOINTS[task]
        adding = add_generate_route if endpoint.request is GenerateRequest else add_route
        adding(app, task, endpoint, chosen, limits, answer)
    return app


def install_errors(app: FastAPI, limits: Limits) -> None:
    """Every refusal as an HTTP status and one JSON line naming the field; a body over the limit is refused
    before it is read, by its declared length, or as soon as a chunked body passes the limit."""

    @app.exception_handler(Refused)
    async def refused(request: Request, error: Refused) -> JSONResponse:
        return JSONResponse({"error": str(error)}, status_code=error.status_code)

    @app.exception_handler(StarletteHTTPException)
    async def routing(request: Request, error: StarletteHTTPException) -> JSONResponse:  # 404, 405 from the router
        where = f"{request.method} {request.url.path}"
        return JSONResponse({"error": f"{where}: {error.detail} (see /openapi.json)"}, status_code=error.status_code)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0]
        if first["type"] == "json_invalid":  # its location is a character position, not a field
            return JSONResponse({"error": f"body: not valid JSON ({first['msg']})"}, status_code=422)
        where = ".".join(str(part) for part in first["loc"] if part != "body") or "body"
        return JSONResponse({"error": f"{where}: {first['msg']}"}, status_code=422)

    @app.exception_handler(Exception)
    async def failed(request: Request, error: Exception) -> JSONResponse:  # the server stays up; the log has more
        return JSONResponse({"error": f"model: failed ({type(error).__name__}: {error})"}, status_code=500)

    app.add_middleware(BodyLimit, limit=limits.max_body)


class BodyLimit:
    """Refuses request bodies over ``limit`` bytes with 413: at once when Content-Length says so, otherwise while
    the body is read (a chunked upload has no length), without reading more of it."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.limit:
            refusal = JSONResponse({"error": self.message(int(length))}, status_code=413)
            return await refusal(scope, receive, send)
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise Refused(413, self.message(received, "at least "))
            return message

        await self.app(scope, limited_receive, send)

    def message(self, size: int, bound: str = "") -> str:
        return f"body: {bound}{size:,} bytes, more than the limit of {self.limit:,}"


def add_status_routes(app: FastAPI, models: dict[str, Served], status: dict) -> None:
    """The web page, liveness, readiness and the list of loaded models."""

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> str:
        return resources.files("s2s.serve").joinpath("page.html").read_text(encoding="utf-8")

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


def add_route(app: FastAPI, task: str, endpoint: Endpoint, chosen, limits: Limits, answer) -> None:
    async def route(request) -> dict:
        served = chosen(task, request.model)
        inputs = await asyncio.to_thread(endpoint.inputs, request, served.run.predictor, limits)
        results = await within(answer(served, inputs, endpoint.options(request)), limits.timeout)
        return {"model": served.name, "results": results}

    route.__annotations__ = {"request": endpoint.request, "return": dict}  # the schema FastAPI validates against
    app.add_api_route(endpoint.path, route, methods=["POST"], name=task)


def add_generate_route(app: FastAPI, task: str, endpoint: Endpoint, chosen, limits: Limits, answer) -> None:
    """Generation answers as the others do, or, with ``stream``, as server-sent events: ``data: {"index": i,
    "text": piece}`` as each piece of text i comes, then ``event: done`` with the whole answer (or ``event:
    error`` with the error)."""

    async def generate(request: GenerateRequest):
        served = chosen(task, request.model)
        prompts = await asyncio.to_thread(endpoint.inputs, request, served.run.predictor, limits)
        options = endpoint.options(request)
        if not request.stream:
            texts = await within(answer(served, prompts, options), limits.timeout)
            return {"model": served.name, "results": [{"text": text} for text in texts]}
        loop, pieces = asyncio.get_running_loop(), asyncio.Queue()

        def out(index: int, text: str) -> None:  # in the batcher's worker thread
            loop.call_soon_threadsafe(pieces.put_nowait, {"index": index, "text": text})

        prompts = [dataclasses.replace(p, out=functools.partial(out, i)) for i, p in enumerate(prompts)]
        answering = asyncio.ensure_future(within(answer(served, prompts, options), limits.timeout))
        answering.add_done_callback(functools.partial(ended, pieces))
        return StreamingResponse(events(served.name, pieces, answering), media_type="text/event-stream")

    app.add_api_route(endpoint.path, generate, methods=["POST"], name=task)


def ended(pieces: asyncio.Queue, answering: asyncio.Future) -> None:
    """The end of a streamed generation's pieces. Its outcome is looked at here, so that a stream whose client went
    away (nobody left to read it) leaves no "exception never retrieved" in the log."""
    if not answering.cancelled():
        answering.exception()
    pieces.put_nowait(None)


async def events(name: str, pieces: asyncio.Queue, answering: asyncio.Future):
    """Server-sent events of a streamed generation (see add_generate_route)."""
    while (piece := await pieces.get()) is not None:
        yield f"data: {json.dumps(piece, ensure_ascii=False)}\n\n"
    error = asyncio.CancelledError("cancelled") if answering.cancelled() else answering.exception()
    if error is not None:
        message = str(error) if isinstance(error, Refused) else f"model: failed ({type(error).__name__}: {error})"
        yield f"event: error\ndata: {json.dumps({'error': message}, ensure_ascii=False)}\n\n"
        return
    results = [{"text": text} for text in answering.result()]
    yield f"event: done\ndata: {json.dumps({'model': name, 'results': results}, ensure_ascii=False)}\n\n"


async def within(answering, timeout: float) -> list:
    try:
        return await asyncio.wait_for(answering, timeout)
    except asyncio.TimeoutError:  # noqa: UP041 — the builtin only from Python 3.11
        raise Refused(504, f"request: not answered within the timeout of {timeout:g} s") from None


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
    described = {
        "name": served.name,
        "task": served.task,
        "recipe": run.recipe.name,
        "parameters": count_parameters(run.predictor.model),
        "endpoint": ENDPOINTS[served.task].path,
    }
    if served.task == "translation":
        described["attention"] = run.predictor.has_attention
    return described
