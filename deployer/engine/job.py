"""The job runner: one batch scoring job, run detached as `python -m deployer.engine <job dir>`.

Semantics (Azure ML's, for MLflow model deployments):
- the input is a file or the top-level files of a folder, local or in the datastore
  (`azureml://datastores/<ds>/paths/<p>`, read from Azurite);
- files are grouped into mini-batches of `mini_batch_size`, in name order;
- `instance_count × max_concurrency_per_instance` worker processes (never more than there
  are pieces of work); one process loads the model itself, several are forked from this
  runner after it has loaded the model once;
- with several processes, each file of a mini-batch is a piece of work and a large CSV
  file is cut into line-aligned byte ranges; a mini-batch succeeds when all its pieces do,
  and its parts are appended in order (the timeout applies to each piece);
- a mini-batch fails when one of its files fails or when it runs longer than
  `retry_settings.timeout` (its process is killed and replaced); a failed mini-batch is
  retried `max_retries` times; the files of a mini-batch that still fails count as failed;
- when more files have failed than `error_threshold` (-1: never) the job fails;
- successful mini-batches are appended to `predictions.csv` (`row,prediction,file_name`, no
  header) in mini-batch order, so the output is deterministic and in input order per file.
The output and the logs are uploaded to the datastore under `batch-jobs/<job>/`.

The runner owns the input, the plans, the progress and the output; which piece runs next
and what a failure means is the ledger's (`ledger`), the processes are the pool's (`pool`).
"""
from __future__ import annotations

import collections
import contextlib
import functools
import multiprocessing
import os
import shutil
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from deployer.azureml_rules import DEPLOYMENT_DEFAULTS
from deployer.engine.ledger import FAILED, RETRY, Ledger, Succeeded
from deployer.engine.lifecycle import INPUT_LIST, name_files_not_in_output
from deployer.engine.messages import Done, Exited, Failed, LoadFailed, Task, TimedOut
from deployer.engine.model import load_model
from deployer.engine.pool import PoolError, Worker, WorkerPool
from deployer.engine.processes import ForkedProcess
from deployer.engine.reader import folder_files, not_an_input_file
from workspace.processes import ProcessId
from deployer.engine.records import (append_user_error, now, read_record, write_overview,
                                     write_record)
from deployer.engine.signature import read_signature
from workspace.errors import ProjectError

OUTPUT_NAME = "score"
DATASTORE_JOBS_PREFIX = "batch-jobs"
# A job that did not complete (canceled, failed) uploads its logs within this time or not
# at all: a runner told to stop must stop even while the datastore does not answer.
STOP_PUBLISH_SECONDS = 5.0


class JobError(Exception):
    """The job cannot run at all (bad input, unknown datastore, model not loadable)."""


class Cancelled(Exception):
    pass


@dataclass(frozen=True)
class ScoringSettings:
    """A job's settings; Azure ML's defaults for those its record leaves out."""

    mini_batch_size: int = DEPLOYMENT_DEFAULTS["mini_batch_size"]
    instance_count: int = DEPLOYMENT_DEFAULTS["instance_count"]
    max_concurrency_per_instance: int = DEPLOYMENT_DEFAULTS["max_concurrency_per_instance"]
    max_retries: int = DEPLOYMENT_DEFAULTS["max_retries"]
    timeout: float = DEPLOYMENT_DEFAULTS["timeout"]
    error_threshold: int = DEPLOYMENT_DEFAULTS["error_threshold"]
    output_action: str = DEPLOYMENT_DEFAULTS["output_action"]
    output_file_name: str = DEPLOYMENT_DEFAULTS["output_file_name"]
    logging_level: str = DEPLOYMENT_DEFAULTS["logging_level"]
    batch_rows: int = 65536

    @classmethod
    def from_dict(cls, data: dict) -> "ScoringSettings":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__ and v is not None}
        return cls(**known)

    @property
    def workers(self) -> int:
        return max(1, int(self.instance_count)) * max(1, int(self.max_concurrency_per_instance))


@dataclass
class _Progress:
    files_total: int = 0
    mini_batches_total: int = 0
    mini_batches_done: int = 0
    mini_batches_failed: int = 0
    files_failed: int = 0
    files_done: int = 0  # files of settled mini-batches, scored or failed
    rows_scored: int = 0
    rows_running: int = 0  # rows of mini-batches still running (progress display)
    retries: int = 0
    failed_files: list = field(default_factory=list)


