"""An HTTP server for a saved run (PyTorch or ONNX): FastAPI on uvicorn, with dynamic batching.

    nlp-transfer serve runs/rt-minilm-full --port 8000
    curl -s localhost:8000/predict -H 'content-type: application/json' -d '{"texts": ["a gorgeous, moving film"]}'

* ``POST /predict`` ``{"texts": [...], "text_pairs": [...]?}`` -> ``{"predictions": [...], "batch_texts": n}``:
  one record per text, as ``nlp-transfer predict`` writes them (``label``, ``score``, ``probabilities``;
  multi-label ``labels``; regression ``value``); ``batch_texts`` is how many texts the model ran with
  this request's (its own and other clients' texts batched together).
* ``GET /``: a page to try the model (one static HTML + JS file, no build step): a text box, the label,
  the probabilities and, for PyTorch runs with captum installed, the words coloured by their
  attribution (``POST /explain`` ``{"text": "..."}``: Integrated Gradients, see
  :mod:`nlp_transfer.inference.explain`). Everything the user types or the model answers is put into
  the page as text (``textContent``), never as HTML.
* **Access**: with ``api_key`` every endpoint but ``/health`` and the page itself answers 401 unless the
  request carries ``Authorization: Bearer KEY`` (the page has a key field). Requests from another
  origin (a browser's ``Origin`` header naming another host) are refused with 403 unless that origin is
  in ``cors_origins``, which also get CORS headers (FastAPI's ``CORSMiddleware``).
* ``GET /health``, ``GET /metadata`` (labels, task, checkpoint, backend, limits, the run's test metrics),
  ``GET /metrics`` (requests, texts, batches, largest batch), ``GET /docs`` (OpenAPI, FastAPI's own).
* **Dynamic batching**: requests wait in a queue; one background task takes the first and whatever
  else arrives within ``max_wait_ms`` up to ``max_batch_size`` texts, runs the predictor on them in a
  worker thread (the event loop keeps accepting requests meanwhile), and answers each request with its
  slice. Requests with and without ``text_pairs`` are batched separately.
* **Limits**: at most ``max_texts`` texts per request (413) and ``max_chars`` characters per text (413);
  an empty list, an empty text, a wrong type or unequal ``text_pairs`` are 422; malformed JSON is 400.
  Every error is a JSON body ``{"error": "..."}``; the server keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, StrictStr

from nlp_transfer.inference.predictor import load_run
from nlp_transfer.manifest import read_manifest


class PredictRequest(BaseModel):
    """Texts to classify; ``text_pairs`` (one per text) for sentence-pair runs."""

    model_config = ConfigDict(extra="forbid")
    texts: list[StrictStr]
    text_pairs: list[StrictStr] | None = None


class ExplainRequest(BaseModel):
    """One text to explain (PyTorch runs)."""

    model_config = ConfigDict(extra="forbid")
    text: StrictStr


class PredictResponse(BaseModel):
    """One record per text (as nlp-transfer predict writes them) and the size of the model batch that ran them."""

    predictions: list[dict]
    batch_texts: int


@dataclass
class Limits:
    max_texts: int = 256  # texts per request
    max_chars: int = 20_000  # characters per text
    max_batch_size: int = 64  # texts per model batch (several requests together)
    max_wait_ms: float = 10.0  # how long the first request of a batch waits for others


@dataclass
class _Job:
    texts: list[str]
    pairs: list[str] | None
    future: asyncio.Future = field(default=None)


class Batcher:
    """Collects concurrent requests into model batches (see the module docstring)."""

    def __init__(self, predictor, limits: Limits):
        self.predictor, self.limits = predictor, limits
        self.queue: asyncio.Queue[_Job] = asyncio.Queue()
        self.stats = {"requests": 0, "texts": 0, "batches": 0, "largest_batch": 0, "errors": 0}
        self._held: _Job | None = None  # a job that did not fit in the last batch: the next one starts with it

    async def submit(self, texts: list[str], pairs: list[str] | None) -> tuple[list[dict], int]:
        job = _Job(texts, pairs, asyncio.get_running_loop().create_future())
        await self.queue.put(job)
        return await job.future

    async def _next(self, timeout: float | None) -> _Job | None:
        if self._held is not None:
            job, self._held = self._held, None
            return job
        if timeout is None:
            return await self.queue.get()
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except asyncio.TimeoutError:
            return None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = await self._next(None)
            jobs, size = [first], len(first.texts)
            deadline = loop.time() + self.limits.max_wait_ms / 1000
            while size < self.limits.max_batch_size:
                job = await self._next(max(deadline - loop.time(), 0))
                if job is None:
                    break
                if (job.pairs is None) != (first.pairs is None) or size + len(job.texts) > self.limits.max_batch_size:
                    self._held = job  # another kind, or too big to join: it opens the next batch
                    break
                jobs.append(job)
                size += len(job.texts)
            await self._predict(jobs, size)

    async def _predict(self, jobs: list[_Job], size: int) -> None:
        texts = [t for j in jobs for t in j.texts]
        pairs = [p for j in jobs for p in j.pairs] if jobs[0].pairs is not None else None
        try:
            preds = await asyncio.to_thread(self.predictor.predict, texts, text_pairs=pairs)
            records = preds.to_records()
        except Exception as e:  # the model failed: every waiting request gets the error, the server goes on
            self.stats["errors"] += 1
            for j in jobs:
                if not j.future.done():
                    j.future.set_exception(e)
            return
        self.stats["batches"] += 1
        self.stats["largest_batch"] = max(self.stats["largest_batch"], size)
        start = 0
        for j in jobs:
            if not j.future.done():  # a client that went away
                j.future.set_result((records[start : start + len(j.texts)], size))
            start += len(j.texts)


def metadata(run_dir: Path, predictor, limits: Limits) -> dict:
    """What /metadata answers: the run's labels, task, checkpoint and backend, the limits, the test metrics."""
    m = read_manifest(run_dir)
    metrics_file = run_dir / "metrics.json"
    try:
        metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    except (OSError, ValueError):
        metrics = {}
    return {
        "run": str(run_dir),
        "name": m.name,
        "labels": m.labels,
        "task": m.task,
        "kind": m.kind,
        "checkpoint": m.source_checkpoint,
        "backend": m.backend,
        "quantize": (m.onnx or {}).get("quantize"),
        "max_length": m.max_length,
        "chunking": bool(m.long_text.get("chunking")),
        "explain": _can_explain(predictor),
        "limits": {
            "max_texts": limits.max_texts,
            "max_chars": limits.max_chars,
            "max_batch_size": limits.max_batch_size,
            "max_wait_ms": limits.max_wait_ms,
        },
        "metrics": {"test": metrics.get("test"), "validation": metrics.get("validation")},
    }


