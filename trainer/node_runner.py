#!/usr/bin/env python3
"""Work-queue runner of a sweep: trains grid lines from a storage queue until it is empty.

One runner is one Batch task (one iteration of the sweep pipeline's ForEach). It starts
Python once and trains many lines in-process with main.py's training and publishing,
which sits beside it (both are copied flat onto the node). For each message of
`<sweep>-work`:

1. receive it with a visibility timeout; renew the visibility while training runs longer
   than half of it, so a slow line is not handed to a second runner;
2. train and publish (manifest last, recording the sweep id and line);
3. report the result, then delete the message.

Reports (results and failures) are JSON lines the runner appends to an append blob of its
own, `<prefix>/sweeps/<sweep>/reports/<runner>-<random>.jsonl` in the container it publishes
to: one Append Block per report, which the service commits whole or not at all; the
collector of `python -m adf sweep` reads each blob on from where it stopped (adf/sweep.py).
A runner that dies leaves its message invisible until the timeout; another runner then
trains the line again (at least once; readers count a line's first complete run). A
message received more than --max-attempts times is reported failed with its last error. The runner stops as soon as every line of the sweep is accounted for (done or
failed): `sweep start` marks the work queue with the number of lines once all are queued,
and a line's message is deleted only after its result or failure is posted, so an empty
marked queue means done + failed == total. A queue without the mark (lines queued by hand,
or still being queued) is left once it has been empty for --grace-period seconds; messages
in flight count as not empty either way. It writes outputs.json for ADF's customOutput.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import main as trainer  # noqa: E402  (main.py is copied beside this file)

EXIT_STORAGE = trainer.EXIT_STORAGE
OUTPUT_LINES_MAX = 2000  # keeps outputs.json far below ADF's 2 MB customOutput limit
# Azure Queue Storage takes a visibility timeout of 1 s to 7 days on Get Messages (0 s to
# 7 days on Update Message): https://learn.microsoft.com/rest/api/storageservices/get-messages
MAX_VISIBILITY_SECONDS = 7 * 24 * 3600
MAX_GRACE_SECONDS = 3600  # idle that long after the queue empties; more only keeps nodes up


def _seconds_between(low: float, high: float):
    """An argparse type: a finite number of seconds in [low, high] (main.py's wording)."""
    def check(text: str) -> float:
        value = trainer._number(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low:g} and {high:g}, got {text}")
        return value
    return check

# Work-queue metadata `sweep start` sets once every line is queued: the sweep's line count
# (the same name as workspace/queues.py's QUEUED_METADATA; this file runs alone on the node).
QUEUED_METADATA = "sweeplines"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="node_runner.py",
        description="Train sweep lines from a storage queue until it is empty (one Batch task).",
        epilog="exit codes: 0 the queue is empty, 3 the queue service is unreachable.")
    p.add_argument("--sweep-id", required=True, help="Sweep id; its work queue is <id>-work.")
    p.add_argument("--queue-url", required=True, metavar="URL",
                   help="Queue endpoint, e.g. https://<account>.queue.core.windows.net.")
    p.add_argument("--iris-csv", default="iris_csv.csv", metavar="PATH")
    p.add_argument("--containerName", "--container-name", dest="container_name", required=True,
                   metavar="CONTAINER[/PREFIX]", help="Where models are published.")
    p.add_argument("--account-url", default="", metavar="URL",
                   help="Blob endpoint (managed identity); empty: the connection string of "
                   f"${trainer.CONNECTION_STRING_ENV}.")
    p.add_argument("--client-id", default="", metavar="ID",
                   help="Client id of the pool's user-assigned managed identity.")
    p.add_argument("--datastore-name", default="workspaceblobstore")
    p.add_argument("--max-attempts", type=trainer._positive_int, default=3,
                   help="Receives of one line before it is reported failed.")
    p.add_argument("--visibility-timeout", type=trainer._int_between(1, MAX_VISIBILITY_SECONDS),
                   default=300, metavar="SECONDS", help="How long a received line stays hidden "
                   "(1 s to 7 days, the queue service's range); renewed at half of it while "
                   "training.")
    p.add_argument("--grace-period", type=_seconds_between(0, MAX_GRACE_SECONDS), default=30.0,
                   metavar="SECONDS", help="Stop once the work queue has been empty this long "
                   "(without the line count `sweep start` marks it with; with it, stop once it "
                   f"is empty; at most {MAX_GRACE_SECONDS}).")
    p.add_argument("--poll-interval", type=_seconds_between(0.01, 60), default=1.0,
                   metavar="SECONDS")
    p.add_argument("--runner-id", default=os.environ.get("AZ_BATCH_TASK_ID")
                   or f"{socket.gethostname()}-{os.getpid()}")
    p.add_argument("--outputs-json", default="outputs.json", metavar="PATH")
    return p