def log_paths(job_dir: Path, node: int, process_no: int) -> tuple[Path, Path]:
    base = Path(job_dir) / "logs" / "user"
    return (base / "stdout" / f"node-{node}" / f"process{process_no:03d}.stdout.txt",
            base / "error" / f"node-{node}" / f"process{process_no:03d}.txt")


# ---------------------------------------------------------------------- input


def resolve_input(record: dict, job_dir: Path, datastore_factory) -> tuple[list[Path], list]:
    """The input files, local (datastore inputs are downloaded into the job folder), and
    the entries of an input folder that are not files it may read, as (name, reason):
    every top-level entry but a folder is either scored or named as failed."""
    uri = record["input"]
    if uri.startswith("azureml://"):
        return _download_datastore_input(uri, record, job_dir, datastore_factory), []
    path = Path(uri)
    if path.is_dir():
        files, refused = folder_files(path)
        if not files:
            raise JobError(f"Input folder '{uri}' has no files (only top-level files are read)"
                           + "".join(f"; {name}: {why}" for name, why in refused) + ".")
        return files, refused
    if path.is_file():
        return [path], []
    if path.exists() or path.is_symlink():
        raise JobError(f"Input '{uri}': {not_an_input_file(path, path.parent.resolve())}.")
    raise JobError(f"Input '{uri}' does not exist.")


def parse_datastore_uri(uri: str) -> tuple[str, str]:
    import re

    match = re.fullmatch(r"azureml://datastores/([^/]+)/paths/(.*)", uri)
    if not match:
        raise JobError(f"Input '{uri}' is not a datastore path; use "
                       "azureml://datastores/<datastore>/paths/<path>.")
    return match.group(1), match.group(2)


def _download_datastore_input(uri: str, record: dict, job_dir: Path, datastore_factory) -> list[Path]:
    name, path = parse_datastore_uri(uri)
    store = datastore_factory()
    if name != store.name:
        raise JobError(f"Input '{uri}' names datastore '{name}'; the local target has only "
                       f"'{store.name}'.")
    folder = path.rstrip("/")
    blobs = []
    if not uri.endswith("/") and folder and store.exists(folder):
        blobs = [folder]
    else:
        prefix = folder + "/" if folder else ""
        blobs = sorted(b.name for b in store.list(prefix) if "/" not in b.name[len(prefix):])
    if not blobs:
        raise JobError(f"Input '{uri}' has no files in datastore '{name}' (container "
                       f"'{store.container}'; only top-level files of a folder are read).")
    target = Path(job_dir) / "inputs"
    return [store.download_file(blob, target / blob.rsplit("/", 1)[-1]) for blob in blobs]


# ---------------------------------------------------------------------- runner


