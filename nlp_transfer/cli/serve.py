"""``nlp-transfer serve``: an HTTP server (FastAPI on uvicorn) for a saved run, with dynamic batching."""

from __future__ import annotations

import argparse
import os
import sys

from nlp_transfer.cli.common import positive_int, setup_logging


def serve_main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(
        prog="nlp-transfer serve",
        description="Serve a saved run (PyTorch, or an ONNX export from nlp-transfer export --onnx) over HTTP. "
        'POST /predict with {"texts": [...]} (and "text_pairs") answers labels, scores and probabilities as '
        "nlp-transfer predict writes them; GET /health, GET /metadata (labels, task, checkpoint, metrics), GET /metrics "
        "(requests, batches), GET /docs (OpenAPI), GET / (a page to try the model). Concurrent requests are batched together: up to --max-batch-size "
        "texts, waiting at most --max-wait-ms for more. Oversized requests get 413, invalid ones 422, malformed "
        'JSON 400, each with a JSON {"error": ...} body.',
        epilog="examples:\n  nlp-transfer serve runs/rt-minilm-full --port 8000\n"
        "  curl -s localhost:8000/predict -H 'content-type: application/json' -d '{\"texts\": [\"a gorgeous, moving film\"]}'",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run", help="run directory written by nlp-transfer train or nlp-transfer export")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0: all)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    p.add_argument("--max-batch-size", type=positive_int, default=64, help="texts per model batch, across requests (default: 64)")
    p.add_argument(
        "--max-wait-ms",
        type=float,
        default=10.0,
        help="how long a request waits for others to batch with (default: 10 ms; 0: batch only what is queued)",
    )
    p.add_argument("--max-texts", type=positive_int, default=256, help="texts per request (default: 256; more: 413)")
    p.add_argument("--max-chars", type=positive_int, default=20_000, help="characters per text (default: 20000; more: 413)")
    p.add_argument("--device", help="cpu, cuda, ... (default: cuda if available)")
    p.add_argument("--precision", choices=("no", "bf16", "fp16"), help="autocast for PyTorch runs (default: the run's own)")
    p.add_argument(
        "--api-key",
        default=os.environ.get("NLP_TRANSFER_API_KEY"),
        help="require Authorization: Bearer KEY on every endpoint but /health and the page (default: $NLP_TRANSFER_API_KEY; "
        "unset: no key). Prefer the environment variable: a command line is visible to other users of the machine",
    )
    p.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="let web pages from ORIGIN (e.g. https://app.example.com) call the server; repeatable (default: other origins refused)",
    )
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"), help="uvicorn's log level")
    args = p.parse_args(argv)
    from nlp_transfer.errors import ConfigError

    if not 0 < args.port < 65536:
        raise ConfigError(f"--port {args.port} is not a TCP port; use 1-65535")
    if args.max_wait_ms < 0:
        raise ConfigError("--max-wait-ms must be 0 or more")
    if args.api_key is not None and len(args.api_key.strip()) < 8:
        raise ConfigError(
            "the API key is shorter than 8 characters; use a long random one (python -c 'import secrets; print(secrets.token_urlsafe())')"
        )
    for origin in args.cors_origin:
        if not origin.startswith(("http://", "https://")) or origin.endswith("/"):
            raise ConfigError(f"--cors-origin {origin!r} is not an origin; write scheme://host[:port], e.g. https://app.example.com")
    from nlp_transfer.utils.extras import require_extra

    require_extra("serve", "nlp-transfer serve", ConfigError)
    import uvicorn

    from nlp_transfer.inference.predictor import check_run_dir
    from nlp_transfer.inference.server import Limits, create_app

    check_run_dir(args.run)
    setup_logging()

    limits = Limits(args.max_texts, args.max_chars, args.max_batch_size, args.max_wait_ms)
    app = create_app(args.run, limits, device=args.device, precision=args.precision, api_key=args.api_key, cors_origins=args.cors_origin)
    access = "an API key required" if args.api_key else "no API key"
    print(f"serving {args.run} on http://{args.host}:{args.port} (try it: /, docs: /docs; {access})", file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
