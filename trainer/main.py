#!/usr/bin/env python3
"""Train the Iris classifier and publish it as an MLflow run to blob storage.

This is the command the Azure Data Factory Custom activity runs on an Azure Batch node.
It is copied flat onto the node next to the data, so it imports no project package;
trainer/requirements.txt is everything it needs.

Publishing is atomic for readers: every artifact is uploaded first, and a manifest
(run id, metrics, sha256 of every file, data fingerprint) is written last. A model folder
without a manifest is incomplete and must be ignored.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import os
import signal
import sys
import tempfile
import time
import warnings
from pathlib import Path

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "iris-mlflow-run-manifest/v1"
CONNECTION_STRING_ENV = "AZURE_STORAGE_CONNECTION_STRING"
STORAGE_SCOPE = "https://storage.azure.com/.default"
OUTPUTS_MAX_BYTES = 2 * 1024 * 1024  # ADF's customOutput limit
# The fitted MLP keeps its optimizer state, a type skops does not trust by default.
SKOPS_TRUSTED_TYPES = ["sklearn.neural_network._stochastic_optimizers.SGDOptimizer"]

# The project's exit-code table (workspace.errors.ExitCode), repeated: the trainer is copied
# alone onto the node and imports no project package.
EXIT_BAD_INPUT = 2
EXIT_STORAGE = 3
EXIT_NOT_FOUND = 4
EXIT_ACCESS_DENIED = 8

EPILOG = """\
examples:
  # ADF Custom activity command (Azure, pool managed identity; no secret on the command line)
  python main.py --iris-csv iris_csv.csv --epochs 50 --lr 0.1 \\
      --account-url https://<account>.blob.core.windows.net \\
      --client-id <pool identity client id> --containerName "<container>/models"

  # Classic form with a connection string (prefer the AZURE_STORAGE_CONNECTION_STRING
  # environment variable, which keeps the key out of process listings and ADF JSON)
  python main.py --iris-csv iris_csv.csv --epochs 50 --lr 0.1 \\
      --connectionString "<connection string>" --containerName "<container>/models"

The model is published as <prefix>/<experiment_id>/<run_id>/artifacts/model/ (MLflow's
layout) with <prefix>/<experiment_id>/<run_id>/manifest.json written last; outputs.json in
the working directory becomes the ADF activity's customOutput.
exit codes: 0 success, 2 bad input or arguments, 3 storage unreachable or failing (after
  --storage-retries retries of transient errors), 4 the storage container does not exist,
  8 access denied (identity without a token or without a role on the storage account).