class JobRunner:
    def __init__(self, job_dir: Path, datastore_factory=None):
        self.job_dir = Path(job_dir)
        self.record = read_record(self.job_dir)
        self.settings = ScoringSettings.from_dict(self.record.get("settings", {}))
        self.datastore_factory = datastore_factory or self._datastore_from_record
        self.progress = _Progress()
        self.logs = self.job_dir / "logs"
        self.user_logs = self.logs / "user"
        self._last_write = 0.0
        self.timings: dict[str, float] = {}  # seconds per phase, in the record (job.json)
        self.publisher = None  # streams the output to the datastore while scoring
        self._store = None  # the datastore, once checked
        self.predicted = _PredictionCounts()

    def _datastore_from_record(self):
        from workspace.datastore import Datastore
        from workspace.settings import Settings

        ds = self.record["datastore"]
        settings = Settings(target="local", azurite_port=str(ds["port"]), container=ds["container"],
                            datastore_name=ds["name"])
        return Datastore.from_settings(settings)

    # -------------------------------------------------------------- record + logs

    def _save(self, force: bool = False, **changes) -> None:
        self.record.update(changes)
        p = self.progress
        self.record.update(files_total=p.files_total, files_failed=p.files_failed,
                           files_done=p.files_done,
                           rows_scored=p.rows_scored,
                           rows_in_progress=max(0, p.rows_running),
                           mini_batches_total=p.mini_batches_total,
                           mini_batches_done=p.mini_batches_done,
                           mini_batches_failed=p.mini_batches_failed, retries=p.retries,
                           failed_files=p.failed_files[:1000])
        if force or time.monotonic() - self._last_write > 0.2:
            write_record(self.job_dir, self.record)
            self._write_overview()
            self._last_write = time.monotonic()

    def _write_overview(self) -> None:
        write_overview(self.job_dir, self.record)

    def _user_error(self, line: str) -> None:
        append_user_error(self.job_dir, line)

    # -------------------------------------------------------------- main

    def run(self) -> dict:
        signal.signal(signal.SIGTERM, _raise_cancel)
        self.user_logs.mkdir(parents=True, exist_ok=True)
        (self.user_logs / "error.txt").touch()
        self._save(force=True, status="Running", started=now(), pid=os.getpid(),
                   runner=ProcessId.of(os.getpid()).to_record())
        started = time.monotonic()
        try:
            error = self._run()
            status = "Failed" if error else "Completed"
        except (JobError, PoolError) as exc:
            status, error = "Failed", str(exc)
        except Cancelled:
            status, error = "Canceled", "The job was canceled."
        except Exception as exc:  # noqa: BLE001 - recorded, never lost
            status, error = "Failed", f"The job runner failed: {type(exc).__name__}: {exc}"
            self._user_error(traceback.format_exc())
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the end is decided: finish it
        if error:
            self._user_error(f"Job failed: {error}" if status == "Failed" else error)
        if status != "Completed":
            why = "the job was canceled" if status == "Canceled" else \
                f"the job failed ({error.split(';')[0].rstrip('.')})"
            name_files_not_in_output(self.job_dir, self.progress.failed_files, why)
        self.record.update(status="Finalizing",
                           predictions=self.predicted.as_dict() if status == "Completed" else None)
        try:
            publishing = time.monotonic()
            if status == "Completed":
                self._publish(complete=True)
            else:  # a job told to stop does not wait on storage that does not answer
                _within(STOP_PUBLISH_SECONDS, functools.partial(self._publish, complete=False))
            self.record["logs_datastore_path"] = \
                f"{DATASTORE_JOBS_PREFIX}/{self.record['name']}/logs/"
            self.timings["publish"] = round(time.monotonic() - publishing, 3)
        except Exception as exc:  # noqa: BLE001
            if status == "Completed":
                status, error = "Failed", f"Uploading the output to the datastore failed: {exc}"
                self._user_error(f"Uploading the output to the datastore failed: {exc}")
            else:
                self._user_error(f"The logs were not uploaded to the datastore ({exc}); they "
                                 f"are in {self.logs}.")
        if status != "Completed":  # only a complete output is ever shown
            self._output_path().unlink(missing_ok=True)
        for scratch in ("work", "inputs"):  # part files, the partial output, downloaded inputs
            shutil.rmtree(self.job_dir / scratch, ignore_errors=True)
        self._save(force=True, status=status, error=error or "", finished=now(), timings=self.timings,
                   duration_seconds=round(time.monotonic() - started, 3))
        return self.record

    def _output_path(self, partial: bool = False) -> Path:
        """outputs/<file>; while the job runs it is written as work/<file>.partial and moved
        to outputs/ only when the job has completed."""
        name = self.settings.output_file_name
        return self.job_dir / "work" / f"{name}.partial" if partial else self.job_dir / "outputs" / name

    def _run(self) -> str:
        files, unreadable = resolve_input(self.record, self.job_dir, self.datastore_factory)
        (self.job_dir / INPUT_LIST).write_text(
            "".join(f"{Path(f).name}\n" for f in files))
        size = max(1, int(self.settings.mini_batch_size))
        batches = [[str(f) for f in files[i:i + size]] for i in range(0, len(files), size)]
        columns = read_signature(Path(self.record["model_path"]))
        p = self.progress
        p.files_total, p.mini_batches_total = len(files) + len(unreadable), len(batches)
        for name, why in unreadable:  # an entry of the input folder it cannot read
            p.files_failed += 1
            p.files_done += 1
            p.failed_files.append({"file": name, "message": why})
            self._user_error(f"{name}: {why}")
        self._save(force=True)
        parts = self.job_dir / "work"
        parts.mkdir(parents=True, exist_ok=True)
        write_output = self.settings.output_action != "summary_only"
        with self._output_path(partial=True).open("wb") as out:
            error = self._schedule(batches, columns, parts, out if write_output else None)
        if not error:
            error = self._threshold_error() if unreadable else ""
        return error

    def _threshold_error(self) -> str:
        s, p = self.settings, self.progress
        if s.error_threshold >= 0 and p.files_failed > s.error_threshold:
            return (f"{p.files_failed} file(s) failed, more than error_threshold "
                    f"{s.error_threshold}; see logs/user/error.txt.")
        return ""

    def _schedule(self, batches, columns, parts: Path, out) -> str:
        """Score the mini-batches with the worker pool; the error that stopped the job
        early (error_threshold exceeded), or ""."""
        s = self.settings
        self._batches, self._stop_reason = batches, ""
        n = min(s.workers, sum(most_pieces(batch, s.workers) for batch in batches))
        _share_cores(n)
        plans: list[list] = []
        model = self._preload(n, batches, plans)
        start = functools.partial(self._start_process, model,
                                  [(c.name, c.type, c.required) for c in columns])
        pool = WorkerPool(n, s.max_concurrency_per_instance, start, s.timeout,
                          on_started=self._record_workers)
        ledger = None
        try:
            pool.start()
            if model is None:  # the process loads the model meanwhile
                self._check_output_store()
            if out is not None:  # after the first fork: the processes need none of its thread
                self._start_publisher()
            if not plans:  # planning reads large CSV files once; the process loads the model
                plans.extend(plan_minibatch(batch, s.workers) for batch in batches)
            ledger = Ledger(plans, s.max_retries)
            scoring = time.monotonic()
            self._score(pool, ledger, parts, out)
            self.timings["scoring"] = round(time.monotonic() - scoring, 3)
        finally:
            pool.stop(kill=ledger is None or not ledger.complete or bool(self._stop_reason))
            self.progress.rows_running = 0
            if out is not None:  # a job that stops early has no output: `run` says so
                out.flush()
        return self._stop_reason

    def _score(self, pool: WorkerPool, ledger: Ledger, parts: Path, out) -> None:
        """Until every mini-batch has settled: give idle workers the next pieces, act on
        what the workers say, write the mini-batches that succeeded in order."""
        while not ledger.complete and not self._stop_reason:
            pool.dispatch(self._tasks(ledger, parts))
            for message in pool.poll():
                self._handle(message, ledger)
            for result in ledger.ready_to_write():
                if isinstance(result, Succeeded):
                    self._write_succeeded(result, out)
            self.progress.rows_running = pool.rows_in_progress
            self._save()

    @staticmethod
    def _tasks(ledger: Ledger, parts: Path):
        """The ledger's next pieces to run, as tasks for the workers (taken one at a time)."""
        while (task := ledger.next_task()) is not None:
            index, attempt, piece = task
            part = parts / _part_name(index, attempt, piece)
            yield Task(index, attempt, piece, ledger.plans[index][piece], str(part))

    def _preload(self, processes: int, batches, plans: list):
        """The model, loaded here when several processes are forked from this runner (the
        model is loaded once, not once per process on cores that are busy loading it too,
        and a replaced process starts at once); None when one process loads it itself."""
        if processes <= 1:
            return None
        model = self._load_model(batches, plans, self.settings.workers)
        # Forked processes share the runner's memory until they write to it; the
        # garbage collector would write to every object, so it leaves these alone.
        import gc

        gc.collect()
        gc.freeze()
        return model

    def _start_process(self, model, columns: list, worker: Worker) -> tuple:
        """A scoring process for a worker of the pool, and the runner's end of its socket:
        forked with the model loaded, or spawned to load it itself."""
        ctx = multiprocessing.get_context("fork" if model is not None else "spawn")
        parent, child = ctx.Pipe()
        stdout_path, error_path = log_paths(self.job_dir, worker.node, worker.process_no)
        # A process started again (after a crash or a timeout) is forked while the
        # publisher runs: between two of its uploads (no lock of it half-held). A
        # forked process closes what it does not own; a spawned one inherits nothing.
        quiet = self.publisher.quiescent() if self.publisher is not None \
            else contextlib.nullcontext(())
        args = (os.getpid(), child, self.record["model_path"], columns, str(stdout_path),
                str(error_path), self.settings.batch_rows, model)
        with quiet:
            if model is not None:  # keeps only its own socket: it dies with the runner
                process = ForkedProcess(_worker_entry, args, keep_fds=(child.fileno(),))
            else:
                process = ctx.Process(target=_worker_entry, daemon=True, args=args)
            process.start()
        child.close()
        return process, parent

    def _write_succeeded(self, result: Succeeded, out) -> None:
        """Append a successful mini-batch to the output (file and datastore) and count it."""
        if self.publisher is not None:
            self.publisher.mini_batch_succeeded(result.parts)
        _append_parts(result.parts, out)
        for per_file, per_class in result.stats:
            self.predicted.add(per_file, per_class)

    def _handle(self, message, ledger: Ledger) -> None:
        """Act on what the pool passes on from its workers."""
        if isinstance(message, Done):
            self._piece_done(message, ledger)
        elif isinstance(message, Failed):
            Path(message.part_path).unlink(missing_ok=True)
            self._attempt_failed(ledger, message.index, message.attempt, message.file_name,
                                 message.message)
        elif isinstance(message, LoadFailed):
            raise JobError(f"The model could not be loaded: {message.reason}; see logs/user/error/.")
        elif isinstance(message, Exited) and message.task is not None:
            task = message.task
            self._attempt_failed(ledger, task.index, task.attempt, "",
                                 f"the scoring process exited with code {message.code}")
        elif isinstance(message, TimedOut):
            task, seconds = message.task, message.seconds
            _, error_path = log_paths(self.job_dir, message.node, message.process_no)
            _append(error_path, f"mini-batch {task.index} attempt {task.attempt}: timed out after "
                    f"{seconds:g} s (retry_settings.timeout); the process was stopped.")
            self._attempt_failed(ledger, task.index, task.attempt, "",
                                 f"timed out after {seconds:g} s (retry_settings.timeout)")

    def _piece_done(self, done: Done, ledger: Ledger) -> None:
        if ledger.is_late(done.index, done.attempt):  # its mini-batch has settled
            Path(done.part_path).unlink(missing_ok=True)
            return
        if self.publisher is not None:
            self.publisher.part_written(Path(done.part_path))
        result = ledger.piece_done(done)
        if result is not None:
            self.progress.mini_batches_done += 1
            self.progress.rows_scored += result.rows
            self.progress.files_done += len(self._batches[done.index])

    def _attempt_failed(self, ledger: Ledger, index: int, attempt: int, file_name: str,
                        message: str) -> None:
        """Retry the mini-batch, or fail its files for good (and maybe the job)."""
        outcome, drop = ledger.attempt_failed(index, attempt, file_name, message)
        for part in drop:
            Path(part).unlink(missing_ok=True)
        p = self.progress
        if outcome == RETRY:
            p.retries += 1
            self._user_error(f"mini-batch {index} attempt {attempt} failed, retrying: "
                             f"{file_name + ': ' if file_name else ''}{message}")
        if outcome != FAILED:
            return
        p.mini_batches_failed += 1
        p.files_done += len(self._batches[index])
        for path in self._batches[index]:
            name = Path(path).name
            if name == file_name or not file_name:
                why = message
            else:
                why = f"not scored: its mini-batch {index} failed on '{file_name}'"
            p.files_failed += 1
            p.failed_files.append({"file": name, "message": why})
            self._user_error(f"{name}: {why}")
        self._stop_reason = self._threshold_error()

    def _load_model(self, batches, plans: list, workers: int):
        """Load the model in this process while a thread plans the mini-batches (reading
        large CSV files) and checks the datastore; a model that cannot be loaded fails the
        job."""
        import threading

        failures: list[BaseException] = []

        def prepare() -> None:
            try:
                plans.extend(plan_minibatch(batch, workers) for batch in batches)
                self._check_output_store()
            except BaseException as exc:  # noqa: BLE001 - raised after the load
                failures.append(exc)

        planner = threading.Thread(target=prepare, name="prepare", daemon=True)
        planner.start()
        started = time.monotonic()
        model_dir = self.record["model_path"]
        try:
            # The deployment checked this environment against the model's requirements.
            model = load_model(model_dir)
        except Exception as exc:  # noqa: BLE001 - the job fails with the reason
            _, error_path = log_paths(self.job_dir, 0, 0)
            _append(error_path, f"loading the model from {model_dir} failed:\n"
                    f"{traceback.format_exc()}")
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise JobError(f"The model could not be loaded: {type(exc).__name__}: {first}; "
                           "see logs/user/error/.")
        finally:
            planner.join()
        self.timings["model_load"] = round(time.monotonic() - started, 3)
        if failures:
            raise failures[0]
        print(f"model loaded in {self.timings['model_load']:.2f} s", flush=True)
        return model

    def _record_workers(self, pids: list[int]) -> None:
        """Name the scoring processes in the record (pid and start time): whoever finds
        the runner gone can stop exactly these."""
        self.record["workers"] = [ProcessId.of(pid).to_record() for pid in pids]
        self._save(force=True)

    def _output_blob(self) -> str:
        if self.record.get("output_blob"):  # invoke --output-path: a file of the datastore
            return self.record["output_blob"]
        return (f"{DATASTORE_JOBS_PREFIX}/{self.record['name']}/named-outputs/{OUTPUT_NAME}/"
                f"{self.settings.output_file_name}")

    def _check_output_store(self) -> None:
        """The datastore the output and logs go to must be there: fail the job now, not
        after scoring."""
        if self._store is not None:
            return
        try:
            store = self.datastore_factory()
            store.check()
        except ProjectError as exc:
            raise JobError(f"{exc}") from exc
        self._store = store

    def _start_publisher(self) -> None:
        """Stream the output to the datastore as parts are written; if that cannot start,
        the whole file is uploaded at the end instead."""
        from deployer.engine.publish import OutputPublisher

        try:
            store = self._store or self.datastore_factory()
            self.publisher = OutputPublisher(store.block_upload(self._output_blob()))
        except Exception as exc:  # noqa: BLE001 - the upload at the end still runs
            self._user_error(f"streaming the output to the datastore could not start ({exc}); "
                             "it is uploaded when the job ends.")

    def _publish(self, complete: bool) -> None:
        """Upload the output (only of a completed job: the partial output of another is
        abandoned, never committed) and the logs to the datastore under batch-jobs/<job>/."""
        from deployer.engine.publish import PublishError

        self._write_overview()  # before any request: this may run past a stopping runner
        store = self._store or self.datastore_factory()
        prefix = f"{DATASTORE_JOBS_PREFIX}/{self.record['name']}"
        partial, output = self._output_path(partial=True), self._output_path()
        publisher, self.publisher = self.publisher, None
        if complete and partial.is_file():
            output.parent.mkdir(parents=True, exist_ok=True)
            partial.replace(output)
            name = self._output_blob()
            streamed = False
            if publisher is not None:
                try:
                    size = publisher.finish()
                    streamed = size == output.stat().st_size
                    if not streamed:
                        self._user_error(f"the streamed output has {size} bytes, the output file "
                                         f"{output.stat().st_size}; uploading the whole file.")
                except PublishError as exc:
                    self._user_error(f"streaming the output to the datastore failed ({exc}); "
                                     "uploading the whole file.")
            if not streamed:  # as blocks like the stream's, which it may have left staged
                upload = store.block_upload(name)
                upload.commit(upload.stage_file(output))
            self.record.update(output_datastore_path=name, output_bytes=output.stat().st_size)
        elif publisher is not None:
            publisher.abandon()
        for path in sorted(self.logs.rglob("*")):
            if path.is_file():
                store.upload_file(path, f"{prefix}/{path.relative_to(self.job_dir).as_posix()}")


