"""`scripts/serve.py`: the FastAPI app on a real uvicorn server on localhost, driven by a real httpx client.

The server runs in a thread of the test process (one uvicorn.Server on a free port), on a random
tiny BERT saved as a run; a long max-wait lets concurrent requests meet in one model batch.
"""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest
from conftest import save_run, serving, toy_rows

from nlp_transfer import load_run

pytestmark = pytest.mark.usefixtures("one_thread")

TEXTS = [t for t, _ in toy_rows(40, seed=21)]


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_bert_dir):
    return save_run(tmp_path_factory.mktemp("serve"), tiny_bert_dir, pooling="mean")


@pytest.fixture(scope="module")
def server(run):

    from nlp_transfer.inference.server import Limits, create_app

    app = create_app(run, Limits(max_texts=8, max_chars=200, max_batch_size=32, max_wait_ms=300), device="cpu")
    with serving(app) as url:
        yield url


def test_predict_matches_the_predictor_and_metadata(server, run):
    expected = load_run(run).predict(TEXTS[:3])
    with httpx.Client(base_url=server, timeout=30) as c:
        assert c.get("/health").json()["status"] == "ok"
        r = c.post("/predict", json={"texts": TEXTS[:3]})
        assert r.status_code == 200, r.text
        preds = r.json()["predictions"]
        assert [p["label"] for p in preds] == list(expected)
        np.testing.assert_allclose([[p["probabilities"][k] for k in expected.classes] for p in preds], expected.probabilities, atol=1e-6)
        meta = c.get("/metadata").json()
        assert meta["labels"] == ["neg", "pos", "meh"] and meta["task"] == "single_label" and meta["backend"] == "torch"
        assert meta["limits"]["max_texts"] == 8
        assert c.get("/docs").status_code == 200 and "/predict" in c.get("/openapi.json").json()["paths"]


def test_concurrent_requests_are_batched(server, run):
    expected = load_run(run).predict(TEXTS[:16])

    async def burst():
        async with httpx.AsyncClient(base_url=server, timeout=60) as c:
            return await asyncio.gather(*[c.post("/predict", json={"texts": TEXTS[2 * i : 2 * i + 2]}) for i in range(8)])

    before = httpx.get(f"{server}/metrics").json()
    answers = asyncio.run(burst())
    assert all(a.status_code == 200 for a in answers)
    labels = [p["label"] for a in answers for p in a.json()["predictions"]]
    assert labels == list(expected)  # each request got its own texts' answers
    after = httpx.get(f"{server}/metrics").json()
    assert after["requests"] - before["requests"] == 8
    assert after["batches"] - before["batches"] < 8  # several requests shared a model batch
    assert max(a.json()["batch_texts"] for a in answers) > 2


@pytest.mark.parametrize(
    "body, status, message",
    [
        (b"{not json", 400, "not valid JSON"),
        (b'{"texts": "one string"}', 422, "texts"),
        (b'{"texts": [1, 2]}', 422, "texts.0"),
        (b'{"text": ["a"]}', 422, "texts"),
        (b'{"texts": []}', 422, "empty"),
        (b'{"texts": ["  "]}', 422, "empty"),
        (b'{"texts": ["a", "b", "c", "d", "e", "f", "g", "h", "i"]}', 413, "limit is 8"),
        (b'{"texts": ["' + b"x" * 201 + b'"]}', 413, "201 characters"),
        (b'{"texts": ["a", "b"], "text_pairs": ["c"]}', 422, "text_pairs"),
        (b"[1, 2]", 422, "body"),
    ],
)
def test_bad_requests_get_a_4xx_json_error_and_the_server_lives_on(server, body, status, message):
    r = httpx.post(f"{server}/predict", content=body, headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]
    assert httpx.post(f"{server}/predict", json={"texts": ["still here"]}, timeout=30).status_code == 200


def test_serve_command_line_errors(capsys, tmp_path):
    from nlp_transfer.cli import run_cli, serve_main

    assert run_cli(serve_main, [str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "does not exist" in err
    assert run_cli(serve_main, [str(tmp_path), "--port", "70000"]) == 2
    assert "not a TCP port" in capsys.readouterr().err


def test_api_key_and_origins(run):
    from fastapi.testclient import TestClient

    from nlp_transfer.inference.server import create_app

    key, allowed = "s3cret-key-for-tests", "https://app.example.com"
    with TestClient(create_app(run, device="cpu", api_key=key, cors_origins=[allowed]), base_url="http://127.0.0.1:8000") as c:
        body = {"texts": ["a good film"]}
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": key}, {"authorization": f"Bearer {key}x"}):
            for method, path in (("POST", "/predict"), ("GET", "/metadata"), ("GET", "/metrics"), ("GET", "/openapi.json")):
                r = c.request(method, path, json=body if method == "POST" else None, headers=headers)
                assert r.status_code == 401 and "API key" in r.json()["error"], (path, headers, r.text)
        good = {"authorization": f"Bearer {key}"}
        assert c.post("/predict", json=body, headers=good).status_code == 200
        assert c.get("/metadata", headers=good).json()["labels"] == ["neg", "pos", "meh"]
        assert c.get("/health").status_code == 200 and c.get("/").status_code == 200  # open: the probe and the page
        evil = c.post("/predict", json=body, headers={**good, "origin": "https://evil.example"})
        assert evil.status_code == 403 and "--cors-origin https://evil.example" in evil.json()["error"]
        ok = c.post("/predict", json=body, headers={**good, "origin": allowed})
        assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == allowed
        pre = c.options(
            "/predict",
            headers={"origin": allowed, "access-control-request-method": "POST", "access-control-request-headers": "authorization"},
        )
        assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == allowed
        assert c.post("/predict", json=body, headers={**good, "origin": "http://127.0.0.1:8000"}).status_code == 200  # same origin
    with TestClient(create_app(run, device="cpu")) as c:  # no key, no origins: open locally, other origins refused
        assert c.post("/predict", json={"texts": ["x"]}).status_code == 200
        assert c.post("/predict", json={"texts": ["x"]}, headers={"origin": "https://app.example.com"}).status_code == 403


def test_serve_refuses_a_short_key_and_a_bad_origin(capsys, run, monkeypatch):
    from nlp_transfer.cli import run_cli, serve_main

    monkeypatch.setenv("NLP_TRANSFER_API_KEY", "short")
    assert run_cli(serve_main, [str(run)]) == 2
    assert "shorter than 8 characters" in capsys.readouterr().err
    monkeypatch.delenv("NLP_TRANSFER_API_KEY")
    assert run_cli(serve_main, [str(run), "--cors-origin", "app.example.com"]) == 2
    assert "not an origin" in capsys.readouterr().err