"""


class TrainerError(Exception):
    """A problem the user can fix; printed as one line, nothing is published."""

    def __init__(self, message: str, exit_code: int = EXIT_BAD_INPUT):
        super().__init__(message)
        self.exit_code = exit_code


# ----------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="main.py",
        description="Train an Iris classifier (scikit-learn, logged with MLflow) and publish "
        "the MLflow run to an Azure Blob Storage container, manifest last.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    data = p.add_argument_group("data and training")
    data.add_argument("--iris-csv", required=True, metavar="PATH",
                      help="CSV with a header row, numeric feature columns and a label column.")
    data.add_argument("--label-column", default="species", metavar="NAME",
                      help="Name of the class column (default: %(default)s).")
    data.add_argument("--epochs", type=_epochs, default=50,
                      help=f"Passes over the training data, i.e. SGD epochs, 1 to {MAX_EPOCHS} "
                      "(default: %(default)s).")
    data.add_argument("--lr", type=_learning_rate, default=0.1,
                      help=f"SGD learning rate, above 0 and at most {MAX_LEARNING_RATE:g} "
                      "(default: %(default)s).")
    data.add_argument("--test-size", type=_fraction, default=0.2, metavar="FRACTION",
                      help="Share of rows held out, stratified by class (default: %(default)s).")
    data.add_argument("--seed", type=_seed, default=42,
                      help=f"Seed for the split and the learner, 0 to {MAX_SEED} "
                      "(default: %(default)s).")
    data.add_argument("--min-rows", type=_positive_int, default=10,
                      help="Refuse data sets with fewer rows (default: %(default)s).")
    data.add_argument("--experiment-name", default="iris",
                      help="MLflow experiment name (default: %(default)s).")

    store = p.add_argument_group("storage (where the model is published)")
    store.add_argument("--containerName", "--container-name", dest="container_name",
                       required=True, metavar="CONTAINER[/PREFIX]",
                       help="Blob container and optional folder prefix, e.g. 'azureml/models'. "
                       "The container must exist.")
    store.add_argument("--connectionString", "--connection-string", dest="connection_string",
                       metavar="CS", default=None,
                       help=f"Storage connection string. Defaults to ${CONNECTION_STRING_ENV}. "
                       "Prefer --account-url with a managed identity.")
    store.add_argument("--account-url", metavar="URL",
                       help="Blob endpoint, e.g. https://<account>.blob.core.windows.net; "
                       "authenticates with DefaultAzureCredential (managed identity on Batch). "
                       "Empty means: use the connection string.")
    store.add_argument("--client-id", metavar="ID",
                       help="Client id of the pool's user-assigned managed identity "
                       "(with --account-url); only that identity is used.")
    store.add_argument("--datastore-name", default="workspaceblobstore",
                       help="Azure ML datastore that maps to the container, used in the "
                       "model path reported in outputs.json (default: %(default)s).")
    store.add_argument("--storage-retries", type=_non_negative_int, default=3, metavar="N",
                       help="Retries per storage request before giving up (default: %(default)s).")
    p.add_argument("--outputs-json", default="outputs.json", metavar="PATH",
                   help="Where to write the run summary read by ADF as customOutput "
                   "(default: %(default)s in the working directory).")
    return p


# Types of the options that take numbers. `python -m adf trigger` checks pipeline parameters
# with these same functions (through build_parser), so the two never disagree.
MAX_EPOCHS = 10_000          # far beyond what Iris needs; stops a typo from training for hours
MAX_LEARNING_RATE = 10.0
MAX_SEED = 2**32 - 1         # numpy's RandomState accepts 0..2**32-1


def _whole_number(text: str) -> int:
    try:
        return int(str(text).strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got '{text}'") from None


def _number(text: str) -> float:
    try:
        value = float(str(text).strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got '{text}'") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number, got '{text}'")
    return value


def _int_between(low: int, high: int):
    def check(text: str) -> int:
        value = _whole_number(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}, got {text}")
        return value
    return check


_positive_int = _int_between(1, 1_000_000)
_non_negative_int = _int_between(0, 100)
_epochs = _int_between(1, MAX_EPOCHS)
_seed = _int_between(0, MAX_SEED)


def _learning_rate(text: str) -> float:
    value = _number(text)
    if not 0 < value <= MAX_LEARNING_RATE:
        raise argparse.ArgumentTypeError(
            f"must be greater than 0 and at most {MAX_LEARNING_RATE:g}, got {text}")
    return value


def _fraction(text: str) -> float:
    value = _number(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


class Progress:
    """Prints one line per phase with its duration."""

    def __init__(self) -> None:
        self.started = time.perf_counter()

    def phase(self, name: str):
        return _Phase(name)

    def total(self) -> float:
        return time.perf_counter() - self.started


class _Phase:
    def __init__(self, name: str) -> None:
        self.name = name
        self.detail = ""

    def __enter__(self):
        self.t0 = time.perf_counter()
        print(f"[trainer] {self.name:<9} ...", flush=True)
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            took = time.perf_counter() - self.t0
            print(f"[trainer] {self.name:<9} done in {took:5.2f} s  {self.detail}", flush=True)
        return False


# ----------------------------------------------------------------------------- data


def load_dataset(path: str, label_column: str, min_rows: int):
    """Read and validate the CSV; returns (features DataFrame of float64, labels Series, sha256)."""
    import pandas as pd

    csv = Path(path)
    if not csv.is_file():
        raise TrainerError(f"Input file '{path}' not found (working directory {os.getcwd()}); "
                           "pass --iris-csv with the path of the Iris CSV.")
    raw = csv.read_bytes()
    try:
        frame = pd.read_csv(csv, dtype=str, keep_default_na=False, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise TrainerError(f"Input file '{path}' is empty; it needs a header row and data rows.")
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise TrainerError(f"Input file '{path}' is not a readable CSV: {str(exc).strip()}")
    frame.columns = [str(c).strip() for c in frame.columns]
    if label_column not in frame.columns:
        raise TrainerError(f"Input file '{path}' has no '{label_column}' column (columns: "
                           f"{', '.join(frame.columns)}); add it or pass --label-column.")
    feature_columns = [c for c in frame.columns if c != label_column]
    if not feature_columns:
        raise TrainerError(f"Input file '{path}' has no feature columns besides '{label_column}'.")
    if len(frame) < min_rows:
        raise TrainerError(f"Input file '{path}' has {len(frame)} data rows; at least {min_rows} "
                           "are needed to train and evaluate (see --min-rows).")
    labels = frame[label_column].str.strip()
    empty = labels.eq("")
    if empty.any():
        row = int(empty.idxmax())
        raise TrainerError(f"Input file '{path}' line {row + 2}: column '{label_column}' is empty.")

    features = pd.DataFrame(index=frame.index)
    for column in feature_columns:
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = values.isna()
        if bad.any():
            row = int(bad.idxmax())
            raise TrainerError(f"Input file '{path}' line {row + 2}: column '{column}' value "
                               f"{frame[column][row]!r} is not numeric; every feature must be a number.")
        features[column] = values.astype("float64")

    counts = labels.value_counts()
    if len(counts) < 2:
        raise TrainerError(f"Input file '{path}' has a single class ({counts.index[0]!r}) in "
                           f"'{label_column}'; a classifier needs at least two.")
    rare = counts[counts < 2]
    if len(rare):
        raise TrainerError(f"Input file '{path}': class {rare.index[0]!r} has only one row; each "
                           "class needs at least two for a stratified train/test split.")
    return features, labels, hashlib.sha256(raw).hexdigest()


# ----------------------------------------------------------------------------- training


def train_and_evaluate(features, labels, args, workdir: Path):
    """Fit the model, compute metrics and the confusion matrix PNG."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    n_classes = labels.nunique()
    n_test = max(n_classes, round(len(labels) * args.test_size))
    if len(labels) - n_test < n_classes:
        raise TrainerError(f"Input file '{args.iris_csv}' has too few rows ({len(labels)}) to hold "
                           f"out {n_test} test rows and still train on every class.")
    x_train, x_test, y_train, y_test = train_test_split(
        features, labels, test_size=n_test, stratify=labels, random_state=args.seed)

    # A small network trained by SGD: exactly --epochs passes at learning rate --lr
    # (n_iter_no_change=epochs turns off early stopping, so the cap is expected).
    model = make_pipeline(
        StandardScaler(),
        MLPClassifier(hidden_layer_sizes=(16,), solver="sgd", learning_rate_init=args.lr,
                      max_iter=args.epochs, n_iter_no_change=args.epochs,
                      random_state=args.seed),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x_train, y_train)

    predicted = model.predict(x_test)
    metrics = {
        "test_accuracy": float(accuracy_score(y_test, predicted)),
        "test_f1_macro": float(f1_score(y_test, predicted, average="macro")),
        "train_rows": float(len(y_train)),
        "test_rows": float(len(y_test)),
    }
    classes = list(model.classes_)
    matrix = confusion_matrix(y_test, predicted, labels=classes)
    png = workdir / "confusion_matrix.png"
    _plot_confusion_matrix(matrix, classes, png, metrics["test_accuracy"])
    return model, x_train, metrics, png