class _PredictionCounts:
    """Rows per prediction and per input file of the successful mini-batches, as written
    to the output (the summary `invoke` prints, without reading the file again)."""

    def __init__(self):
        self.rows = 0
        self.per_class: collections.Counter = collections.Counter()
        self.per_file: dict[str, int] = {}  # input order

    def add(self, per_file: dict, per_class: dict) -> None:
        for name, rows in per_file.items():
            if not rows:  # a file with no data rows has no line in the output
                continue
            self.per_file[name] = self.per_file.get(name, 0) + rows
            self.rows += rows
        self.per_class.update(per_class)

    def as_dict(self) -> dict:
        return {"rows": self.rows, "per_class": dict(sorted(self.per_class.items())),
                "per_file": self.per_file}


def plan_minibatch(files: list[str], workers: int) -> list[list]:
    """The pieces of a mini-batch that scoring processes can run side by side: with one
    process the whole mini-batch is one piece; with more, each file is a piece and a large
    CSV file is cut into line-aligned byte ranges (`(path, start, end, first row)`) of
    about PIECE_BYTES, at least one per process, so that a single big file does not leave
    a core idle. Parts are appended in piece order, which is input order."""
    if workers <= 1:
        return [list(files)]
    from deployer.engine.reader import CSV_EXTENSIONS, split_csv

    tasks = []
    for file in files:
        ranges = split_csv(Path(file), _pieces_for(Path(file), workers)) \
            if Path(file).suffix.lower() in CSV_EXTENSIONS else [(0, None, 0)]
        if len(ranges) == 1:
            tasks.append([file])
        else:
            tasks.extend([[(file, start, end, first)] for start, end, first in ranges])
    return tasks


