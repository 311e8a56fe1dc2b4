"""An HTTP server for a saved run (PyTorch or ONNX): FastAPI on uvicorn, with dynamic batching.

    nlp-transfer serve runs/rt-minilm-full --port 8000
    curl -s localhost:8000/predict -H 'content-type: application/json' -d '{"texts": ["a gorgeous, moving film"]}'

* ``POST /predict`` ``{"texts": [...], "text_pairs": [...]?}`` -> ``{"predictions": [...], "batch_texts": n}``:
  one record per text, as ``nlp-transfer predict`` writes them (``label``, ``score``, ``probabilities``;
  multi-label ``labels``; regression ``value``); ``batch_texts`` is how many texts the model ran with
  this request's (its own and other clients' texts batched together).
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
        "limits": {
            "max_texts": limits.max_texts,
            "max_chars": limits.max_chars,
            "max_batch_size": limits.max_batch_size,
            "max_wait_ms": limits.max_wait_ms,
        },
        "metrics": {"test": metrics.get("test"), "validation": metrics.get("validation")},
    }


def create_app(run_dir: str | Path, limits: Limits | None = None, device: str | None = None, precision: str | None = None):
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

    def error(status: int, message: str, **extra) -> JSONResponse:
        return JSONResponse({"error": message, **extra}, status_code=status)

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
