"""The local target's one-time check of the scoring environment against a model's
requirements (jobs then load the model without repeating it)."""
from __future__ import annotations

import platform
from importlib import metadata

from deployer.environment import environment_mismatches


def model_dir(tmp_path, requirements: str, python: str | None = None):
    (tmp_path / "requirements.txt").write_text(requirements)
    if python:
        (tmp_path / "python_env.yaml").write_text(f"python: {python}\ndependencies:\n- -r requirements.txt\n")
    return tmp_path


def test_an_environment_that_meets_the_requirements_has_no_mismatches(tmp_path):
    installed = metadata.version("scikit-learn")
    folder = model_dir(tmp_path, f"mlflow\nscikit-learn=={installed}\n# a comment\n-r other.txt\n",
                       python=platform.python_version())
    assert environment_mismatches(folder) == []


def test_each_unmet_requirement_is_named(tmp_path):
    folder = model_dir(tmp_path, "scikit-learn==0.1.0\nno-such-package-xyz>=1\n"
                                 "numpy; python_version < '3'\n", python="2.7.18")
    found = environment_mismatches(folder)
    assert found[0].startswith("scikit-learn: required ==0.1.0, installed ")
    assert found[1] == "no-such-package-xyz: required >=1, not installed"
    assert found[2] == f"python: the model was saved with 2.7.18, running {platform.python_version()}"
    assert len(found) == 3  # numpy's marker does not apply here


def test_a_short_python_version_is_read_as_text_and_a_malformed_file_is_skipped(tmp_path):
    running = ".".join(platform.python_version().split(".")[:2])
    assert environment_mismatches(model_dir(tmp_path, "", python=running)) == []
    other = "3.10" if running != "3.10" else "3.20"  # YAML would read a float: 3.1, 3.2
    assert environment_mismatches(model_dir(tmp_path, "", python=other)) == [
        f"python: the model was saved with {other}, running {platform.python_version()}"]
    (tmp_path / "python_env.yaml").write_text("- a list, not a mapping\n")
    assert environment_mismatches(tmp_path) == []


def test_a_model_without_requirement_files_has_nothing_to_check(tmp_path):
    assert environment_mismatches(tmp_path) == []


def test_the_local_deployment_warns_once_about_each_mismatch(tmp_path):
    from deployer.backends.local import _warn_environment

    said = []
    _warn_environment(str(model_dir(tmp_path, "scikit-learn==0.1.0\n")), said.append)
    assert len(said) == 1 and said[0].startswith("warning: this environment does not meet")
    assert "scikit-learn: required ==0.1.0" in said[0]
    said.clear()
    _warn_environment(str(model_dir(tmp_path, "")), said.append)
    assert said == []
