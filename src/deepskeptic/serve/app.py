"""The FastAPI app: health, the served runs, predict (micro-batched), their reports and the web page.

    app = create_app(["runs/cnn-digits", "runs/compare-image-digits"], token="s3cret")

Every error is JSON {"error": "..."}: 4xx for a request the server refuses (it names the problem),
401 without the right token, 500 with a short message (the traceback goes to the server's log,
never to the client). NaN and infinities in results are given as null and listed under
"non_finite". Generate, translate and explain are in use.py.
"""
from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from deepskeptic._version import __version__
from deepskeptic.errors import UserError
from deepskeptic.serve import inputs
from deepskeptic.serve.batching import MicroBatcher
from deepskeptic.serve.bounds import Bounds, Problem, TooLarge
from deepskeptic.serve.responses import error, json_response
from deepskeptic.serve.models import Served, ServedComparison, discover, lookup as model

log = logging.getLogger("deepskeptic.serve")
PAGE = Path(__file__).parent / "page"
PAGE_FILES = {"index.html": "text/html", "style.css": "text/css", "app.js": "text/javascript"}
OPEN_PATHS = ("/health", "/", "/favicon.ico")        # and /page/...: the page's own files, no data
# The page loads only its own files and talks only to this server (nothing from the internet).
PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
            "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'")
BATCHED = ("image", "text", "speech")


@dataclass
class ServeOptions:
    token: str | None = None
    max_batch: int = 32                  # inputs per predictor call
    max_delay_ms: float = 5.0            # how long the first request of a batch waits for others
    bounds: Bounds = field(default_factory=Bounds)
    watch: str | None = None             # a folder whose runs in progress are listed (--watch)


class Guard:
    """ASGI middleware: the token, the request size, and a JSON 500 (no traceback) for anything
    that escapes the routes."""

    def __init__(self, app, token: str | None, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes
        self.expected = f"Bearer {token}".encode() if token else None

    def _open(self, path: str) -> bool:
        return path in OPEN_PATHS or path.startswith("/page/")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        if self.expected is not None and not self._open(scope["path"]):
            given = headers.get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):       # constant time
                message = "this server needs a token: send 'Authorization: Bearer <token>'" if not given \
                    else "wrong token"
                return await error(401, message, {"WWW-Authenticate": "Bearer"})(scope, receive, send)
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await self._too_large(scope, receive, send)
        seen = {"bytes": 0, "started": False}

        async def counted_receive():
            message = await receive()
            if message["type"] == "http.request":
                seen["bytes"] += len(message.get("body", b""))
                if seen["bytes"] > self.max_bytes:
                    raise TooLarge(self.max_bytes)
            return message

        async def tracked_send(message):
            if message["type"] == "http.response.start":
                seen["started"] = True
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except Problem as exc:       # raised outside a route's handlers
            if not seen["started"]:
                await error(exc.status, exc.message)(scope, receive, send)
        except Exception as exc:  # noqa: BLE001 - the last line of defence
            log.exception("unexpected error on %s %s", scope.get("method"), scope["path"])
            if not seen["started"]:
                await error(500, f"internal error ({type(exc).__name__}); the server's log has the details")(
                    scope, receive, send)

    async def _too_large(self, scope, receive, send):
        exc = TooLarge(self.max_bytes)
        await error(exc.status, exc.message)(scope, receive, send)


# ------------------------------------------------------------------ the app

