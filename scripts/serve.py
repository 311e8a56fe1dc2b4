#!/usr/bin/env python
"""Serve a saved run over HTTP (FastAPI + uvicorn), with dynamic batching of concurrent requests.

    python scripts/serve.py runs/rt-minilm-full --port 8000
    curl -s localhost:8000/predict -H 'content-type: application/json' -d '{"texts": ["a gorgeous, moving film"]}'

See `python scripts/serve.py --help`.
"""

import sys

from nlp_transfer.cli import run_cli, serve_main

if __name__ == "__main__":
    sys.exit(run_cli(serve_main))