def log(text: str) -> None:
    print(f"[runner] {text}", flush=True)


# ----------------------------------------------------------------------------- queues


def _credential(args):
    """Locally the account key of the task's connection string; on Batch the pool identity."""
    connection_string = os.environ.get(trainer.CONNECTION_STRING_ENV, "")
    if connection_string and not args.account_url:
        parts = dict(p.split("=", 1) for p in connection_string.split(";") if "=" in p)
        return {"account_name": parts.get("AccountName"), "account_key": parts.get("AccountKey")}
    return trainer.storage_credential(args.client_id or None)  # only that identity


def connect_work_queue(args):
    """The sweep's work queue."""
    from azure.storage.queue import ExponentialRetry, QueueServiceClient

    # Short client retries (the storage default waits 15 s and more between tries); longer
    # outages are ridden out by receive()'s own backoff.
    retry = ExponentialRetry(initial_backoff=0.5, increment_base=2, retry_total=3)
    service = QueueServiceClient(args.queue_url, credential=_credential(args),
                                 retry_policy=retry, connection_timeout=5)
    return service.get_queue_client(f"{args.sweep_id}-work")


class Lease:
    """Keeps a received message invisible while its line trains (renewed at half-time)."""

    def __init__(self, queue, message, visibility_timeout: int):
        self.queue, self.message, self.timeout = queue, message, visibility_timeout
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._renew, daemon=True)

    def __enter__(self) -> "Lease":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        self.thread.join()

    def _renew(self) -> None:
        while not self.stopped.wait(self.timeout / 2):
            try:
                with self.lock:
                    renewed = self.queue.update_message(self.message,
                                                        visibility_timeout=self.timeout)
                    self.message.pop_receipt = renewed.pop_receipt
            except Exception as exc:  # the next renewal (or another runner) takes over
                log(f"could not renew the visibility of message {self.message.id}: {exc}")

    def update(self, **kwargs) -> None:
        self.stopped.set()  # the update changes the pop receipt: no renewal after it
        with self.lock:
            self.queue.update_message(self.message, **kwargs)

    def delete(self) -> None:
        self.stopped.set()
        with self.lock:
            self.queue.delete_message(self.message)


class Claims:
    """One marker blob per completed line, `<prefix>/sweeps/<sweep>/line-<n>.json`, written
    once (never overwritten): a line that comes back after its runner died is not trained
    again, and of two runners that both finished it, the second withdraws its manifest, so
    a line is published complete once."""

    def __init__(self, args):
        argv = ["--iris-csv", args.iris_csv, "--containerName", args.container_name]
        if args.account_url:
            argv += ["--account-url", args.account_url, "--client-id", args.client_id]
        self.client = trainer.connect_container(trainer.build_parser().parse_args(argv))
        _, prefix = trainer.split_container(args.container_name)
        self.stem = "/".join(p for p in (prefix, "sweeps", args.sweep_id) if p)

    def name(self, line: int) -> str:
        return f"{self.stem}/line-{line}.json"

    def find(self, line: int) -> dict | None:
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        try:
            return json.loads(self.client.download_blob(self.name(line)).readall())
        except ResourceNotFoundError:
            return None
        except AzureError as exc:  # unknown: train it (at least once; counted once)
            log(f"could not read the claim of line {line}: {trainer._short(exc)}")
            return None

    def claim(self, result: dict) -> dict:
        """The line's result: ours if we finished first, else the first one (ours withdrawn)."""
        from azure.core.exceptions import AzureError, ResourceExistsError

        try:
            self.client.upload_blob(self.name(result["line"]), json.dumps(result),
                                    overwrite=False)
            return result
        except ResourceExistsError:
            first = self.find(result["line"])
            if first is None:
                return result
            try:  # without its manifest, our copy is an incomplete run that readers ignore
                self.client.delete_blob(result["manifestPath"])
            except AzureError as exc:
                log(f"could not withdraw run {result['runId']}: {trainer._short(exc)}")
            log(f"line {result['line']} was completed first by run {first['runId']}; "
                f"run {result['runId']} withdrawn")
            return first
        except AzureError as exc:
            log(f"could not claim line {result['line']}: {trainer._short(exc)}")
            return result