def _plot_confusion_matrix(matrix, classes, path: Path, accuracy: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(classes)), labels=classes, rotation=30)
    ax.set_yticks(range(len(classes)), labels=classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(f"Test accuracy {accuracy:.3f}")
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, int(matrix[i, j]), ha="center", va="center")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def model_requirements() -> list[str]:
    """Pinned requirements of the served model, from what is installed here (no inference)."""
    from importlib.metadata import version

    return [f"{name}=={version(name)}"
            for name in ("mlflow", "scikit-learn", "skops", "numpy", "pandas")]


def log_run(model, x_train, metrics, png: Path, args, data_sha256: str, workdir: Path):
    """Log params, metrics and the model to a throw-away local MLflow store.

    Returns (experiment_id, run_id, local artifacts directory, {run_name, start_time,
    end_time} as MLflow logged them).
    """
    import logging

    # skops looks up each scikit-learn type among all loaded modules when it is imported:
    # before MLflow's modules are loaded that takes about 0.7 s of CPU less.
    import skops.io  # noqa: F401
    import mlflow
    from mlflow.models import infer_signature

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # no store-migration chatter on stderr
    # node_runner.py keeps one store for all its lines (a new SQLite store costs seconds).
    store = Path(getattr(args, "mlflow_dir", None) or workdir)
    db = store / "mlflow.db"
    template, new = empty_store_template(mlflow.__version__), not db.exists()
    copied = new and template is not None and copy_store(template, db)
    mlflow.set_tracking_uri(f"sqlite:///{db}")
    experiment = mlflow.get_experiment_by_name(args.experiment_name)
    if new and not copied and template is not None:  # made just now: kept for the next
        copy_store(db, template)
    experiment_id = experiment.experiment_id if experiment else mlflow.create_experiment(
        args.experiment_name, artifact_location=(store / "mlruns").as_uri())
    example = x_train.head(5)
    signature = infer_signature(example, model.predict(example))
    model_dir = workdir / "model"
    mlflow.sklearn.save_model(model, str(model_dir), signature=signature, input_example=example,
                              pip_requirements=model_requirements(),
                              skops_trusted_types=SKOPS_TRUSTED_TYPES)
    # A sweep's runner names each line's run (node_runner.py); otherwise MLflow picks a name.
    with mlflow.start_run(experiment_id=experiment_id,
                          run_name=getattr(args, "run_name", None)) as run:
        mlflow.log_params(run_params(args))
        mlflow.log_metrics(metrics)
        mlflow.set_tags({"data_sha256": data_sha256, "data_file": Path(args.iris_csv).name})
        mlflow.log_artifact(str(png))
        mlflow.log_artifacts(str(model_dir), "model")
        artifacts = Path(mlflow.get_artifact_uri().removeprefix("file://"))
    finished = mlflow.get_run(run.info.run_id).info
    # What the manifest says of the run beyond its files, so that a tracking store elsewhere
    # can show it as it was logged (workspace/tracking.py imports it under this run id).
    logged = {"run_name": finished.run_name, "start_time": finished.start_time,
              "end_time": finished.end_time}
    return experiment_id, run.info.run_id, artifacts, logged