def _pieces_for(path: Path, workers: int) -> int:
    from deployer.engine.reader import PIECE_BYTES

    try:
        size = path.stat().st_size
    except OSError:
        return 1
    return max(workers, -(-size // PIECE_BYTES))


def most_pieces(files: list[str], workers: int) -> int:
    """An upper bound of len(plan_minibatch(files, workers)), from file sizes alone."""
    if workers <= 1:
        return 1
    from deployer.engine.reader import CSV_EXTENSIONS, MIN_PIECE_BYTES

    def pieces(file: str) -> int:
        path = Path(file)
        try:
            large = path.suffix.lower() in CSV_EXTENSIONS and path.stat().st_size >= 2 * MIN_PIECE_BYTES
        except OSError:
            return 1
        return _pieces_for(path, workers) if large else 1

    return sum(pieces(f) for f in files)


def _share_cores(processes: int) -> None:
    """Give each scoring process its share of the cores for numeric libraries' thread pools
    (unless set already), keeping a share for uploading the output: threads beyond that
    only contend (an idle BLAS thread spins), and the upload runs while they score."""
    threads = str(max(1, (os.cpu_count() or 1) // (max(1, processes) + 1)))
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, threads)


def _part_name(index: int, attempt: int, piece: int) -> str:
    return f"minibatch{index:06d}.attempt{attempt}.piece{piece:05d}.csv"


def _append_parts(paths: list[str], out) -> None:
    """Append a finished mini-batch's part files to the output (if any), then drop them."""
    for path in paths:
        if out is not None and Path(path).is_file():
            out.flush()
            with open(path, "rb") as part:
                _copy_to(part, out)
        Path(path).unlink(missing_ok=True)
    if out is not None:
        out.flush()


def _copy_to(source, target) -> None:
    """Append an open file to another in the kernel (sendfile) where it can."""
    size = os.fstat(source.fileno()).st_size
    try:
        sent = 0
        while sent < size:
            n = os.sendfile(target.fileno(), source.fileno(), sent, size - sent)
            if n == 0:
                break
            sent += n
        if sent == size:
            return
        source.seek(sent)
    except (AttributeError, OSError):
        source.seek(0)
    shutil.copyfileobj(source, target, 1 << 20)


def _append(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        handle.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n")


def _raise_cancel(signum, frame):
    raise Cancelled()


class _TooLong(Exception):
    pass


def _within(seconds: float, work) -> None:
    """Run work in a thread and wait for it at most `seconds`; raise what it raised, or
    _TooLong (the thread is left to die with the process: a request to storage that does
    not answer waits for the client's read timeout, retried, which is minutes)."""
    import threading

    failures: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as exc:  # noqa: BLE001 - raised in the caller
            failures.append(exc)

    thread = threading.Thread(target=run, name="within", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise _TooLong(f"the datastore did not answer within {seconds:g} s")
    if failures:
        raise failures[0]


def _worker_entry(parent_pid: int, *args):
    from deployer.engine.worker import worker_main

    from workspace.processes import die_with_parent

    die_with_parent(parent_pid)  # a spawned process too: nothing outlives the runner
    worker_main(*args)
    # Its work is written and reported: exit without tearing down an interpreter that has
    # loaded MLflow and the model (about a second, which the runner waits for at the end).
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(0)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m deployer.engine <job dir>", file=sys.stderr)
        return 2
    record = JobRunner(Path(argv[0])).run()
    return 0 if record["status"] == "Completed" else 1
