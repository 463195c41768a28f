"""Headless Chromium (Debian's `chromium`, installed by `make test`) for the browser tests:
one-shot runs (`--dump-dom`, `--screenshot`) and a page driven over the DevTools protocol
(for a page that needs a click, e.g. MLflow's runs table)."""
from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def locate_chromium() -> str:
    """chromium's path; a missing browser fails the test unless SKIP_BROWSER_TESTS=1."""
    path = shutil.which("chromium")
    if path:
        return path
    if os.environ.get("SKIP_BROWSER_TESTS") == "1":
        pytest.skip("SKIP_BROWSER_TESTS=1: the browser tests are skipped")
    pytest.fail("chromium is not installed: run scripts/ensure-chromium.sh "
                "(or set SKIP_BROWSER_TESTS=1 to skip the browser tests)", pytrace=False)


def _command(chromium: str, workdir: Path, *args: str) -> tuple[list[str], dict]:
    workdir.mkdir(parents=True, exist_ok=True)
    # Its own HOME: chromium also writes outside the profile (~/.pki, crash reports).
    return ([chromium, *FLAGS, f"--user-data-dir={workdir / 'profile'}", *args],
            {**os.environ, "HOME": str(workdir)})


def run_chromium(chromium: str, workdir: Path, url: str, *args: str) -> subprocess.CompletedProcess:
    command, env = _command(chromium, workdir, *args, url)
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, f"chromium exited {done.returncode}:\n{done.stderr[-3000:]}"
    return done


class Page:
    """One tab of a headless Chromium, driven over the DevTools protocol (aiohttp's
    websocket client): evaluate JavaScript, wait for a condition, take a screenshot."""

    def __init__(self, chromium: str, workdir: Path, width: int = 1400, height: int = 900):
        command, env = _command(chromium, workdir, "--remote-debugging-port=0",
                                f"--window-size={width},{height}", "about:blank")
        self.process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        port_file = workdir / "profile" / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.is_file() and port_file.read_text().count("\n") >= 1):
            assert self.process.poll() is None, "chromium exited at start"
            assert time.monotonic() < deadline, "chromium opened no DevTools port within 60 s"
            time.sleep(0.1)
        self.port = int(port_file.read_text().split()[0])
        self.loop = asyncio.new_event_loop()
        self.ids = iter(range(1, 1 << 30))
        self.socket = self.loop.run_until_complete(self._connect())

    async def _connect(self):
        import aiohttp

        self.session = aiohttp.ClientSession()
        async with self.session.get(f"http://127.0.0.1:{self.port}/json/list") as response:
            target = next(t for t in await response.json() if t["type"] == "page")
        return await self.session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0)

    def send(self, method: str, **params):
        return self.loop.run_until_complete(self._send(method, params))

    async def _send(self, method: str, params: dict):
        ident = next(self.ids)
        await self.socket.send_str(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads((await self.socket.receive()).data)
            if message.get("id") == ident:
                assert "error" not in message, message
                return message["result"]

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    def wait_for(self, expression: str, what: str, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while not self.evaluate(expression):
            assert time.monotonic() < deadline, f"the page did not show {what} within {seconds} s"
            time.sleep(0.25)

    def navigate(self, url: str) -> None:
        self.send("Page.enable")
        self.send("Page.navigate", url=url)

    def screenshot(self, path: Path) -> Path:
        data = self.send("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        async def _close():
            await self.socket.close()
            await self.session.close()

        try:
            self.loop.run_until_complete(_close())
        finally:
            self.loop.close()
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> "Page":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
