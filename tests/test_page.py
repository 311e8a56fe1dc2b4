"""The page `nlp-transfer serve` answers at `/`, driven in headless Chromium (Debian's `chromium`, through playwright).

The server runs in a thread of the test process on a random tiny BERT saved as a run. Without a browser the tests
skip, unless NLP_TRANSFER_REQUIRE_BROWSER=1 (set by .ci/run), where they fail.
"""

from __future__ import annotations

import os
import shutil

import pytest
from conftest import save_run, serving, toy_rows

from nlp_transfer import load_run

pytestmark = pytest.mark.usefixtures("one_thread")

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
KEY = "test-key-0123456789"
XSS = "<img src=x onerror=alert(1)> good <script>alert(2)</script>"


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture(scope="module")
def browser():
    path = _chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        path = None
    if path is None:
        if os.environ.get("NLP_TRANSFER_REQUIRE_BROWSER") == "1":
            pytest.fail(
                "NLP_TRANSFER_REQUIRE_BROWSER=1 but no Chromium (apt-get install chromium) or no playwright (pip install playwright)"
            )
        pytest.skip("needs Chromium (apt-get install chromium) and playwright")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_bert_dir):
    return save_run(tmp_path_factory.mktemp("page"), tiny_bert_dir, pooling="mean")


@pytest.fixture(scope="module")
def servers(run):
    from nlp_transfer.inference.server import Limits, create_app

    limits = Limits(max_texts=8, max_chars=300, max_batch_size=8, max_wait_ms=1)
    with serving(create_app(run, limits, device="cpu")) as open_url, serving(create_app(run, limits, device="cpu", api_key=KEY)) as keyed:
        yield {"open": open_url, "keyed": keyed}


def _classify(page, text: str) -> None:
    page.fill("#text", text)
    page.click("#go")
    page.wait_for_selector("body[data-state=done]", state="attached", timeout=60_000)


def test_page_shows_the_label_probabilities_and_attributions(browser, servers, run):
    text = next(t for t, _ in toy_rows(5, seed=3))
    expected = load_run(run).predict([text])
    page = browser.new_page()
    page.goto(servers["open"] + "/")
    page.wait_for_selector("#about:not(:empty)", state="attached")
    assert "neg, pos, meh" in page.text_content("#about")
    _classify(page, text)
    assert page.text_content("#error") == ""
    assert page.text_content("#label") == expected[0]
    rows = page.locator("#probabilities tr").all_inner_texts()
    assert len(rows) == 3 and rows[0].split("\t")[0] == expected[0]
    words = page.locator("#words span").all_text_contents()
    assert words == text.split()  # the tiny run is PyTorch and captum is installed: every word coloured
    page.close()


def test_html_in_the_text_is_shown_as_text_and_runs_nothing(browser, servers):
    page = browser.new_page()
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(servers["open"] + "/")
    _classify(page, XSS)
    assert page.text_content("#echo") == XSS  # displayed literally
    assert page.locator("#result img, #result script").count() == 0
    page.wait_for_timeout(300)
    assert dialogs == []
    page.close()


def test_a_bad_input_shows_the_servers_error(browser, servers):
    page = browser.new_page()
    page.goto(servers["open"] + "/")
    _classify(page, "   ")
    assert "empty" in page.text_content("#error") and page.is_hidden("#result")
    _classify(page, "word " * 100)
    assert "the limit is 300" in page.text_content("#error")
    page.close()


def test_the_page_asks_for_the_api_key(browser, servers, run):
    page = browser.new_page()
    page.goto(servers["keyed"] + "/")
    page.wait_for_selector("#key", state="visible")
    assert "API key" in page.text_content("#error")
    page.fill("#key", "wrong-key-123")
    _classify(page, "a good film")
    assert "API key" in page.text_content("#error") and page.is_hidden("#result")
    page.fill("#key", KEY)
    _classify(page, "a good film")
    assert page.text_content("#error") == "" and page.text_content("#label") == load_run(run).predict(["a good film"])[0]
    page.close()