def empty_store_template(mlflow_version: str) -> Path | None:
    """Where a new, empty MLflow SQLite store of this MLflow version is kept for the next
    process on this machine: creating one runs every schema migration of MLflow (seconds of
    CPU that each sweep runner and each trainer would pay again). A folder of this user's
    own (mode 700) in the Batch node's shared folder or the temp directory; None if that
    folder is someone else's or open to others (a store planted there is not used)."""
    base = Path(os.environ.get("AZ_BATCH_NODE_SHARED_DIR") or tempfile.gettempdir())
    folder = base / f"iris-trainer-{os.getuid()}"
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = folder.lstat()
    except OSError:
        return None
    import stat

    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        return None
    return folder / f"mlflow-{mlflow_version}-empty.db"


def copy_store(source: Path, target: Path) -> bool:
    """Copy an MLflow SQLite store with SQLite's backup API (consistent even while it is
    open) and move it into place at once; False (nothing copied) if the source is missing
    or not a migrated store."""
    import sqlite3
    from contextlib import closing

    part = target.with_name(f".{target.name}.{os.getpid()}.part")
    try:
        with closing(sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True)) as db:
            if not db.execute("SELECT version_num FROM alembic_version").fetchone():
                return False
            with closing(sqlite3.connect(part)) as copy:
                db.backup(copy)
        os.replace(part, target)
        return True
    except (OSError, sqlite3.Error):
        part.unlink(missing_ok=True)
        return False


def run_params(args) -> dict:
    """The params the run logs, and the manifest records: one dict for both."""
    return {"epochs": args.epochs, "lr": args.lr, "test_size": args.test_size,
            "seed": args.seed, "learner": "MLPClassifier(16, sgd)"}


# ----------------------------------------------------------------------------- storage


def split_container(value: str) -> tuple[str, str]:
    container, _, prefix = value.strip("/").partition("/")
    if not container:
        raise TrainerError("--containerName is empty; pass '<container>' or '<container>/<prefix>'.")
    return container, prefix.strip("/")


