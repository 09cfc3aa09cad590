"""The report of a real smoke run, opened in headless Chromium: no console error, no request leaving the page,
a table row per method, every plot decoded, sorting works, and a full-page screenshot that is not blank.

Chromium is driven over the Chrome DevTools Protocol on `--remote-debugging-pipe` (JSON messages ending in
NUL on file descriptors 3 and 4): it needs no driver binary, no extra package and no network, and it sees
every console message, exception and network request of the page.
"""
from __future__ import annotations

import base64
import fcntl
import io
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from methods import METHODS as REGISTERED

METHODS = list(REGISTERED)
SEC = "document.querySelector(\"section.task[data-task='sentiment']\")"  # the shared grid's first section
CHROMIUM_NAMES = ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"]
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--window-size=1300,1000", "--remote-debugging-pipe"]


def find_chromium() -> str | None:
    explicit = os.environ.get("BENCH_CHROMIUM")
    return explicit if explicit and Path(explicit).is_file() else next(filter(None, map(shutil.which, CHROMIUM_NAMES)), None)


@pytest.fixture(scope="module")
def chromium() -> str:
    path = find_chromium()
    if path is None:
        pytest.skip("Chromium not found (tried $BENCH_CHROMIUM, " + ", ".join(CHROMIUM_NAMES) +
                    "): install the Debian packages `chromium chromium-driver` to run the browser test")
    return path


class Browser:
    """A minimal CDP client: one page, its events collected, commands answered in order."""

    def __init__(self, binary: str, profile: Path):
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def wire_fds():  # in the child: Chromium reads commands on fd 3 and writes replies on fd 4
            # Copy both ends above fd 9 first, so that placing one on 3 or 4 cannot overwrite the other.
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_chrome_r, from_chrome_w)]
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        self.proc = subprocess.Popen([binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                     preexec_fn=wire_fds, close_fds=False, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._next_id = 0
        self._replies: dict[int, dict] = {}
        self.events: list[dict] = []
        self._lock = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        try:
            target = self.call("Target.createTarget", url="about:blank")["targetId"]
            self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
            for domain in ("Page", "Runtime", "Log", "Network"):
                self.call(f"{domain}.enable", session=True)
        except Exception:
            self.proc.kill()  # a browser that never answered must not outlive the test
            raise

    def _read(self) -> None:
        buf = b""
        while chunk := os.read(self._from_chrome, 1 << 16):
            buf += chunk
            *messages, buf = buf.split(b"\0")
            for raw in messages:
                msg = json.loads(raw)
                with self._lock:
                    if "id" in msg:
                        self._replies[msg["id"]] = msg
                    else:
                        self.events.append(msg)
                    self._lock.notify_all()

    def call(self, method: str, session: bool = False, timeout: float = 30, **params) -> dict:
        self._next_id += 1
        call_id = self._next_id
        msg = {"id": call_id, "method": method, "params": params}
        if session:
            msg["sessionId"] = self.session
        os.write(self._to_chrome, json.dumps(msg).encode() + b"\0")
        with self._lock:
            if not self._lock.wait_for(lambda: call_id in self._replies, timeout):
                raise TimeoutError(f"no reply to {method} within {timeout} s")
            reply = self._replies.pop(call_id)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def wait_event(self, method: str, since: int = 0, timeout: float = 30) -> dict:
        """The first `method` event from index `since` of `events` on, waiting for it if need be."""
        def found():
            return next((e for e in self.events[since:] if e["method"] == method), None)
        with self._lock:
            if not self._lock.wait_for(lambda: found() is not None, timeout):
                raise TimeoutError(f"no {method} within {timeout} s")
            return found()

    def open(self, url: str) -> None:
        since = len(self.events)
        self.call("Page.navigate", session=True, url=url)
        self.wait_event("Page.loadEventFired", since)
        time.sleep(0.5)  # late errors (a script after load, a lazy image) still land in `events`

    def js(self, expression: str):
        result = self.call("Runtime.evaluate", session=True, expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression!r} raised {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, path: Path) -> bytes:
        size = self.call("Page.getLayoutMetrics", session=True)["cssContentSize"]
        png = base64.b64decode(self.call(
            "Page.captureScreenshot", session=True, format="png", captureBeyondViewport=True,
            clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1})["data"])
        path.write_bytes(png)
        return png

    def problems(self, page_url: str) -> tuple[list[str], list[str]]:
        """(console errors and exceptions, requests for anything but the page itself and data: URIs)."""
        errors, requests = [], []
        for e in self.events:
            p = e.get("params", {})
            if e["method"] == "Runtime.exceptionThrown":
                errors.append(json.dumps(p["exceptionDetails"])[:300])
            elif e["method"] == "Runtime.consoleAPICalled" and p["type"] in ("error", "assert", "warning"):
                errors.append(" ".join(str(a.get("value", a.get("description"))) for a in p["args"]))
            elif e["method"] == "Log.entryAdded" and p["entry"]["level"] in ("error", "warning"):
                errors.append(f"{p['entry']['source']}: {p['entry']['text']}")
            elif e["method"] == "Network.requestWillBeSent":
                url = p["request"]["url"]
                if url != page_url and not url.startswith("data:") and url != "about:blank":
                    requests.append(url)
        return errors, requests

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=5)
        except (TimeoutError, RuntimeError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_chrome)


