"""`make ui` as a process for the tests: started in its own session, waited for, stopped."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import urllib.request
from contextlib import contextmanager

from workspace.settings import REPO_ROOT


@contextmanager
def make_ui(env: dict, port: int, command: tuple[str, ...] = ()):
    """Run `make ui` (its `setup` prerequisite taken as done: installing is `make test`'s own
    first step), or `command`, until it answers; yields (process, the URL it says to open)."""
    command = command or ("make", "--no-print-directory", "-o", "setup", "ui")
    server = subprocess.Popen(list(command),
                              cwd=REPO_ROOT, env={**env, "UI_PORT": str(port)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              start_new_session=True, text=True)
    said = []
    try:
        url = None
        while url is None:  # the sync's lines, then the address to open
            line = server.stdout.readline()
            assert line, "make ui ended before serving:\n" + "".join(said)
            said.append(line)
            found = re.search(r"open (http://\S+)", line)
            url = found.group(1) if found else None
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5):
                    break
            except OSError:
                assert server.poll() is None, "".join(said)
                assert time.monotonic() < deadline, "the MLflow UI did not answer within 120 s"
                time.sleep(0.5)
        server.said = "".join(said)
        yield server, url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
