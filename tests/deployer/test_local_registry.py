"""The local MLflow registry read without MLflow: on a registry written through MlflowClient
(versions with tags, a deleted version, another model, a prompt) it answers what MLflow
answers, and the local backend's reads (status, a model registered already, a deployment's
model) then import no MLflow."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from deployer.backends.local_registry import RegistryReader, RegistryUnreadable
from workspace.settings import REPO_ROOT

pytestmark = pytest.mark.slow  # MLflow writes the registry


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri, uri)
    client.create_registered_model("iris-classifier")
    for n in range(3):
        model = root / f"model{n}"
        model.mkdir()
        (model / "MLmodel").write_text("flavors: {}\n")
        client.create_model_version("iris-classifier", str(model),
                                    tags={"content_sha256": f"d{n % 2}", "n": str(n)})
    client.delete_model_version("iris-classifier", "2")
    client.create_registered_model("another")
    client.create_model_version("another", str(root / "model0"))
    client.register_prompt("greeting", "Hello {{name}}")  # in the registry, not a model
    return root, client


def mlflows_versions(client, name: str, tag: tuple[str, str] | None = None) -> list[tuple]:
    query = f"name='{name}'" + (f" and tags.{tag[0]}='{tag[1]}'" if tag else "")
    found = sorted(client.search_model_versions(query), key=lambda v: int(v.version))
    return [(str(v.version), client.get_model_version_download_uri(name, v.version), dict(v.tags))
            for v in found]


def read(reader: RegistryReader, name: str, tag: tuple[str, str] | None = None) -> list[tuple]:
    return [(v.version, v.path, v.tags) for v in reader.versions(name, tag)]


def test_the_reader_answers_what_mlflow_answers(registry):
    root, client = registry
    reader = RegistryReader(root / "mlflow.db")
    for name in ("iris-classifier", "another", "greeting", "nope"):
        assert read(reader, name) == mlflows_versions(client, name), name
    for digest in ("d0", "d1", "d9"):
        tag = ("content_sha256", digest)
        assert read(reader, "iris-classifier", tag) == mlflows_versions(client, "iris-classifier", tag)
    assert [v for v, _, _ in read(reader, "iris-classifier")] == ["1", "3"]  # 2 was deleted


def test_no_registry_is_empty_and_another_file_is_unreadable(tmp_path):
    assert RegistryReader(tmp_path / "mlflow.db").versions("iris-classifier") == []
    (tmp_path / "mlflow.db").write_bytes(b"not a database" * 100)
    with pytest.raises(RegistryUnreadable, match="mlflow.db"):
        RegistryReader(tmp_path / "mlflow.db").versions("iris-classifier")


def test_the_local_backend_reads_the_registry_without_importing_mlflow(registry, tmp_path):
    root, client = registry
    probe = """
import json, sys
from dataclasses import asdict
from deployer.backends.local import LocalBackend
from workspace.settings import Settings

backend = LocalBackend(Settings.load(env_file=sys.argv[1], environ={}, local_dir=sys.argv[2]))
print(json.dumps({
    "models": [asdict(m) for name in sys.argv[3].split(",")
               for m in backend.describe("iris-batch", model=name).models],
    "found": backend._find_version("iris-classifier", "d0").version,
    "latest": backend._resolve_model("azureml:iris-classifier@latest"),
    "mlflow": sorted(m for m in sys.modules if m.split(".")[0] == "mlflow"),
}))
"""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    names = sorted(m.name for m in client.search_registered_models())
    result = subprocess.run([sys.executable, "-c", probe, str(tmp_path / "no.env"), str(root),
                             ",".join(names)],
                            capture_output=True, text=True, env=env, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["mlflow"] == []
    expected = [{"name": name, "version": version, "tags": tags}
                for name in names for version, _, tags in mlflows_versions(client, name)]
    assert seen["models"] == expected
    assert seen["found"] == mlflows_versions(client, "iris-classifier", ("content_sha256", "d0"))[0][0]
    latest = mlflows_versions(client, "iris-classifier")[-1]
    assert seen["latest"] == ["iris-classifier", latest[0], latest[1]]
