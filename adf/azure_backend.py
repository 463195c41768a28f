"""The Azure target: Data Factory runs the pipeline, the Custom activity runs on the Batch pool.

- publish: the ARM JSON of adf/ (placeholders filled from .env) is sent as plain dicts to
  `credential_operations` / `linked_services` / `pipelines.create_or_update` (building
  the SDK models would turn `Custom` into `Execution` and drop linked-service types);
- run: `pipelines.create_run`, `pipeline_runs.get`, `activity_runs.query_by_pipeline_run`;
- logs: stdout/stderr from the `adfjobs` container, read with your Entra ID login;
- while a run waits: the Batch pool (allocation, node states, a failed start task's exit
  code and stderr) through `azure.batch.BatchClient` with the same credential.

Every client takes the same credential (DefaultAzureCredential unless given) and the same
extra keyword arguments (retry settings, a transport), so tests plug a fake in at HTTP level.
"""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from functools import cached_property
from pathlib import Path
from typing import Any

from adf.definitions import Definitions, filled, load_definitions
from adf.runs import (LOGS_CONTAINER, ActivityRun, Backend, PipelineRun, Progress, RunNotFound,
                      batch_job_started)
from adf.staging import split_folder_path
from workspace.azure_errors import AzureAuthError, AzureHints, translated
from workspace.datastore import Datastore
from workspace.errors import ProjectError
from workspace.settings import Settings

# Bounded retries of transient failures (429, 5xx, connection resets) in every client.
RETRY = {"retry_total": 4, "retry_backoff_factor": 1.0, "retry_backoff_max": 30}
START_TASK_STDERR = "startup/stderr.txt"
STDERR_TAIL_LINES = 15
# Data Factory keeps pipeline runs 45 days ("Data Factory stores pipeline-run data for only
# 45 days", https://learn.microsoft.com/azure/data-factory/monitor-data-factory).
RUN_RETENTION_DAYS = 45
REQUIRED_SETTINGS = ("subscription_id", "resource_group", "data_factory", "storage_blob_url",
                     "batch_account_url", "batch_pool_id")


AzureAccessError = AzureAuthError  # the name this module's callers know


