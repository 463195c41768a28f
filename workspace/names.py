"""The rules for every name a user passes: one rule per kind of name, checked up front,
before any file or blob path is built from it (a run id like `../../tmp/x` would otherwise
name a folder outside the runs folder).

Each rule is Azure's where Azure has one; its comment names the source:
- the REST types of Azure/bicep-types-az, reduced into tests/fixtures/azure_types.json
  (tests/workspace/test_names.py reads the patterns there and compares);
- Azure Storage's naming rules: "Naming and Referencing Containers, Blobs, and Metadata"
  and "Naming Queues and Metadata" (learn.microsoft.com/rest/api/storageservices/).

A name that breaks its rule is an InvalidName (exit code 2, usage) that names the option or
argument and says the rule.
"""
from __future__ import annotations

import re

from workspace.errors import ConfigError

SHOWN_CHARACTERS = 60  # a long name is shown cut, with its length


class InvalidName(ConfigError):
    """A name breaks the rule of its kind (exit code 2)."""


def _part(label: str, value: str, problem: str) -> str:
    """The problem of one part of a composite name ("its container 'X': ...")."""
    return f"its {label} {shown(value)}" + (f": {problem}" if problem else " breaks its rule")


def shown(value) -> str:
    """A value for an error message: quoted, cut after SHOWN_CHARACTERS."""
    text = str(value)
    if len(text) <= SHOWN_CHARACTERS:
        return repr(text)
    return f"{text[:SHOWN_CHARACTERS]!r}… ({len(text)} characters)"


class NameRule:
    """One kind of name: a pattern and a length range; `rule` says both to the user."""

    def __init__(self, kind: str, rule: str, pattern: str | None = None,
                 max_length: int | None = None):
        self.kind = kind
        self.rule = rule
        self.pattern = re.compile(pattern) if pattern else None
        self.max_length = max_length

    def problem(self, value) -> str | None:
        """Why `value` is not a name of this kind, or None."""
        if not isinstance(value, str) or not value:
            return "it is empty"
        if self.max_length is not None and len(value) > self.max_length:
            return f"it has {len(value)} characters, at most {self.max_length} are allowed"
        if self.pattern is not None and not self.pattern.fullmatch(value):
            return ""  # no more to say than the rule
        return None

    def is_valid(self, value) -> bool:
        return self.problem(value) is None

    def check(self, value, where: str) -> str:
        """`value` if it follows the rule; otherwise InvalidName naming `where` (the option
        or argument, e.g. `--job-name`, `RUN_ID`) and the rule."""
        problem = self.problem(value)
        if problem is not None:
            raise InvalidName(f"{where} {shown(value)} is not a valid {self.kind}"
                              + (f": {problem}." if problem else "."), self.rule)
        return value


# ---------------------------------------------------------------------- Azure resources

# A GUID as Azure writes it (8-4-4-4-12 hexadecimal digits): the pattern of the GUID-typed
# properties of the REST types (Key Vault's tenantId, a datastore credential's clientId in
# tests/fixtures/azure_types.json).
GUID = r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}"

# Data Factory pipeline run ids are GUIDs: PipelineCreateRunResult.RunId and
# PipelineRunInfo.RunId are `Guid` in Azure.ResourceManager.DataFactory (generated from the
# Microsoft.DataFactory 2018-06-01 REST spec); the REST examples read
# 2f7fdb90-5df1-4b8e-ac2f-064cfa58202b. The local runner names its runs with uuid4, the same
# form.
PIPELINE_RUN_ID = NameRule(
    "ADF pipeline run id", "A pipeline run id is a GUID (8-4-4-4-12 hexadecimal digits, e.g. "
    "2f7fdb90-5df1-4b8e-ac2f-064cfa58202b), as `python -m adf trigger` prints it.", GUID, 36)

# Azure ML job, batch deployment and datastore names: the name pattern of
# Microsoft.MachineLearningServices/workspaces/jobs (and /batchEndpoints/deployments,
# /datastores) 2024-10-01 in the REST types.
ARM_NAME = r"[a-zA-Z0-9][a-zA-Z0-9\-_]{0,254}"
ARM_NAME_MAX = 255
_ARM_RULE = ("1-255 letters, digits, '-' and '_', starting with a letter or digit "
             "(Azure ML's REST name pattern).")
JOB_NAME = NameRule("Azure ML job name", "A job name has " + _ARM_RULE, ARM_NAME, ARM_NAME_MAX)
# A job's experiment: JobBaseProperties.experimentName has no pattern of its own in the REST
# types; Azure ML files the job under an experiment of that name, which is held to the
# workspace's job name rule here (the same names the SDK and the studio show for both).
EXPERIMENT_NAME = NameRule("Azure ML experiment name", "An experiment name has " + _ARM_RULE,
                           ARM_NAME, ARM_NAME_MAX)
DEPLOYMENT_NAME = NameRule("Azure ML batch deployment name",
                           "A deployment name has " + _ARM_RULE, ARM_NAME, ARM_NAME_MAX)
DATASTORE_NAME = NameRule("Azure ML datastore name", "A datastore name has " + _ARM_RULE,
                          ARM_NAME, ARM_NAME_MAX)


# ---------------------------------------------------------------------- Azure Storage

