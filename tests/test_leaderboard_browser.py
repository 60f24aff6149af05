"""The HTML leaderboard in a real headless Chromium, driven over the DevTools protocol.

The browser talks CDP over a pipe (``--remote-debugging-pipe``: JSON messages ending in NUL on
file descriptors 3 and 4), so no port, no network and no client package are needed. The test
loads the page from file://, clicks a column header with real mouse events, checks the new row
order, filters by protocol and saves a screenshot that must not be blank.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from meerbench.report.grid import load_runs
from meerbench.report.leaderboard import write_leaderboard
from tests.test_report_tables import write_results

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-pipe")


def chromium() -> str | None:
    return next(filter(None, map(shutil.which, ("chromium", "chromium-browser",
                                                "google-chrome"))), None)


class Browser:
    """A headless Chromium and one page, over the DevTools pipe."""

    def __init__(self, binary: str, profile: Path) -> None:
        to_browser, self._write = os.pipe()
        self._read, from_browser = os.pipe()

        def wire() -> None:  # in the child: the pipe ends become fds 3 (commands) and 4 (replies)
            a, b = os.dup(to_browser), os.dup(from_browser)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.process = subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"], preexec_fn=wire,
            close_fds=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser)
        os.close(from_browser)
        self._buffer = b""
        self._id = 0
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target,
                                 flatten=True)["sessionId"]

    def send(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self._buffer:
                chunk = os.read(self._read, 1 << 16)
                if not chunk:
                    raise RuntimeError("Chromium closed the DevTools pipe")
                self._buffer += chunk
            raw, _, self._buffer = self._buffer.partition(b"\0")
            reply = json.loads(raw)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def page(self, method: str, **params: Any) -> dict[str, Any]:
        return self.send(method, self.session, **params)

    def js(self, expression: str) -> Any:
        reply = self.page("Runtime.evaluate", expression=expression, returnByValue=True,
                          awaitPromise=True)
        if "exceptionDetails" in reply:
            raise RuntimeError(reply["exceptionDetails"])
        return reply["result"].get("value")

    def click(self, selector: str) -> None:
        """A real left click (mouse down and up) at the centre of the element."""
        box = self.js(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); "
                      "e.scrollIntoView({block: 'center', inline: 'center'}); "
                      "const r = e.getBoundingClientRect(); "
                      "return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        for kind in ("mousePressed", "mouseReleased"):
            self.page("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left",
                      clickCount=1)

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (RuntimeError, OSError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        os.close(self._write)
        os.close(self._read)


def rows(browser: Browser) -> list[str]:
    return browser.js("Array.from(document.querySelectorAll('#board > tbody > tr'))"
                      ".map(r => r.dataset.model)")


def test_sort_filter_and_screenshot_in_headless_chromium(tmp_path: Path) -> None:
    binary = chromium()
    if binary is None:
        pytest.skip("Chromium is not installed (apt-get install chromium); CI installs it")
    results = tmp_path / "results"
    write_results(results, {"alpha": 3.0, "beta": 1.5, "gamma": 0.4, "delta": 2.0},
                  conditions=("UMR-MP", "MR-MP"))
    write_leaderboard(load_runs([results]), tmp_path / "reports", plots=False)
    board = json.loads((tmp_path / "reports" / "leaderboard.json").read_text())
    column = next(c for c in board["columns"]
                  if (c["protocol"], c["condition"], c["metric"]) == ("synthB", "MR-MP", "eer"))
    eer = {m["model"]: m["cells"][column["key"]]["value"] for m in board["models"]}
    lowest_first = sorted(eer, key=lambda m: (eer[m], m))

    browser = Browser(binary, tmp_path / "profile")
    try:
        browser.page("Emulation.setDeviceMetricsOverride", width=1400, height=900,
                     deviceScaleFactor=1, mobile=False)
        url = (tmp_path / "reports" / "leaderboard.html").as_uri()
        browser.page("Page.navigate", url=url)
        browser.js("new Promise(r => document.readyState === 'complete' ? r() : "
                   "addEventListener('load', () => r()))")
        assert rows(browser) == [m["model"] for m in board["models"]]  # ranked order

        header = f'#board th[title="{column["key"]}"]'
        browser.click(header)  # EER: lower is better, so best (lowest) first
        assert rows(browser) == lowest_first
        assert browser.js(f"document.querySelector('{header}').getAttribute('aria-sort')") == \
            "ascending"
        browser.click(header)
        assert rows(browser) == sorted(eer, key=lambda m: (-eer[m], m))

        browser.js("(() => { const s = document.getElementById('filter-protocol'); "
                   "s.value = 'synthA v1'; s.dispatchEvent(new Event('change')); })()")
        shown = browser.js("Array.from(document.querySelectorAll('#board > thead > tr > th'))"
                           ".filter(th => th.offsetParent !== null).map(th => th.dataset.protocol"
                           " || th.textContent)")
        protocols = {p for p in shown if p in ("synthA v1", "synthB v2")}
        assert protocols == {"synthA v1"} and "Provenance" in shown
        assert browser.js("document.querySelectorAll('#board > tbody > tr > "
                          "td[data-protocol=\"synthB v2\"]:not([hidden])').length") == 0

        browser.js("document.querySelector('.scroll').scrollTo(0, 0)")
        shot = base64.b64decode(browser.page("Page.captureScreenshot", format="png")["data"])
    finally:
        browser.close()
    (tmp_path / "leaderboard.png").write_bytes(shot)
    with Image.open(io.BytesIO(shot)) as image:
        assert image.size == (1400, 900)
        grey = np.asarray(image.convert("L"), dtype=np.float64)
    assert grey.std() > 20 and (grey < 100).mean() > 0.01  # text and rules drawn, not blank