def connect_container(args):
    """Return a ContainerClient for the target container after checking it exists."""
    from azure.core.exceptions import (ClientAuthenticationError, HttpResponseError,
                                       ServiceRequestError)
    from azure.storage.blob import BlobServiceClient, ExponentialRetry

    container, _ = split_container(args.container_name)
    connection_string = args.connection_string or os.environ.get(CONNECTION_STRING_ENV)
    if args.account_url and connection_string and args.connection_string:
        raise TrainerError("Pass either --connectionString or --account-url, not both.")
    retry = ExponentialRetry(initial_backoff=1, increment_base=2, retry_total=args.storage_retries)
    options = {"retry_policy": retry, "connection_timeout": 10, "read_timeout": 60}
    if args.account_url:
        credential = storage_credential(args.client_id)
        service = BlobServiceClient(args.account_url, credential=credential, **options)
        where = args.account_url
    elif connection_string:
        try:
            service = BlobServiceClient.from_connection_string(connection_string, **options)
        except ValueError as exc:
            raise TrainerError(f"The storage connection string is malformed: {exc}")
        where = service.url.rstrip("/")
    else:
        raise TrainerError("No storage given: pass --account-url (managed identity) or "
                           f"--connectionString, or set {CONNECTION_STRING_ENV}.")
    client = service.get_container_client(container)
    try:
        exists = client.exists()
    except ServiceRequestError as exc:
        raise TrainerError(f"Storage at {where} is not reachable after {args.storage_retries} "
                           f"retries ({_short(exc)}); check the URL and that the service is up.",
                           EXIT_STORAGE)
    except ClientAuthenticationError as exc:
        raise TrainerError(f"Storage at {where} refused the credentials ({_short(exc)}); the "
                           "identity needs 'Storage Blob Data Contributor' on the account.",
                           EXIT_ACCESS_DENIED)
    except HttpResponseError as exc:
        if exc.status_code == 403:
            raise TrainerError(f"Storage at {where} refused access ({_short(exc)}); the "
                               "identity needs 'Storage Blob Data Contributor' on the account.",
                               EXIT_ACCESS_DENIED)
        raise TrainerError(f"Storage at {where} answered {exc.status_code} ({_short(exc)}).",
                           EXIT_STORAGE)
    if not exists:
        raise TrainerError(f"Storage container '{container}' does not exist at {where}; create "
                           "it or pass the right --containerName.", EXIT_NOT_FOUND)
    return client


def storage_credential(client_id: str | None):
    """The pool's user-assigned identity when its client id is given (only that identity: a
    wrong id must fail as such, not fall through a chain); otherwise DefaultAzureCredential."""
    if not client_id:
        from azure.identity import DefaultAzureCredential

        return DefaultAzureCredential()
    from azure.core.exceptions import ClientAuthenticationError
    from azure.identity import ManagedIdentityCredential

    credential = ManagedIdentityCredential(client_id=client_id)
    try:  # a token first, so that a storage refusal below can only mean a missing role
        credential.get_token(STORAGE_SCOPE)
    except ClientAuthenticationError as exc:  # CredentialUnavailableError included
        raise TrainerError(
            f"The managed identity with client id {client_id} got no token from the managed "
            f"identity endpoint ({_short(exc)}); pass the client id of the identity assigned "
            "to the Batch pool (--client-id, pipeline parameter poolIdentityClientId).",
            EXIT_ACCESS_DENIED)
    return credential


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def publish(client, run_prefix: str, artifacts: Path, manifest: dict) -> int:
    """Upload every artifact under run_prefix/artifacts/, then the manifest. Returns bytes sent."""
    from azure.core.exceptions import AzureError

    files = sorted(p for p in artifacts.rglob("*") if p.is_file())
    entries = {}
    sent = 0
    uploaded: list[str] = []
    try:
        for index, path in enumerate(files, 1):
            rel = "artifacts/" + path.relative_to(artifacts).as_posix()
            name = f"{run_prefix}/{rel}"
            with path.open("rb") as handle:
                client.upload_blob(name, handle, overwrite=True)
            uploaded.append(name)
            size = path.stat().st_size
            sent += size
            entries[rel] = {"sha256": sha256_file(path), "size": size}
            print(f"[trainer]   {index:>2}/{len(files)} {rel} ({size} B)", flush=True)
        manifest["files"] = entries
        body = json.dumps(manifest, indent=2, sort_keys=True).encode()
        # Written last and never overwritten: its presence marks the run complete.
        client.upload_blob(f"{run_prefix}/{MANIFEST_NAME}", body, overwrite=False)
    except AzureError as exc:
        _remove_quietly(client, uploaded)
        raise TrainerError(f"Upload to container '{client.container_name}' failed at "
                           f"'{run_prefix}' ({_short(exc)}); nothing was published, re-run the "
                           "trainer.", EXIT_STORAGE)
    return sent


def _remove_quietly(client, names: list[str]) -> None:
    """Best effort: partial uploads have no manifest, so readers ignore them anyway."""
    for name in names:
        try:
            client.delete_blob(name)
        except Exception:
            return


def write_outputs(path: str, outputs: dict) -> None:
    body = json.dumps(outputs, indent=2, sort_keys=True)
    if len(body.encode()) > OUTPUTS_MAX_BYTES:
        raise TrainerError(f"{path} would exceed ADF's 2 MB customOutput limit.")
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(body)
    tmp.replace(target)


# ----------------------------------------------------------------------------- main