class Reports:
    """This runner's reports, appended to its own append blob (created at the first): a
    result or failure is one JSON line, {"kind": "results"|"failures", "body": {...}}, in
    one Append Block. A block the client sends again after a lost answer may be there twice:
    the collector counts a line once."""

    def __init__(self, claims: Claims, runner_id: str):
        import re
        import secrets

        safe = re.sub(r"[^A-Za-z0-9._-]", "-", runner_id)[:100]
        self.blob = claims.client.get_blob_client(
            f"{claims.stem}/reports/{safe}-{secrets.token_hex(4)}.jsonl")
        self.created = False

    def post(self, kind: str, body: dict) -> None:
        if not self.created:
            self.blob.create_append_blob()
            self.created = True
        self.blob.append_block((json.dumps({"kind": kind, "body": body}) + "\n").encode())


# ----------------------------------------------------------------------------- one line


def train_line(args, body: dict, workdir: Path) -> dict:
    """Train and publish one grid line in-process; returns main.py's outputs."""
    argv = ["--iris-csv", args.iris_csv, "--containerName", args.container_name,
            "--datastore-name", args.datastore_name,
            "--outputs-json", str(workdir / f"line-{body['line']}.json")]
    if args.account_url:
        argv += ["--account-url", args.account_url, "--client-id", args.client_id]
    for key, value in sorted(body["params"].items()):
        argv += [f"--{key.replace('_', '-')}", str(value)]
    parser = trainer.build_parser()
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            line_args = parser.parse_args(argv)
    except SystemExit:
        said = captured.getvalue().strip().splitlines()
        raise trainer.TrainerError(said[-1] if said else f"bad trainer options: {argv}")
    line_args.manifest_extra = {"sweep": {"id": args.sweep_id, "line": body["line"]}}
    line_args.run_name = f"line-{body['line']}"  # a child of the sweep's run (workspace/tracking.py)
    line_args.mlflow_dir = workdir
    return trainer.run(line_args)


def process(args, work, reports: Reports, claims: Claims, message, stats: dict,
            workdir: Path) -> None:
    body = json.loads(message.content)
    line, attempt = body["line"], message.dequeue_count
    if attempt > 1 and _already_done(work, reports, claims, message, line):
        return
    if attempt > args.max_attempts:
        error = body.get("last_error") or (f"the runner training it stopped {attempt - 1} "
                                           "time(s) without reporting")
        _reported(lambda: _fail(args, work, reports, message, body, error, attempt - 1, stats),
                  line)
        return
    log(f"line {line} attempt {attempt}: training {body['params']}")
    started = time.perf_counter()
    with Lease(work, message, args.visibility_timeout) as lease:
        try:
            outputs = train_line(args, body, workdir)
        except Exception as exc:  # any error of a line is recorded, never fatal to the runner
            error = str(exc) if isinstance(exc, trainer.TrainerError) \
                else f"{type(exc).__name__}: {exc}"
            log(f"line {line} attempt {attempt} failed: {error}")
            _reported(lambda: _retry_or_fail(args, work, reports, message, body, error,
                                             attempt, stats, lease), line)
            return
        trained = time.perf_counter() - started
        result = claims.claim({
            "line": line, "params": body["params"], "runId": outputs["runId"],
            "manifestPath": outputs["manifestPath"], "metrics": outputs["metrics"],
            "seconds": round(trained, 3), "attempt": attempt, "runner": args.runner_id,
            "finished": round(time.time(), 3)})
        if not _reported(lambda: (reports.post("results", result), lease.delete()), line):
            return
    stats["done"].append({"line": line, "runId": result["runId"], "seconds": round(trained, 3)})
    stats["train_seconds"] += trained
    stats["post_seconds"] += time.perf_counter() - started - trained
    log(f"line {line} done: run {result['runId']} accuracy "
        f"{result['metrics']['test_accuracy']:.3f} in {trained:.1f} s")


def _already_done(work, reports: Reports, claims: Claims, message, line: int) -> bool:
    """A line back from a runner that died after completing it: report, do not retrain."""
    first = claims.find(line)
    if first is None:
        return False
    log(f"line {line} was completed already by run {first['runId']}; reporting it")
    _reported(lambda: (reports.post("results", first), work.delete_message(message)), line)
    return True


def _reported(post, line: int) -> bool:
    """Report and update the queue; if storage fails, the message comes back by itself
    after its visibility timeout and the line is taken again (at least once)."""
    from azure.core.exceptions import AzureError

    try:
        post()
        return True
    except AzureError as exc:
        log(f"storage unreachable while reporting line {line}; it will be taken "
            f"again after its visibility timeout: {trainer._short(exc)}")
        return False