def _can_explain(predictor) -> bool:
    """Word attributions on the page: PyTorch runs (not ONNX) with captum installed, text classification (not pairs)."""
    import importlib.util

    return getattr(predictor, "runner", None) is None and importlib.util.find_spec("captum") is not None


def page() -> str:
    """The page served at ``/`` (nlp_transfer/inference/static/index.html, package data)."""
    from importlib.resources import files

    return files("nlp_transfer.inference").joinpath("static/index.html").read_text(encoding="utf-8")


OPEN_PATHS = ("/health", "/")  # no key needed: the liveness probe and the page (which holds no data; it asks for the key)


def _guard(app, api_key: str | None, cors_origins: list[str]) -> None:
    """The access rules of the module docstring: the key check and the origin check, CORS headers for allowed origins."""
    from fastapi.middleware.cors import CORSMiddleware
    from fastapi.responses import JSONResponse

    expected = f"Bearer {api_key}".encode() if api_key else None

    @app.middleware("http")
    async def access(request, call_next):
        origin = request.headers.get("origin")
        if origin and origin not in cors_origins and origin != f"{request.url.scheme}://{request.headers.get('host', '')}":
            return JSONResponse({"error": f"requests from origin {origin} are refused; start the server with --cors-origin {origin}"}, 403)
        if expected is not None and request.url.path not in OPEN_PATHS and request.method != "OPTIONS":
            given = request.headers.get("authorization", "").encode()
            if not secrets.compare_digest(given, expected):
                return JSONResponse(
                    {"error": "missing or wrong API key: send the header Authorization: Bearer KEY"},
                    401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
        return await call_next(request)

    if cors_origins:  # added last: outermost, so it answers preflight requests before the key check
        app.add_middleware(
            CORSMiddleware, allow_origins=cors_origins, allow_methods=["GET", "POST"], allow_headers=["authorization", "content-type"]
        )


def _page_routes(app, predictor, meta: dict, limits: Limits, error) -> None:
    """``GET /`` (the page) and ``POST /explain`` (its word attributions)."""
    from fastapi.responses import HTMLResponse

    explain_lock = asyncio.Lock()  # one explanation at a time (each is dozens of forward and backward passes)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index():
        nonce = secrets.token_urlsafe(16)  # only the page's own script runs, whatever text ends up in it
        csp = f"default-src 'self'; script-src 'nonce-{nonce}'; style-src 'unsafe-inline'"
        return HTMLResponse(page().replace("<script>", f'<script nonce="{nonce}">', 1), headers={"Content-Security-Policy": csp})

    @app.post("/explain")
    async def explain(body: ExplainRequest):
        """Word attributions (Integrated Gradients) of ``text`` towards its predicted label: PyTorch runs, with captum."""
        if not meta["explain"]:
            return error(501, "explanations need a PyTorch run and captum (pip install 'nlp-transfer[trust]'); this run cannot explain")
        if not body.text.strip():
            return error(422, "text is empty; send a non-empty text")
        if len(body.text) > limits.max_chars:
            return error(413, f"text has {len(body.text):,} characters; the limit is {limits.max_chars:,}")
        async with explain_lock:
            try:
                ex = (await asyncio.to_thread(predictor.explain, [body.text], n_steps=20, progress=False))[0]
            except Exception as e:  # noqa: BLE001 - reported to the client, the server goes on
                return error(500, f"explanation failed: {type(e).__name__}: {str(e)[:300]}")
        return {"label": ex.label, "score": ex.score, "words": [[w, a] for w, a in ex.words]}


def create_app(
    run_dir: str | Path,
    limits: Limits | None = None,
    device: str | None = None,
    precision: str | None = None,
    api_key: str | None = None,
    cors_origins: list[str] | None = None,
):
    """The FastAPI application serving ``run_dir`` (loaded now, so a bad run fails before the server starts)."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

    limits = limits or Limits()
    run_dir = Path(run_dir)
    predictor = load_run(run_dir, device=device, precision=precision)
    predictor.predict(["warm up"])  # first-call costs (allocations, onnxruntime's plan) before any client waits
    batcher = Batcher(predictor, limits)
    meta = metadata(run_dir, predictor, limits)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        task = asyncio.create_task(batcher.run())
        yield
        task.cancel()

    app = FastAPI(
        title=f"nlp-transfer: {meta['name'] or run_dir.name}",
        lifespan=lifespan,
        description=f"Classifies texts with the run '{run_dir}' ({meta['task']}, labels: {', '.join(meta['labels'])}).",
    )

    _guard(app, api_key, list(cors_origins or []))

    def error(status: int, message: str, **extra) -> JSONResponse:
        return JSONResponse({"error": message, **extra}, status_code=status)

    _page_routes(app, predictor, meta, limits, error)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return error(400, 'the request body is not valid JSON; send {"texts": ["..."]}')
        first = errors[0] if errors else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "body"
        return error(
            422,
            f'{where}: {first.get("msg", "invalid request")}; send {{"texts": ["..."]}} '
            '(a list of strings, optionally "text_pairs" of the same length)',
            detail=json.loads(json.dumps(errors, default=str)),
        )

    @app.post("/predict", response_model=PredictResponse)
    async def predict(body: PredictRequest):
        """Labels, scores and probabilities for ``texts``, as ``nlp-transfer predict`` writes them."""
        texts, pairs = body.texts, body.text_pairs
        if not texts:
            return error(422, "texts is empty; send at least one text")
        if len(texts) > limits.max_texts:
            return error(413, f"{len(texts)} texts in one request; the limit is {limits.max_texts}: split the request")
        if pairs is not None and len(pairs) != len(texts):
            return error(422, f"{len(texts)} texts but {len(pairs)} text_pairs; send one pair per text")
        for what, values in (("texts", texts), ("text_pairs", pairs or [])):
            for i, t in enumerate(values):
                if len(t) > limits.max_chars:
                    return error(413, f"{what}[{i}] has {len(t):,} characters; the limit is {limits.max_chars:,}")
                if not t.strip():
                    return error(422, f"{what}[{i}] is empty; send non-empty texts")
        batcher.stats["requests"] += 1
        batcher.stats["texts"] += len(texts)
        try:
            records, size = await batcher.submit(texts, pairs)
        except Exception as e:  # noqa: BLE001 - reported to the client, the server goes on
            return error(500, f"prediction failed: {type(e).__name__}: {str(e)[:300]}")
        return {"predictions": records, "batch_texts": size}

    @app.get("/health")
    async def health():
        """``{"status": "ok"}`` once the model is loaded and the batcher runs."""
        return {"status": "ok", "uptime_seconds": round(time.monotonic() - started, 1)}

    @app.get("/metadata")
    async def get_metadata():
        """The run: labels, task, checkpoint, backend, limits and its test metrics."""
        return meta

    @app.get("/metrics")
    async def get_metrics():
        """Counters since start: requests, texts, model batches, the largest batch, failed batches."""
        return {**batcher.stats, "queued": batcher.queue.qsize()}

    started = time.monotonic()
    return app