def scratch_folder() -> tempfile.TemporaryDirectory:
    """Scratch space: $TMPDIR if set (the local runner gives each task its own and removes
    it after the task, even after a SIGKILL), else the Batch task's working directory (the
    node removes it with the task), else the system's temp folder. Removed on exit and on
    SIGTERM/SIGINT/SIGHUP (see main)."""
    base = None if os.environ.get("TMPDIR") else os.environ.get("AZ_BATCH_TASK_WORKING_DIR")
    return tempfile.TemporaryDirectory(prefix="iris-trainer-",
                                       dir=base if base and os.path.isdir(base) else None)


def adf_provenance() -> dict:
    """Which pipeline run and which attempt (Batch task) made the model, so a reader can
    ignore a model whose run did not succeed. activity.json is written next to the command
    by the Custom activity; its extendedProperties.runId is @pipeline().RunId."""
    found = {"batch_task_id": os.environ.get("AZ_BATCH_TASK_ID", "")}
    try:
        activity = json.loads(Path("activity.json").read_text())
        found["pipeline_run_id"] = str(
            activity["typeProperties"]["extendedProperties"]["runId"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return {key: value for key, value in found.items() if value}


def _stop_on_signal(signum, frame):
    # SystemExit unwinds the with-blocks: the scratch folder goes, nothing half-done is published.
    print(f"[trainer] stopped by signal {signum}; nothing more is published.", file=sys.stderr,
          flush=True)
    raise SystemExit(128 + signum)


def run(args) -> dict:
    progress = Progress()
    container, prefix = split_container(args.container_name)
    with progress.phase("load") as phase:
        features, labels, data_sha256 = load_dataset(args.iris_csv, args.label_column, args.min_rows)
        phase.detail = (f"{len(labels)} rows, {features.shape[1]} features, "
                        f"{labels.nunique()} classes, sha256 {data_sha256[:12]}")
    with progress.phase("connect") as phase:
        client = connect_container(args)
        phase.detail = f"container '{container}' prefix '{prefix}'"

    with scratch_folder() as tmp:
        workdir = Path(tmp)
        with progress.phase("train") as phase:
            model, x_train, metrics, png = train_and_evaluate(features, labels, args, workdir)
            phase.detail = f"{args.epochs} epochs at lr {args.lr}"
        with progress.phase("evaluate") as phase:
            phase.detail = (f"accuracy {metrics['test_accuracy']:.3f}, "
                            f"macro-F1 {metrics['test_f1_macro']:.3f} on {int(metrics['test_rows'])} rows")
        with progress.phase("save") as phase:
            experiment_id, run_id, artifacts, logged = log_run(model, x_train, metrics, png, args,
                                                       data_sha256, workdir)
            phase.detail = f"MLflow run {run_id} (experiment {experiment_id})"
        run_prefix = "/".join(p for p in (prefix, experiment_id, run_id) if p)
        manifest = {
            "format": MANIFEST_FORMAT,
            "run_id": run_id,
            "experiment_id": experiment_id,
            "experiment_name": args.experiment_name,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "model_path": f"{run_prefix}/artifacts/model",
            "metrics": metrics,
            "params": run_params(args),
            **logged,
            "data": {"file": Path(args.iris_csv).name, "sha256": data_sha256,
                     "rows": int(len(labels))},
            "adf": adf_provenance(),
        }
        # A sweep's runner (node_runner.py) records the sweep id and grid line here.
        manifest.update(getattr(args, "manifest_extra", None) or {})
        with progress.phase("upload") as phase:
            sent = publish(client, run_prefix, artifacts, manifest)
            phase.detail = (f"{len(manifest['files'])} files, {sent / 1024:.1f} KiB to "
                            f"{container}/{run_prefix}, manifest last")

    outputs = {
        "runId": run_id,
        "experimentId": experiment_id,
        "container": container,
        "manifestPath": f"{run_prefix}/{MANIFEST_NAME}",
        "modelPath": f"{run_prefix}/artifacts/model",
        "modelUri": f"azureml://datastores/{args.datastore_name}/paths/{run_prefix}/artifacts/model",
        "metrics": metrics,
    }
    write_outputs(args.outputs_json, outputs)
    print(f"[trainer] published run {run_id}: accuracy {metrics['test_accuracy']:.3f}, "
          f"model at {container}/{run_prefix}/artifacts/model ({progress.total():.1f} s total)",
          flush=True)
    return outputs


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, _stop_on_signal)
    try:
        run(args)
    except TrainerError as exc:
        print(f"[trainer] error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
