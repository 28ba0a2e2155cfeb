"""The HTTP JSON service over a `bertvision.inference.serving.Predictor` (FastAPI + uvicorn).

Endpoints:

- ``POST /v1/predict``: ``{"task": "sst2", "inputs": [...]}`` (one task),
  ``{"tasks": ["sst2", "cola"], "inputs": [...]}`` (the same inputs for
  several tasks), ``{"inputs": [...]}`` (for every served task) or
  ``{"inputs": {"sst2": [...], "mrpc": [...]}}`` (each task its own inputs).
  An input is a string (one text) or an object with the task's fields
  (``text``; ``text`` + ``text_pair``; ``question`` + ``context``) and an
  optional ``id``. Answer: ``{"results": {task: [result, ...]}, "batch":
  {"id", "requests", "rows", "forward_passes"}}``;
- ``GET /v1/models``: tasks, runs, backbones, dev metrics;
- ``GET /v1/stats``: requests, micro-batches, forward passes per backbone;
- ``GET /healthz``.

Concurrent requests are **micro-batched**: a background asyncio task takes
every request queued (up to ``max_batch_size`` model inputs; waiting at most
``max_wait_ms`` after the first for others to join) and runs them through
`Predictor.forward` together in a worker thread, one forward pass per backbone
per batch; while a batch computes the next one fills. A request for a
long-document model (windows) whose texts make more windows than
``max_batch_size`` goes in parts of whole documents (`submit_in_parts`).
Bad input (a body that
is not UTF-8, malformed JSON, an empty or non-string text, an unknown task, a
missing pair member, too many inputs or characters, a body over ``max_body_bytes``) gets a 4xx
answer ``{"error": message}``; the server holds no state but the runs it
read, and shuts down gracefully on SIGTERM (requests in flight are answered).

Example:
    >>> serve(ServeConfig(runs=["runs/sst2-pooler", "runs/mrpc-cnn"], port=8080))  # doctest: +SKIP

(not run here: it serves until stopped; tests/test_server.py starts it.)
"""

from __future__ import annotations

import asyncio
import collections
import errno
import itertools
import json
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, BeforeValidator, ConfigDict, StrictStr, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from bertvision.errors import ServeError
from bertvision.inference.config import LOG_LEVELS, ServeConfig
from bertvision.inference.inputs import ALL_INPUT_FIELDS
from bertvision.inference.loading import Job
from bertvision.inference.serving import Predictor

__all__ = ["LOG_LEVELS", "MicroBatcher", "PredictRequest", "ServeConfig", "bind", "create_app", "parse_request", "serve"]

# ------------------------------------------------------------------ request


def _string_is_text(value: Any) -> Any:
    return {"text": value} if isinstance(value, str) else value


class InputItem(BaseModel):
    """One input: the task's text fields and an optional id."""

    model_config = ConfigDict(extra="forbid")
    id: StrictStr | None = None
    text: StrictStr | None = None
    text_pair: StrictStr | None = None
    question: StrictStr | None = None
    context: StrictStr | None = None


Item = Annotated[InputItem, BeforeValidator(_string_is_text)]