# Container and queue names (Storage naming rules; both the same DNS-label rule): 3-63
# characters, lowercase letters, digits and '-', starting and ending with a letter or digit,
# every '-' between two letters or digits (no '--').
STORAGE_NAME = r"[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}"
CONTAINER_NAME = NameRule(
    "blob container name", "A container name has 3-63 lowercase letters, digits and '-', "
    "starts and ends with a letter or digit and has no '--' (Azure Storage naming rules).",
    STORAGE_NAME, 63)

# A sweep's queue is `<id>-work` (workspace/queues.py): an id is a sweep id when that is a
# queue name. `sweep start` makes them
# as sw-YYYYMMDD-HHMMSS-xxxx.
SWEEP_QUEUE_SUFFIX = "-work"
SWEEP_ID = NameRule(
    "sweep id", "A sweep id is the stem of its storage queues' names: lowercase letters, "
    "digits and single '-', starting and ending with a letter or digit, at most "
    f"{63 - len(SWEEP_QUEUE_SUFFIX)} characters (e.g. sw-20260101-120000-1a2b; "
    "`python -m adf sweep list` shows them).",
    r"[a-z0-9]+(?:-[a-z0-9]+)*", 63 - len(SWEEP_QUEUE_SUFFIX))

# Blob names (Storage naming rules): 1-1,024 characters, at most 254 path segments; no
# path segment should end with a dot (so '.' and '..' are never segments: a URL would
# resolve them), control characters are not allowed. An empty segment (a leading, trailing
# or doubled '/') and '\\' (some clients read it as '/') are refused too: no blob this
# project writes has them.
BLOB_NAME_MAX = 1024
BLOB_SEGMENTS_MAX = 254
_BLOB_RULE = ("A blob path has 1-1,024 characters and at most 254 '/'-separated segments; "
              "no segment is empty or ends with '.' (so no '.' or '..'), and no '\\' or "
              "control character (Azure Storage naming rules).")


class BlobPathRule(NameRule):
    """A blob name or a folder of blobs (a prefix), checked segment by segment."""

    def __init__(self, kind: str = "blob path", rule: str = _BLOB_RULE):
        super().__init__(kind, rule, max_length=BLOB_NAME_MAX)

    def problem(self, value) -> str | None:
        problem = super().problem(value)
        if problem is not None:
            return problem
        if re.search(r"[\\\x00-\x1f\x7f]", value):
            return "it has a '\\' or a control character"
        segments = value.split("/")
        if len(segments) > BLOB_SEGMENTS_MAX:
            return f"it has {len(segments)} segments, at most {BLOB_SEGMENTS_MAX} are allowed"
        for segment in segments:
            if not segment:
                return "it has an empty segment (a leading, trailing or doubled '/')"
            if segment.endswith("."):
                return f"its segment {shown(segment)} ends with '.'"
        return None


BLOB_PATH = BlobPathRule()


class ContainerPathRule(NameRule):
    """`<container>[/<folder>]`: a container and, optionally, a blob folder inside it
    (the pipelines' containerPath)."""

    def __init__(self):
        super().__init__("container path", "A container path is <container>[/<folder>]: "
                         f"{CONTAINER_NAME.rule} {BLOB_PATH.rule}")

    def problem(self, value) -> str | None:
        problem = super().problem(value)
        if problem is not None:
            return problem
        container, slash, folder = value.partition("/")
        problem = CONTAINER_NAME.problem(container)
        if problem is not None:
            return _part("container", container, problem)
        if slash:
            problem = BLOB_PATH.problem(folder)
            if problem is not None:
                return _part("folder", folder, problem)
        return None


CONTAINER_PATH = ContainerPathRule()

# A datastore URI of Azure ML (azureml://datastores/<datastore>/paths/<path>): the form of
# AzureMLDatastorePathUri (azure/ai/ml/_utils/_storage_utils.py).
DATASTORE_URI = re.compile(r"azureml://datastores/([^/]+)/paths/(.*)", re.S)


class DatastoreFilePathRule(NameRule):
    """azureml://datastores/<datastore>/paths/<folder>/<file>: a datastore name, then a
    blob path whose last segment is a file name with an extension (a job's uri_file
    output)."""

    def __init__(self):
        super().__init__("datastore file path",
                         "Use azureml://datastores/<datastore>/paths/<folder>/<file>.csv: "
                         f"{DATASTORE_NAME.rule} {BLOB_PATH.rule} The last segment is a file "
                         "name with an extension (a job writes its output to a uri_file).")

    def problem(self, value) -> str | None:
        problem = super().problem(value)
        if problem is not None:
            return problem
        match = DATASTORE_URI.fullmatch(value)
        if not match:
            return "it is not azureml://datastores/<datastore>/paths/<path>"
        datastore, path = match.groups()
        problem = DATASTORE_NAME.problem(datastore)
        if problem is not None:
            return _part("datastore", datastore, problem)
        problem = BLOB_PATH.problem(path)
        if problem is not None:
            return _part("path", path, problem)
        if "." not in path.rsplit("/", 1)[-1].strip("."):
            return "its last segment is not a file name with an extension"
        return None


DATASTORE_FILE_PATH = DatastoreFilePathRule()