def _retry_or_fail(args, work, reports, message, body, error, attempt, stats, lease) -> None:
    if attempt >= args.max_attempts:
        lease.stopped.set()
        _fail(args, work, reports, message, body, error, attempt, stats, lease)
    else:  # visible again at once, carrying its error
        lease.update(content=json.dumps({**body, "last_error": error}), visibility_timeout=0)


def _fail(args, work, reports, message, body, error, attempts, stats, lease=None) -> None:
    reports.post("failures", {"line": body["line"], "params": body["params"], "error": error,
                              "attempts": attempts, "runner": args.runner_id})
    (lease.delete() if lease else work.delete_message(message))
    stats["failed"].append({"line": body["line"], "error": error})
    log(f"line {body['line']} failed after {attempts} attempt(s): {error}")


# ----------------------------------------------------------------------------- loop


def receive(args, work):
    """The next message or None; backs off while the queue service is unreachable."""
    from azure.core.exceptions import AzureError, ResourceNotFoundError

    delay, deadline = args.poll_interval, time.monotonic() + max(120.0, args.grace_period)
    while True:
        try:
            # No client retries (retry_total=0): this loop's backoff rides out an outage and
            # says so at once; the client's retries would first wait about 15 s in silence.
            return next(iter(work.receive_messages(max_messages=1, retry_total=0,
                                                   visibility_timeout=args.visibility_timeout)),
                        None)
        except ResourceNotFoundError:
            raise trainer.TrainerError(f"Queue '{work.queue_name}' does not exist; start the "
                                       "sweep with `python -m adf sweep start`.", EXIT_STORAGE)
        except AzureError as exc:
            if time.monotonic() > deadline:
                raise trainer.TrainerError(f"The queue service is unreachable: {exc}",
                                           EXIT_STORAGE)
            log(f"queue service unreachable, retrying in {delay:.1f} s: {trainer._short(exc)}")
            time.sleep(delay)
            delay = min(delay * 2, 5)


def queue_state(work) -> tuple[bool, int | None]:
    """(no message left, counting those in flight; the sweep's line count if every line was
    queued). The service's count is "not lower than the actual number of messages in the
    queue, but could be higher" (Get Queue Metadata, x-ms-approximate-messages-count), so
    0 means empty. Unknown while the service is unreachable: not empty."""
    from azure.core.exceptions import AzureError

    try:
        properties = work.get_queue_properties()
    except AzureError:
        return False, None
    lines = (properties.metadata or {}).get(QUEUED_METADATA)
    return properties.approximate_message_count == 0, int(lines) if lines else None


def run(args) -> dict:
    work = connect_work_queue(args)
    claims = Claims(args)
    reports = Reports(claims, args.runner_id)
    stats = {"done": [], "failed": [], "receive_seconds": 0.0, "train_seconds": 0.0,
             "post_seconds": 0.0}
    idle_since = None
    with tempfile.TemporaryDirectory(prefix="sweep-runner-") as tmp:
        while True:
            asked = time.perf_counter()
            message = receive(args, work)
            if message is not None:
                stats["receive_seconds"] += time.perf_counter() - asked
                idle_since = None
                process(args, work, reports, claims, message, stats, Path(tmp))
                continue
            idle_since = idle_since or time.monotonic()
            empty, lines = queue_state(work)
            if empty and lines is not None:
                log(f"all {lines} line(s) of the sweep are accounted for (done or failed); "
                    "stopping")
                break
            if empty and time.monotonic() - idle_since >= args.grace_period:
                log(f"the work queue has been empty for {args.grace_period:g} s; stopping")
                break
            time.sleep(args.poll_interval)
    return stats


def write_outputs(args, stats: dict, seconds: float) -> None:
    trainer.write_outputs(args.outputs_json, {
        "sweepId": args.sweep_id, "runner": args.runner_id,
        "done": len(stats["done"]), "failed": len(stats["failed"]),
        "lines": (stats["done"] + stats["failed"])[:OUTPUT_LINES_MAX],
        "seconds": {"total": round(seconds, 3), "receive": round(stats["receive_seconds"], 3),
                    "train": round(stats["train_seconds"], 3),
                    "post": round(stats["post_seconds"], 3)}})


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        # SystemExit unwinds: no half-published line; its message comes back after its timeout
        signal.signal(signum, trainer._stop_on_signal)
    started = time.perf_counter()
    log(f"{args.runner_id} takes lines of sweep {args.sweep_id}")
    try:
        stats = run(args)
        write_outputs(args, stats, time.perf_counter() - started)
    except trainer.TrainerError as exc:
        print(f"[runner] error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    log(f"queue empty: {len(stats['done'])} line(s) done, {len(stats['failed'])} failed by "
        f"this runner in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