class PredictRequest(BaseModel):
    """The body of ``POST /v1/predict`` (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")
    task: StrictStr | None = None
    tasks: list[StrictStr] | None = None
    inputs: list[Item] | dict[StrictStr, list[Item]]


def _validation_message(err: RequestValidationError) -> str:
    """Pydantic's errors as one line: ``inputs[0].text: Input should be a
    valid string``; of the two shapes ``inputs`` may take, only the errors of
    the one the body used."""
    if isinstance(err.body, (bytes, bytearray)):
        return "the body must be a JSON object, sent with Content-Type: application/json"
    body = err.body if isinstance(err.body, dict) else {}
    shape = "dict[" if isinstance(body.get("inputs"), dict) else "list["
    parts = []
    for e in err.errors():
        loc = [x for x in e.get("loc", ()) if x != "body"]
        tags = [x for x in loc if isinstance(x, str) and (x.startswith("list[") or x.startswith("dict["))]
        if tags and not tags[0].startswith(shape):
            continue
        if e.get("type") == "json_invalid":
            parts.append(f"the body is not valid JSON ({e.get('ctx', {}).get('error', 'decode error')})")
            continue
        where = ""
        for x in loc:
            if x in tags or (isinstance(x, str) and x.startswith("function-")):
                continue
            where += f"[{x}]" if isinstance(x, int) else (f".{x}" if where else str(x))
        msg = e.get("msg")
        if e.get("type") in ("model_type", "model_attributes_type") and loc and isinstance(loc[-1], int):
            msg = f"expected a string (the text) or an object with the task's fields ({', '.join(ALL_INPUT_FIELDS)})"
        parts.append(f"{where or 'body'}: {msg}")
    return "; ".join(dict.fromkeys(parts)) or "invalid request body"


def parse_request(body: bytes, content_type: str | None) -> PredictRequest:
    """The `PredictRequest` of a raw ``POST /v1/predict`` body, or
    `HTTPException` with a one-line message: 415-like misuse of the content
    type, a body that is not UTF-8 text or not JSON, or JSON that is not a
    request (each field named, see `_validation_message`) all get 4xx."""
    media = (content_type or "").split(";")[0].strip().lower()
    if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
        raise HTTPException(422, "the body must be a JSON object, sent with Content-Type: application/json")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise HTTPException(400, f"the body is not UTF-8 text (byte {err.start}: {err.reason}); send JSON encoded "
                                 "as UTF-8") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise HTTPException(422, f"the body is not valid JSON ({err.msg} at line {err.lineno} column "
                                 f"{err.colno})") from None
    except RecursionError:
        raise HTTPException(422, "the body is not valid JSON (nested too deeply)") from None
    try:
        return PredictRequest.model_validate(data)
    except ValidationError as err:
        raise RequestValidationError(err.errors(), body=data) from None


def plan_request(predictor: Predictor, request: PredictRequest, max_inputs: int) -> list[tuple[str, list[dict]]]:
    """``[(task name, [input dict, ...]), ...]`` of a request; `HTTPException`
    (404 unknown task, 422 otherwise) for what cannot be served."""
    if isinstance(request.inputs, dict):
        if request.task is not None or request.tasks is not None:
            raise HTTPException(422, "give either the tasks as the keys of inputs, or task/tasks with a list of "
                                     "inputs, not both")
        plan = [(name, list(items)) for name, items in request.inputs.items()]
    else:
        if request.task is not None and request.tasks is not None:
            raise HTTPException(422, "give task or tasks, not both")
        names = [request.task] if request.task is not None else (
            list(request.tasks) if request.tasks is not None else predictor.names)
        if not names:
            raise HTTPException(422, "tasks is empty")
        if len(set(names)) != len(names):
            raise HTTPException(422, "tasks lists a task twice")
        plan = [(name, list(request.inputs)) for name in names]
    unknown = [name for name, _ in plan if name not in predictor.models]
    if unknown:
        raise HTTPException(404, f"unknown task {unknown[0]!r}; served tasks: {', '.join(predictor.names)}")
    for name, items in plan:
        if not items:
            raise HTTPException(422, f"no inputs for task {name}")
    total = sum(len(items) for _, items in plan)
    if total > max_inputs:
        raise HTTPException(422, f"{total} predictions asked (inputs x tasks), more than the limit of {max_inputs} "
                                 "per request; split the request")
    return [(name, [item.model_dump(exclude_none=True) for item in items]) for name, items in plan]


# ----------------------------------------------------------------- batching


@dataclass
class _Pending:
    jobs: list
    future: asyncio.Future
    rows: int


class MicroBatcher:
    """Collects concurrent requests into batches for `Predictor.forward`
    (see the module docstring). `submit` is awaited by the request handlers;
    the batching loop runs as a background task between `start` and `stop`."""

    def __init__(self, predictor: Predictor, max_batch_size: int = 64, max_wait_ms: float = 5.0):
        self.predictor = predictor
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self._queue: collections.deque[_Pending] = collections.deque()
        self._queued_rows = 0
        self._event: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._closing = False
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="bertvision-forward")
        self._ids = itertools.count(1)
        self.requests = 0
        self.batches = 0
        self.rows = 0
        self.in_flight = 0
        self.largest_batch = 0
        self.batch_sizes: collections.Counter = collections.Counter()  # requests per batch -> batches

    async def start(self) -> None:
        self._event = asyncio.Event()
        self._task = asyncio.create_task(self._loop(), name="bertvision-batcher")

    async def stop(self) -> None:
        """Finish every queued request, then end the loop and the worker thread."""
        self._closing = True
        if self._event is not None:
            self._event.set()
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=True)

    async def submit(self, jobs: list[Job]) -> tuple[list, dict]:
        """Results of `jobs` (one list per job) and the batch they ran in."""
        if self._closing or self._event is None:
            raise HTTPException(503, "the server is shutting down")
        future = asyncio.get_running_loop().create_future()
        item = _Pending(jobs, future, sum(j.rows for j in jobs))
        self.in_flight += 1
        try:
            self._queue.append(item)
            self._queued_rows += item.rows
            self._event.set()
            return await future
        finally:
            self.in_flight -= 1

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._queue:
                if self._closing:
                    return
                self._event.clear()
                await self._event.wait()
            deadline = loop.time() + self.max_wait
            while self._queued_rows < self.max_batch_size and not self._closing:
                left = deadline - loop.time()
                if left <= 0:
                    break
                self._event.clear()
                try:
                    await asyncio.wait_for(self._event.wait(), left)
                except asyncio.TimeoutError:
                    break
            batch, rows = [], 0
            while self._queue and (not batch or rows + self._queue[0].rows <= self.max_batch_size):
                item = self._queue.popleft()
                self._queued_rows -= item.rows
                batch.append(item)
                rows += item.rows
            await self._run(batch, rows)

    async def _run(self, batch: list[_Pending], rows: int) -> None:
        jobs = [job for item in batch for job in item.jobs]
        info = {"id": next(self._ids), "requests": len(batch), "rows": rows,
                "forward_passes": len({job.model.group for job in jobs})}
        try:
            results = await asyncio.get_running_loop().run_in_executor(self._executor, self.predictor.run, jobs)
        except Exception as err:  # a bug, not bad input (inputs were checked when encoded): answer 500, go on
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(err)
            return
        self.batches += 1
        self.requests += len(batch)
        self.rows += rows
        self.largest_batch = max(self.largest_batch, len(batch))
        self.batch_sizes[len(batch)] += 1
        start = 0
        for item in batch:
            if not item.future.done():
                item.future.set_result((results[start:start + len(item.jobs)], info))
            start += len(item.jobs)

    def stats(self) -> dict:
        return {"requests": self.requests, "batches": self.batches, "rows": self.rows, "in_flight": self.in_flight,
                "largest_batch_requests": self.largest_batch,
                "batch_requests_histogram": {str(k): v for k, v in sorted(self.batch_sizes.items())},
                "max_batch_size": self.max_batch_size, "max_wait_ms": self.max_wait * 1000.0}


async def submit_in_parts(batcher: MicroBatcher, jobs: list[Job]) -> tuple[list, dict]:
    """`MicroBatcher.submit` a request's `jobs`; a long-document model's job
    of more windows than ``max_batch_size`` is cut into parts of whole
    documents (`Job.split_windows`) submitted one batch at a time, so that
    a request of many long texts never forwards more rows at once than a
    batch holds (a document longer than that alone). Results as `submit`'s,
    one list per job; the batch info of the last part."""
    limit = batcher.max_batch_size
    parts = [(i, part) for i, job in enumerate(jobs) for part in job.split_windows(limit)]
    if len(parts) == len(jobs):
        return await batcher.submit(jobs)
    results: list[list] = [[] for _ in jobs]
    chunk: list = []
    rows = 0  # rows of `chunk`
    info: dict = {}
    for k, (i, part) in enumerate(parts):
        chunk.append((i, part))
        rows += part.rows
        if k + 1 == len(parts) or rows + parts[k + 1][1].rows > limit:
            answers, info = await batcher.submit([p for _, p in chunk])
            for (j, _), answer in zip(chunk, answers):
                results[j].extend(answer)
            chunk, rows = [], 0
    return results, info


# ---------------------------------------------------------------------- app


def create_app(predictor: Predictor, config: ServeConfig):
    """The ASGI application (FastAPI) serving `predictor` with `config`'s limits."""
    batcher = MicroBatcher(predictor, config.max_batch_size, config.max_wait_ms)
    started = time.time()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        print(f"bertvision serve: {len(predictor.names)} task(s) ({', '.join(predictor.names)}) on "
              f"http://{config.host}:{config.port}", file=sys.stderr, flush=True)
        yield
        await batcher.stop()
        print(f"bertvision serve: shut down cleanly after {batcher.requests} request(s) in {batcher.batches} "
              "batch(es)", file=sys.stderr, flush=True)

    app = FastAPI(title="BERTVision", lifespan=lifespan, max_body_size=config.max_body_bytes)
    app.state.batcher = batcher
    app.state.predictor = predictor

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, err: RequestValidationError):
        return JSONResponse({"error": _validation_message(err)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, err: StarletteHTTPException):
        message = _TOO_LARGE.format(config.max_body_bytes) if err.status_code == 413 else str(err.detail)
        return JSONResponse({"error": message}, status_code=err.status_code, headers=err.headers)

    @app.exception_handler(ServeError)
    async def _serve_error(request, err: ServeError):
        return JSONResponse({"error": str(err)}, status_code=422)

    @app.exception_handler(Exception)
    async def _bug(request, err: Exception):
        return JSONResponse({"error": f"internal error: {type(err).__name__}: {err}"}, status_code=500)

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok", "tasks": predictor.names, "uptime_s": round(time.time() - started, 3)}

    @app.get("/v1/models")
    async def models():
        return predictor.info()

    @app.get("/v1/stats")
    async def stats():
        return {**batcher.stats(), **predictor.stats()}

    @app.post("/v1/predict")
    async def predict(http: Request):
        request = parse_request(await http.body(), http.headers.get("content-type"))
        plan = plan_request(predictor, request, config.max_inputs)

        def encode():  # a text asked of several tasks is tokenized once per distinct featurizer
            where = "inputs.{}" if isinstance(request.inputs, dict) else "inputs"
            return predictor.encode_all([(name, predictor.examples(name, items, config.max_chars,
                                                                   where.format(name))) for name, items in plan])

        jobs = await run_in_threadpool(encode)
        results, info = await submit_in_parts(batcher, jobs)
        return {"results": {name: res for (name, _), res in zip(plan, results)}, "batch": info}

    return _ContentLengthLimit(app, config.max_body_bytes)


_TOO_LARGE = "the request body is larger than the limit of {} bytes"


class _ContentLengthLimit:
    """Answer a request whose Content-Length is over the limit at once, in
    JSON like every other error (FastAPI's ``max_body_size`` also stops a
    chunked body that grows past it)."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes
        self.state = app.state

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            length = dict(scope.get("headers") or []).get(b"content-length")
            if length is not None and length.isdigit() and int(length) > self.max_bytes:
                response = JSONResponse({"error": _TOO_LARGE.format(self.max_bytes)}, status_code=413)
                return await response(scope, receive, send)
        return await self.app(scope, receive, send)


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` for the server, or `ServeError` in one
    line (a port in use, an unknown host). Bound first, before the runs are
    loaded, so a busy port is said at once and nothing says it serves."""
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as err:
        raise ServeError(f"--host {host}: {err.strerror}") from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as err:
        sock.close()
        if err.errno == errno.EADDRINUSE:
            raise ServeError(f"--port {port}: {host}:{port} is already in use (another server?); choose another "
                             "--port or stop the other server") from None
        raise ServeError(f"cannot listen on {host}:{port} ({err.strerror})") from None
    return sock


def serve(config: ServeConfig, predictor: Predictor | None = None) -> None:
    """Bind the port, load the runs, trace their forward passes and serve
    until SIGTERM/SIGINT."""
    sock = bind(config.host, config.port)
    try:
        predictor = predictor or Predictor.from_runs(config.runs, jit_compile=config.jit_compile)
        predictor.warmup()
        app = create_app(predictor, config)
        server = uvicorn.Server(uvicorn.Config(app, host=config.host, port=config.port, log_level=config.log_level,
                                               timeout_graceful_shutdown=config.shutdown_timeout_s,
                                               access_log=config.log_level == "debug"))
        server.run(sockets=[sock])
    finally:
        sock.close()