class AzureBackend(Backend):
    target = "azure"
    poll_interval = 10.0

    def __init__(self, settings: Settings, definitions_dir: Path | None = None, *,
                 credential=None, **client_options: Any):
        super().__init__(settings)
        settings.require(*REQUIRED_SETTINGS)
        self.definitions_dir = definitions_dir
        self._credential = credential
        self.client_options = {**RETRY, **client_options}
        self._diagnosis_error_shown = False

    # ------------------------------------------------------------------ clients

    @cached_property
    def credential(self):
        if self._credential is None:
            from azure.identity import DefaultAzureCredential

            self._credential = DefaultAzureCredential()
        return self._credential

    @cached_property
    def factory_client(self):
        from azure.mgmt.datafactory import DataFactoryManagementClient

        return DataFactoryManagementClient(self.credential, self.settings.subscription_id,
                                           **self.client_options)

    @cached_property
    def batch_client(self):
        from azure.batch import BatchClient

        return BatchClient(self.settings.batch_account_url, self.credential, **self.client_options)

    def _container(self, name: str) -> Datastore:
        from azure.storage.blob import ContainerClient

        # The staging folder and the task logs: the staging account in private mode.
        endpoint = self.settings.staging_blob_endpoint
        client = ContainerClient(endpoint, name, credential=self.credential, **self.client_options)
        return Datastore(client, name=self.settings.datastore_name, unreachable_hint=(
            f"Storage at {endpoint} is not reachable; check STAGING_STORAGE_BLOB_URL and "
            "AZURE_STORAGE_BLOB_URL in .env and your network."))

    @property
    def _scope(self) -> tuple[str, str]:
        return self.settings.resource_group, self.settings.data_factory

    # ------------------------------------------------------------------ errors

    def _errors(self, what: str, service: str = "factory"):
        s = self.settings
        roles = {
            "factory": f"'Data Factory Contributor' on factory '{s.data_factory}' (resource "
                       f"group '{s.resource_group}')",
            "batch": f"'Azure Batch Account Reader' on Batch account '{s.batch_account or s.batch_account_url}'",
            "storage": f"'Storage Blob Data Reader' on storage account '{s.storage_account or s.storage_blob_url}'",
        }
        return translated(what, AzureHints(
            access=f"Your identity needs {roles[service]}.",
            not_found="Check ADF_FACTORY, AZURE_RESOURCE_GROUP and BATCH_POOL_ID in .env, or run "
                      "`make deploy-infra`.",
            login="Run `az login` (and `az account set --subscription "
                  f"{s.subscription_id}`), then retry."))

    # ------------------------------------------------------------------ definitions

    def definitions(self) -> Definitions:
        return filled(load_definitions(self.definitions_dir, self.pipeline_file), self.settings)

    def folder_path(self) -> str:
        """The folder staged for a run: the Custom activity's, or for a control-flow pipeline
        that of the pipelines it executes ("" if it runs no Custom activity)."""
        from adf.control_flow import is_control_flow
        from adf.definitions import executed_folder_path

        definitions = self.definitions()
        body = definitions.pipeline.body
        if not is_control_flow(body):
            return definitions.folder_path
        return executed_folder_path(body, {d.name: d.body for d in self._executed_pipelines(body)},
                                    definitions.pipeline.display_path)

    def staging_datastore(self) -> tuple[Datastore, str]:
        container, prefix = split_folder_path(self.folder_path())
        return self._container(container), prefix

    def logs_datastore(self) -> Datastore:
        return self._container(LOGS_CONTAINER)

    def prepare(self, progress: Progress) -> None:
        """Publish credentials, linked services (referenced ones first) and the pipeline."""
        definitions = self.definitions()
        client = self.factory_client
        rg, factory = self._scope
        for document in definitions.credentials.values():
            with self._errors(f"publishing credential '{document.name}'"):
                client.credential_operations.create_or_update(
                    rg, factory, document.name, {"properties": document.properties})
            progress(f"Published credential {document.name} to factory {factory}.")
        for document in definitions.linked_services_in_order():
            with self._errors(f"publishing linked service '{document.name}'"):
                client.linked_services.create_or_update(
                    rg, factory, document.name, {"properties": document.properties})
            progress(f"Published linked service {document.name}.")
        for pipeline in [*self._executed_pipelines(definitions.pipeline.body),
                         definitions.pipeline]:
            with self._errors(f"publishing pipeline '{pipeline.name}'"):
                client.pipelines.create_or_update(rg, factory, pipeline.name,
                                                  {"properties": pipeline.properties})
            progress(f"Published pipeline {pipeline.name}.")

    def _executed_pipelines(self, body: dict, seen: tuple = ()) -> list:
        """The pipelines `body` runs through Execute Pipeline, each before a pipeline that runs
        it (Data Factory refuses a reference to a pipeline it does not have)."""
        from adf.control_flow import all_activities
        from adf.definitions import pipeline_files

        files = pipeline_files(self.definitions_dir)
        found = []
        for activity in all_activities(body["properties"].get("activities") or []):
            if activity.get("type") != "ExecutePipeline":
                continue
            name = activity["typeProperties"]["pipeline"]["referenceName"]
            if name in seen or name not in files or any(d.name == name for d in found):
                continue
            child = filled(load_definitions(self.definitions_dir, files[name]), self.settings,
                           pipeline_only=True).pipeline
            found += [*self._executed_pipelines(child.body, seen + (name,)), child]
        return found

    # ------------------------------------------------------------------ triggers

    def trigger_states(self) -> dict[str, str]:
        """Trigger name → runtime state (Started, Stopped, Disabled) in the factory."""
        rg, factory = self._scope
        with self._errors("listing triggers"):
            return {t.name: _value(t.properties.runtime_state)
                    for t in self.factory_client.triggers.list_by_factory(rg, factory)}

    def start_trigger(self, name: str) -> None:
        """triggers.begin_start: a long-running operation, followed to its end."""
        rg, factory = self._scope
        with self._errors(f"starting trigger '{name}'"):
            self.factory_client.triggers.begin_start(rg, factory, name).result()

    def stop_trigger(self, name: str) -> None:
        rg, factory = self._scope
        with self._errors(f"stopping trigger '{name}'"):
            self.factory_client.triggers.begin_stop(rg, factory, name).result()

    # ------------------------------------------------------------------ runs

    def start(self, parameters: dict[str, Any]) -> str:
        rg, factory = self._scope
        name = self.definitions().pipeline.name
        with self._errors(f"starting pipeline '{name}'"):
            response = self.factory_client.pipelines.create_run(rg, factory, name,
                                                                parameters=parameters)
        self.remember(response.run_id)
        return response.run_id

    def get_run(self, run_id: str) -> PipelineRun:
        from azure.core.exceptions import ResourceNotFoundError
        from azure.mgmt.datafactory.models import RunFilterParameters

        rg, factory = self._scope
        client = self.factory_client
        with self._errors(f"reading run {run_id}"):
            try:
                run = client.pipeline_runs.get(rg, factory, run_id)
            except ResourceNotFoundError:
                raise RunNotFound(f"Factory '{factory}' has no pipeline run '{run_id}'.",
                                  f"Check the id (runs are kept {RUN_RETENTION_DAYS} days).") from None
        started = run.run_start or datetime.now(timezone.utc)
        window = RunFilterParameters(last_updated_after=started - timedelta(hours=1),
                                     last_updated_before=datetime.now(timezone.utc) + timedelta(days=1))
        activities = []
        with self._errors(f"reading the activity runs of {run_id}"):
            while True:
                page = client.activity_runs.query_by_pipeline_run(rg, factory, run_id, window)
                activities += [_activity(a) for a in page.value or []]
                if not page.continuation_token:
                    break
                window.continuation_token = page.continuation_token
        activities.sort(key=lambda a: a.start or "")
        return replace(_run(run), activities=activities)

    def list_runs(self, limit: int) -> list[PipelineRun]:
        """Data Factory's pipeline_runs.query_by_factory (POST .../queryPipelineRuns) over the
        45 days it keeps runs, newest first (orderBy RunStart DESC), page by page
        (continuationToken) until `limit`."""
        from azure.mgmt.datafactory.models import RunFilterParameters, RunQueryOrderBy

        rg, factory = self._scope
        now = datetime.now(timezone.utc)
        query = RunFilterParameters(
            last_updated_after=now - timedelta(days=RUN_RETENTION_DAYS),
            last_updated_before=now + timedelta(days=1),
            order_by=[RunQueryOrderBy(order_by="RunStart", order="DESC")])
        runs: list[PipelineRun] = []
        with self._errors("listing pipeline runs"):
            while len(runs) < limit:
                page = self.factory_client.pipeline_runs.query_by_factory(rg, factory, query)
                runs += [_run(run) for run in page.value or []]
                if not page.continuation_token:
                    break
                query.continuation_token = page.continuation_token
        return runs[:limit]

    def cancel(self, run_id: str) -> PipelineRun:
        """pipeline_runs.cancel with isRecursive (also its child runs); ADF moves the run to
        Canceling, stops the Batch task, then Cancelled. A scoring job the run started (an
        invoke's answer in an activity's output) goes on after Data Factory stops the run:
        it is cancelled in Azure ML (jobs.begin_cancel)."""
        from azure.core.exceptions import ResourceNotFoundError

        rg, factory = self._scope
        with self._errors(f"cancelling run {run_id}"):
            try:
                self.factory_client.pipeline_runs.cancel(rg, factory, run_id, is_recursive=True)
            except ResourceNotFoundError:
                raise RunNotFound(f"Factory '{factory}' has no pipeline run '{run_id}'.",
                                  f"Check the id (runs are kept {RUN_RETENTION_DAYS} days).") from None
        run = self.get_run(run_id)
        for name in filter(None, (batch_job_started(a.output) for a in run.activities)):
            self._cancel_scoring_job(name)
        return run

    def _cancel_scoring_job(self, name: str) -> None:
        from azure.ai.ml import MLClient

        s = self.settings
        with translated(f"cancelling scoring job '{name}'", AzureHints(
                access=f"Your identity needs 'AzureML Data Scientist' on workspace "
                       f"'{s.aml_workspace}' to cancel the job.",
                not_found="The job is gone; nothing to cancel.",
                login="Run `az login`, then retry.")):
            client = MLClient(self.credential, s.subscription_id, s.resource_group,
                              s.aml_workspace, **self.client_options)
            client.jobs.begin_cancel(name).result()

    def task_slots(self) -> tuple[int | None, str]:
        """The pool's autoscale maximum (one task per node: taskSlotsPerNode 1 in
        bicep/modules/batch.bicep), as make deploy-infra wrote it to .env."""
        pool, nodes = self.settings.batch_pool_id, self.settings.batch_pool_max_nodes
        if not nodes:
            return None, (f"the size of pool {pool} is unknown (BATCH_POOL_MAX_NODES is not "
                          "set; make deploy-infra writes it)")
        return int(nodes), (f"pool {pool} autoscales to at most {nodes} node(s), one task "
                            "each (BATCH_POOL_MAX_NODES)")

    def waiting_reason(self, run: PipelineRun) -> str | None:
        """What the Batch pool is doing while the run is queued or in progress."""
        if run.is_terminal:
            return None
        try:
            return self._pool_state()
        except ProjectError as exc:  # the diagnosis is a help, never a reason to stop following
            if self._diagnosis_error_shown:
                return None
            self._diagnosis_error_shown = True
            return f"(cannot read the Batch pool: {exc})"

    def _pool_state(self) -> str:
        pool_id = self.settings.batch_pool_id
        batch = self.batch_client
        with self._errors(f"reading Batch pool '{pool_id}'", "batch"):
            pool = batch.get_pool(pool_id)
            nodes = list(batch.list_nodes(pool_id))
        current = (pool.current_dedicated_nodes or 0) + (pool.current_low_priority_nodes or 0)
        target = (pool.target_dedicated_nodes or 0) + (pool.target_low_priority_nodes or 0)
        lines = []
        if pool.allocation_state == "resizing":
            lines.append(f"pool {pool_id}: resizing to {target} node(s), {current} allocated; "
                         "a new DSVM node takes several minutes to boot and run its start task")
        elif not nodes:
            lines.append(f"pool {pool_id}: no nodes yet; autoscale adds one for the queued task "
                         "at its next evaluation (queue times of 5-15 minutes are normal)")
        else:
            lines.append(f"pool {pool_id}: {_value(pool.allocation_state) or 'steady'}, "
                         f"{current} node(s)")
        for error in pool.resize_errors or []:
            lines.append(f"  resize error {error.code}: {error.message}")
        if nodes:
            counts: dict[str, int] = {}
            for node in nodes:
                counts[_value(node.state)] = counts.get(_value(node.state), 0) + 1
            lines.append("  nodes: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
        for node in nodes:
            if _value(node.state) in ("starttaskfailed", "unusable"):
                lines += self._node_problem(pool_id, node)
        return "\n".join(lines)

    def _node_problem(self, pool_id: str, node) -> list[str]:
        info = node.start_task_info
        lines = [f"  node {node.id} is {_value(node.state)}"]
        if info is not None:
            failure = info.failure_info.message if info.failure_info else ""
            lines[0] += (f": start task exit code {info.exit_code}"
                         + (f" ({failure})" if failure else ""))
            lines.append("  the start task installs trainer/requirements.txt into the pool's "
                         "venv; without it `python` or packages are missing")
        for error in node.errors or []:
            lines.append(f"  node error {error.code}: {error.message}")
        if info is not None:
            lines += self._start_task_stderr(pool_id, node.id)
        return lines

    def _start_task_stderr(self, pool_id: str, node_id: str) -> list[str]:
        """The tail of the start task's stderr; a file that cannot be read (not written yet,
        node gone, no access) is one line, never the loss of the rest of the diagnosis."""
        try:
            with self._errors(f"reading {START_TASK_STDERR} of node {node_id}", "batch"):
                stderr = b"".join(self.batch_client.download_node_file(
                    pool_id, node_id, START_TASK_STDERR)).decode("utf-8", errors="replace")
        except ProjectError as exc:
            return [f"  (cannot read {START_TASK_STDERR}: {exc})"]
        tail_lines = stderr.rstrip().splitlines()[-STDERR_TAIL_LINES:]
        if not tail_lines:
            return []
        return [f"  start task stderr (last {len(tail_lines)} lines):",
                *(f"    {line}" for line in tail_lines)]


def _run(model) -> PipelineRun:
    """A PipelineRun of the SDK's model, without its activity runs."""
    return PipelineRun(run_id=model.run_id, pipeline=model.pipeline_name or "",
                       status=model.status or "Unknown", message=model.message or "",
                       start=_iso(model.run_start), end=_iso(model.run_end),
                       duration_ms=model.duration_in_ms, parameters=dict(model.parameters or {}))


def _activity(model) -> ActivityRun:
    return ActivityRun(activity_run_id=model.activity_run_id or "", name=model.activity_name or "",
                       status=model.status or "Unknown", output=dict(model.output or {}),
                       error=dict(model.error or {}), start=_iso(model.activity_run_start),
                       end=_iso(model.activity_run_end))


def _value(enum_or_text) -> str:
    """The wire value of an SDK enum ("starttaskfailed"), not its Python name."""
    return str(getattr(enum_or_text, "value", enum_or_text) or "")


def _iso(value) -> str:
    if value is None:
        return ""
    return value.isoformat() if hasattr(value, "isoformat") else str(value)