@pytest.fixture
def browser(chromium, tmp_path):
    b = Browser(chromium, tmp_path / "profile")
    yield b
    b.close()


@pytest.fixture()
def smoke_report(smoke_grid) -> Path:
    out, _ = smoke_grid
    assert (out / "report.html").is_file() and (out / "report.md").is_file()
    return out / "report.html"


def test_the_client_catches_console_errors_and_outside_requests(browser, tmp_path):
    """Guards the test below: a page that misbehaves must be caught, or a clean result would mean nothing."""
    page = tmp_path / "bad.html"
    page.write_text('<!DOCTYPE html><title>bad</title><img src="http://example.invalid/x.png">'
                    '<script>console.error("planted error")</script>')
    browser.open(page.as_uri())
    errors, requests = browser.problems(page.as_uri())
    assert any("planted error" in e for e in errors), errors
    assert requests == ["http://example.invalid/x.png"]


def test_smoke_report_opens_cleanly_with_rows_plots_and_sorting(browser, smoke_report, tmp_path):
    url = smoke_report.as_uri()
    browser.open(url)
    errors, requests = browser.problems(url)
    assert errors == [], errors
    assert requests == [], requests

    assert browser.js("document.title") == "peft-bench report"
    shown = browser.js("[..." + SEC + ".querySelectorAll('tr.method')].map(r => r.dataset.method)")
    assert sorted(shown) == sorted(METHODS)
    # Rows come best first by the headline metric (the first column after the method's name).
    scores = browser.js(f"[...{SEC}.querySelectorAll('tr.method')].map(r => Number(r.cells[1].dataset.sort))")
    assert scores == sorted(scores, reverse=True), scores
    # Every method that applies to the encoder runs ok; the decoder-only (zero-shot) and CUDA-only (int4-lora) ones
    # are rows too, recorded skipped with their reasons.
    applies = [m for m in METHODS if "transformer" not in REGISTERED[m].not_on and
               (not REGISTERED[m].devices or "cpu" in REGISTERED[m].devices)]
    assert browser.js(SEC + ".querySelectorAll('tr.method.ok').length") == len(applies)
    plots = browser.js("[..." + SEC + ".querySelectorAll('figure.plot img')].map(i => "
                       "[i.closest('figure').classList[1], i.complete && i.naturalWidth > 100, i.alt])")
    kinds = [k for k, _, _ in plots]
    assert kinds.count("pareto") == 3 and kinds.count("bars") == 2 and kinds.count("loss") == 1, plots
    assert all(decoded for _, decoded, _ in plots), plots  # every SVG decoded and drawn
    assert browser.js(SEC + ".querySelectorAll('td.best').length") >= 5
    assert "torch" in browser.js(SEC + ".querySelector('dl.env').innerText")

    # Clicking "trainable params" sorts ascending, again descending.
    col = browser.js("[..." + SEC + ".querySelectorAll('thead th')].findIndex(t => t.innerText.includes('trainable params'))")
    assert col > 0
    # Rows that ran (skipped ones, without figures, stay below them whatever the order).
    order = f"[...{SEC}.querySelectorAll('tr.method.ok')].map(r => Number(r.cells[{col}].dataset.sort))"
    browser.js(f"{SEC}.querySelectorAll('thead th')[{col}].querySelector('button').click()")
    ascending = browser.js(order)
    assert ascending == sorted(ascending) and ascending[0] < ascending[-1]
    browser.js(f"{SEC}.querySelectorAll('thead th')[{col}].querySelector('button').click()")
    assert browser.js(order) == sorted(ascending, reverse=True)

    png = browser.screenshot(tmp_path / "report.png")
    from PIL import Image
    image = Image.open(io.BytesIO(png)).convert("L")
    assert image.width >= 1000 and image.height >= 1500, image.size  # the whole page, not the viewport
    dark = sum(image.histogram()[:200]) / (image.width * image.height)
    assert dark > 0.02, f"screenshot looks blank ({dark:.1%} non-white pixels)"
    print(f"screenshot: {tmp_path / 'report.png'}")