def create_app(paths: list[str | Path] | None = None, options: ServeOptions | None = None, *,
               served: tuple[list[Served], list[ServedComparison]] | None = None) -> FastAPI:
    """The app serving the runs in ``paths`` (run or comparison folders), or already loaded ones."""
    from contextlib import asynccontextmanager
    options = options or ServeOptions()
    models, comparisons = served if served is not None else discover(list(paths)) if paths else ([], [])
    by_name = {m.name: m for m in models}
    for m in models:
        if m.task.name in BATCHED and "predict" in m.commands:
            m.batcher = MicroBatcher(_batch_function(m), m.executor, options.max_batch, options.max_delay_ms / 1000)

    @asynccontextmanager
    async def lifespan(app):
        yield
        for m in models:
            m.close()

    app = FastAPI(title="deepskeptic", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.models, app.state.comparisons, app.state.options = by_name, comparisons, options

    @app.exception_handler(Problem)
    async def on_problem(request, exc: Problem):
        return error(exc.status, exc.message)

    @app.exception_handler(UserError)
    async def on_user_error(request, exc: UserError):
        return error(422, str(exc))

    @app.exception_handler(RequestValidationError)
    async def on_validation(request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        return error(422, f"{'.'.join(str(p) for p in first.get('loc', []))}: {first.get('msg', 'invalid request')}")

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request, exc: StarletteHTTPException):
        message = exc.detail if isinstance(exc.detail, str) else "request refused"
        if exc.status_code == 404 and message == "Not Found":
            message = f"no route {request.url.path}; the API is under /v1 (GET /v1/models lists the runs)"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        return error(exc.status_code, message)

    # --- health, runs, reports
    @app.get("/health")
    async def health():
        return json_response({"status": "ok", "version": __version__, "models": len(by_name),
                              "token_required": options.token is not None, "watch": options.watch is not None})

    @app.get("/v1/models")
    async def list_models():
        return json_response({"models": [m.describe() for m in models]})

    @app.get("/v1/models/{name}")
    async def one_model(name: str):
        return json_response(model(app, name).describe())

    @app.get("/v1/comparisons")
    async def list_comparisons():
        return json_response({"comparisons": [c.describe() for c in comparisons]})

    @app.get("/v1/models/{name}/report")
    async def model_report(name: str):
        return _report(model(app, name).run.report_path, f"run {name}")

    @app.get("/v1/comparisons/{cid}/report")
    async def comparison_report(cid: str):
        found = next((c for c in comparisons if c.id == cid), None)
        if found is None:
            raise Problem(404, f"no comparison '{cid}'; GET /v1/comparisons lists them")
        return _report(found.path / "report.html", f"comparison {cid}")

    # --- predict
    @app.post("/v1/models/{name}/predict")
    async def predict(name: str, request: Request):
        m = model(app, name)
        if "predict" not in m.commands:
            raise Problem(404, f"{m.task.name} runs have no predict; {m.name} has: {', '.join(m.commands)}")
        body = await inputs.read_body(request, options.bounds)
        results, extra = await run_predict(m, body, options.bounds)
        return json_response({"model": m.name, "task": m.task.name, "results": results, **extra})

    # --- the page
    @app.get("/")
    async def index():
        return _page_file("index.html")

    @app.get("/page/{file}")
    async def page_file(file: str):
        if file not in PAGE_FILES:
            raise Problem(404, f"no page file '{file}'")
        return _page_file(file)

    from deepskeptic.serve import use, watch
    use.add_routes(app)
    if options.watch:
        watch.add_routes(app, options.watch)
    app.add_middleware(Guard, token=options.token, max_bytes=options.bounds.request_bytes)
    return app


def _report(path: Path, what: str) -> Response:
    if not path.is_file():
        raise Problem(404, f"{what} has no report.html; write it with 'deepskeptic report'")
    return FileResponse(path, media_type="text/html")


def _page_file(file: str) -> Response:
    response = FileResponse(PAGE / file, media_type=PAGE_FILES[file])
    response.headers["Content-Security-Policy"] = PAGE_CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "no-cache"
    return response


# ------------------------------------------------------------------ predict, per task

def _batch_function(m: Served):
    """fn(items, options) for the micro-batcher: one predictor call on the (input, name) pairs."""
    def call(items: list[tuple[Any, str | None]], key) -> list[Any]:
        opts = dict(key)
        named = opts.pop("named", True)
        decoded = [x for x, _ in items]
        names = [n for _, n in items] if named else None
        return m.predictor.predict(decoded, names=names, **opts)
    return call


HISTORY_POINTS = 1_000   # points of a forecast's history sent back with it: what a chart can show


def forecast_history(series) -> dict[str, Any]:
    """The end of the series a forecast was made from, as the run's reader read it (its last
    HISTORY_POINTS points): the page draws it before the forecast."""
    n = min(len(series), HISTORY_POINTS)
    return {"target": series.target, "points": len(series), "time": series.time_labels(len(series) - n),
            "values": series.values[len(series) - n:]}


async def run_predict(m: Served, body: inputs.Body, bounds: Bounds) -> tuple[list[Any], dict[str, Any]]:
    """(What `deepskeptic predict --json` prints for the inputs in ``body``, what goes beside it in
    the response: for a forecast, the history it was made from)."""
    import asyncio
    task, predictor = m.task.name, m.predictor
    loop = asyncio.get_running_loop()
    if task == "image":
        items, key = await loop.run_in_executor(None, inputs.image_items, body, bounds, predictor.image_size)
    elif task == "text":
        encoding = m.run.config["settings"].get("encoding")
        items, key = inputs.text_items(body, bounds, encoding)
    elif task == "speech":
        items, key = await loop.run_in_executor(None, inputs.audio_items, body, bounds)
    elif task == "forecast":
        kind, value = inputs.forecast_input(body, bounds)
        if kind == "values":
            def from_values():
                return predictor.predict(value), {"history": forecast_history(predictor.series(value))}
            return await loop.run_in_executor(m.executor, from_values)

        def from_csv(path: str):
            series = predictor.read([path])[0]
            return predictor.predict(series), {"history": forecast_history(series)}
        return await loop.run_in_executor(m.executor, inputs.with_csv_file, value, from_csv)
    else:
        raise Problem(501, f"predict for {task} runs is not served yet; use 'deepskeptic predict'")
    return await m.batcher.submit(items, key), {}
