"""The rendered report in a real headless chromium (console errors, screenshots) and real pdflatex.

Skipped, with the reason, only where the tool is absent; CI installs them
(``apt-get install -y chromium texlive-latex-base texlive-latex-recommended``).
Screenshots go to ``$SSMREPRO_SCREENSHOT_DIR`` when set, else to the test's temporary folder.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from ssmrepro.report import render
from test_report import populate
from test_tables import TABLES

pytestmark = pytest.mark.integration

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome", "chrome")
                 if shutil.which(n)), None)
PDFLATEX = shutil.which("pdflatex")


# ------------------------------------------------------------------ a tiny DevTools-protocol client
class DevTools:
    """Chrome DevTools protocol over a hand-rolled websocket (RFC 6455, client side): no dependency."""

    def __init__(self, ws_url: str, timeout: float = 60.0):
        assert ws_url.startswith("ws://")
        hostport, path = ws_url[5:].split("/", 1)
        host, port = hostport.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /{path} HTTP/1.1\r\nHost: {hostport}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        resp = b""
        while b"\r\n\r\n" not in resp:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("devtools closed during the handshake")
            resp += chunk
        head, self.buf = resp.split(b"\r\n\r\n", 1)
        if b" 101 " not in head.split(b"\r\n")[0]:
            raise ConnectionError(f"websocket handshake refused: {head[:200]!r}")
        self.next_id = 0
        self.events: list[dict] = []

    def _send_frame(self, opcode: int, data: bytes) -> None:
        header = bytearray([0x80 | opcode])
        n = len(data)
        if n < 126:
            header.append(0x80 | n)
        elif n < 1 << 16:
            header += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", n)
        mask = os.urandom(4)
        header += mask
        self.sock.sendall(bytes(header) + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def _read(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("devtools connection closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _recv(self) -> dict:
        message = b""
        while True:
            b1, b2 = self._read(2)
            fin, opcode, n = b1 & 0x80, b1 & 0x0F, b2 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._read(8))[0]
            mask = self._read(4) if b2 & 0x80 else None
            payload = self._read(n)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if opcode == 0x8:
                raise ConnectionError("devtools closed the websocket")
            if opcode == 0x9:
                self._send_frame(0xA, payload)
                continue
            if opcode in (0x0, 0x1, 0x2):
                message += payload
                if fin:
                    return json.loads(message)

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        mid = self.next_id
        self._send_frame(0x1, json.dumps({"id": mid, "method": method, "params": params}).encode())
        while True:
            msg = self._recv()
            if msg.get("id") == mid:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def wait_for(self, method: str, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for i, e in enumerate(self.events):
                if e.get("method") == method:
                    return self.events.pop(i)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {method} within {timeout} s")
            self.sock.settimeout(left)
            self.events.append(self._recv())

    def drain(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                self.events.append(self._recv())
            except (socket.timeout, TimeoutError):
                break
        self.sock.settimeout(60)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class Browser:
    """One headless chromium with remote debugging; a page target opened on about:blank."""

    def __init__(self, tmp: Path):
        self.profile = tmp / "chromium-profile"
        self.profile.mkdir()
        self.log = open(tmp / "chromium.log", "wb")
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={self.profile}", "--remote-debugging-port=0", "--window-size=1400,1000",
             "about:blank"],
            stdout=self.log, stderr=subprocess.STDOUT)
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + 90
        while not (port_file.exists() and port_file.read_text().strip()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"chromium did not start; see {tmp / 'chromium.log'}")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        for _ in range(100):
            targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10))
            pages = [t for t in targets if t.get("type") == "page"]
            if pages:
                break
            time.sleep(0.1)
        self.dt = DevTools(pages[0]["webSocketDebuggerUrl"])
        for domain in ("Page", "Runtime", "Log"):
            self.dt.call(f"{domain}.enable")
        self.dt.call("Emulation.setDeviceMetricsOverride", width=1400, height=1000, deviceScaleFactor=1,
                     mobile=False)

    def open(self, url: str) -> list[str]:
        """Load a page; the console errors, uncaught exceptions and failed loads it produced."""
        self.dt.events.clear()
        self.dt.call("Page.navigate", url=url)
        self.dt.wait_for("Page.loadEventFired", timeout=60)
        self.dt.drain(0.3)
        errors = []
        for e in self.dt.events:
            m, p = e.get("method"), e.get("params", {})
            if m == "Runtime.exceptionThrown":
                d = p.get("exceptionDetails", {})
                errors.append(f"exception: {d.get('exception', {}).get('description') or d.get('text')}")
            elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                errors.append("console." + p["type"] + ": " +
                              " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
            elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                entry = p["entry"]
                errors.append(f"log: {entry.get('text')} {entry.get('url', '')}")
        return errors

    def screenshot(self, path: Path, full_page: bool = False) -> Path:
        params = {"format": "png"}
        if full_page:
            metrics = self.dt.call("Page.getLayoutMetrics")
            size = metrics.get("cssContentSize") or metrics["contentSize"]
            params.update(captureBeyondViewport=True,
                          clip={"x": 0, "y": 0, "width": 1400, "height": min(size["height"], 4000), "scale": 1})
        data = self.dt.call("Page.captureScreenshot", **params)["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def stop(self) -> None:
        if getattr(self, "dt", None):
            try:
                self.dt.call("Browser.close")
            except (OSError, RuntimeError, ConnectionError):
                pass
            self.dt.close()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # our own child, by its handle
            self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    b = Browser(tmp_path_factory.mktemp("chromium"))
    yield b
    b.stop()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    base = tmp_path_factory.mktemp("site")
    populate(base / "results")
    render(TABLES, base / "results", base / "reports", "smoke")
    return base / "reports"


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    d = os.environ.get("SSMREPRO_SCREENSHOT_DIR")
    path = Path(d) if d else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


# ------------------------------------------------------------------ chromium
def test_detector_sees_console_errors(browser, tmp_path):
    """A control page with a console error, an exception and a missing image must be caught."""
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><head><link rel="icon" href="data:,"></head><body>'
                   '<img src="missing.png"><script>console.error("boom"); undefinedFunction();</script>'
                   "</body></html>")
    errors = browser.open(bad.as_uri())
    assert any("boom" in e for e in errors), errors
    assert any("undefinedFunction" in e for e in errors), errors
    assert any("missing.png" in e or "ERR_FILE_NOT_FOUND" in e for e in errors), errors
    good = tmp_path / "good.html"
    good.write_text('<!DOCTYPE html><html><head><link rel="icon" href="data:,"></head><body>ok</body></html>')
    assert browser.open(good.as_uri()) == []


def test_every_page_loads_without_console_errors(browser, site, shots):
    pages = sorted(site.glob("*.html"))
    assert len(pages) == 26
    failures = {}
    overflow = []
    for p in pages:
        errors = browser.open(p.as_uri())
        if errors:
            failures[p.name] = errors
        # wide tables scroll inside their box; the page itself never scrolls sideways
        width = browser.dt.call("Runtime.evaluate", returnByValue=True,
                                expression="document.documentElement.scrollWidth - window.innerWidth")
        if width["result"]["value"] > 1:
            overflow.append(p.name)
    assert not failures, failures
    assert not overflow, overflow
    # the provenance link of a number opens and scrolls to its block
    browser.open((site / "semnet_t2.html").as_uri() + "#prov-g-40-60")
    assert browser.dt.call("Runtime.evaluate", expression="document.querySelector(':target').id")["result"]["value"] \
        == "prov-g-40-60"
    for name, full in (("index", True), ("semnet_t2", False), ("semnet_t3", False), ("evssm_t12", True),
                       ("evssm_t11", False), ("audit", False), ("evssm_fig4", False)):
        browser.open((site / f"{name}.html").as_uri())
        png = browser.screenshot(shots / f"{name}.png", full_page=full)
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    print(f"screenshots in {shots}")


def test_table_renders_in_the_browser(browser, site):
    """The DOM chromium builds: every paper cell, the badge, and the claim verdicts are there."""
    browser.open((site / "semnet_t2.html").as_uri())
    ev = lambda js: browser.dt.call("Runtime.evaluate", expression=js, returnByValue=True)["result"]["value"]  # noqa: E731
    assert ev("document.querySelectorAll('#table-semnet_t2 span.pv').length") == 105
    assert ev("document.querySelectorAll('#table-semnet_t2 a.rv').length") == 45
    assert "not comparable" in ev("document.getElementById('scale-badge').textContent")
    assert ev("document.querySelector('#claim-full_beats_base_psnr_large').textContent").count("reproduced") >= 1
    # the table is wider than the window: it scrolls inside its own box
    assert ev("(function(){var s=document.querySelector('.scroll'); return s.scrollWidth > s.clientWidth;})()")


# ------------------------------------------------------------------ pdflatex
def test_every_tex_compiles(site, tmp_path):
    if PDFLATEX is None:
        pytest.skip("pdflatex is not installed (apt-get install -y texlive-latex-base texlive-latex-recommended)")
    texs = sorted((site / "latex").glob("*.tex"))
    assert len(texs) == 10
    for tex in texs:
        shutil.copy(tex, tmp_path / tex.name)
        r = subprocess.run([PDFLATEX, "-interaction=nonstopmode", "-halt-on-error", tex.name],
                           cwd=tmp_path, capture_output=True, text=True, timeout=120)
        log = r.stdout[-3000:]
        assert r.returncode == 0, f"{tex.name}:\n{log}"
        pdf = tmp_path / tex.with_suffix(".pdf").name
        assert pdf.read_bytes()[:5] == b"%PDF-"
        assert "Overfull \\hbox" not in (tmp_path / tex.with_suffix(".log").name).read_text(errors="replace"), tex.name
