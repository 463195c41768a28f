"""Pipeline parameters checked against the script they feed before a run starts, on every
target.

The activity's command passes parameters to options of a script of trainer/: main.py
(`--lr "@{pipeline().parameters.lr}"`) or, for a sweep, node_runner.py
(`--visibility-timeout "@{pipeline().parameters.visibilityTimeoutSeconds}"`). A value is
checked with that script's own type for that option: its argparse parser is the one table
of its options, so this check and the script never disagree. And no value may change how
the command splits into arguments (Batch runs it without a shell but splits it on spaces
and quotes, as the local runner does with shlex).
"""
from __future__ import annotations

import argparse
import importlib.util
import re
import shlex
import sys
from functools import lru_cache
from typing import Any

from adf.definitions import Definitions
from adf.expressions import PipelineContext, evaluate, to_text
from workspace.errors import ConfigError
from workspace.settings import REPO_ROOT

TRAINER_DIR = REPO_ROOT / "trainer"
TRAINER = TRAINER_DIR / "main.py"
# The scripts of trainer/ a command may run, and what the errors call them.
SCRIPTS = {"main.py": "the trainer", "node_runner.py": "the sweep runner"}
_SCRIPT = re.compile(r"(?<![\w.-])(" + "|".join(map(re.escape, SCRIPTS)) + r")(?![\w.-])")
# Characters no parameter of a command needs, and that quoting rules treat specially.
UNSAFE = re.compile(r"[\"'\\`$\x00-\x1f\x7f]")
_FEED = re.compile(r"(--[\w-]+)(?:=|\s+)\"?@\{\s*pipeline\(\)\.parameters\.(\w+)\s*\}")


@lru_cache(maxsize=None)
def script_parser(name: str) -> argparse.ArgumentParser:
    """The own parser of trainer/<name>. The scripts import only the stdlib at module level;
    node_runner.py imports main.py beside it as `main`, which it gets here without this
    process's sys.path or modules keeping trainer/ afterwards."""
    saved_path, saved_main = list(sys.path), sys.modules.pop("main", None)
    try:
        if name != "main.py":
            sys.modules["main"] = _load_script("main.py")
        return _load_script(name).build_parser()
    finally:
        sys.path[:] = saved_path
        sys.modules.pop("main", None)
        if saved_main is not None:
            sys.modules["main"] = saved_main


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"_iris_{name[:-3]}", TRAINER_DIR / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def trainer_parser() -> argparse.ArgumentParser:
    """trainer/main.py's own parser."""
    return script_parser("main.py")


def command_template(definitions: Definitions) -> str:
    command = definitions.activity.get("typeProperties", {}).get("command", "")
    return command.get("value", "") if isinstance(command, dict) else str(command)


def trainer_options(template: str) -> dict[str, str]:
    """Parameter name → the script option its value is passed to, read from the command."""
    return {name: option for option, name in _FEED.findall(template)}


def check_parameters(definitions: Definitions, values: dict[str, Any],
                     names: list[str] | None = None) -> None:
    """Refuse (ConfigError naming the parameter) a value the script would refuse, or one that
    could add or change an argument of the command. `names`: the ones to check (default all)."""
    from adf.control_flow import is_control_flow

    if is_control_flow(definitions.pipeline.body):
        return check_flow_parameters(definitions, values, names)
    template = command_template(definitions)
    options = trainer_options(template)
    found = _SCRIPT.search(template)
    script = found.group(1) if found else "main.py"  # a changed command: the trainer's rules
    actions = {o: a for a in script_parser(script)._actions for o in a.option_strings}
    for name in names if names is not None else list(values):
        if name not in values or f"parameters.{name}" not in template:
            continue
        text = to_text(values[name])
        if UNSAFE.search(text):
            raise ConfigError(f"--param {name}={text!r}: quotes, backslashes, '$', '`' and "
                              "control characters are not allowed in a value passed on the "
                              "command line.", "Pass the plain value.")
        action = actions.get(options.get(name, ""))
        if action is not None and action.type is not None:
            try:
                action.type(text)
            except argparse.ArgumentTypeError as exc:
                raise ConfigError(f"--param {name}={text}: passed to {SCRIPTS[script]} as "
                                  f"{options[name]}, which {exc}.") from None
        _check_splits_the_same(definitions, values, name, template)


def check_given_parameters(definitions: Definitions, typed: dict[str, Any]) -> None:
    """check_parameters for the values given; the others at their defaults, or a stand-in
    for one without a default (a value the caller sets itself, such as a sweep's id)."""
    values = {name: spec.get("defaultValue", "x")
              for name, spec in definitions.parameters.items()}
    check_parameters(definitions, {**values, **typed}, names=list(typed))


def _check_splits_the_same(definitions: Definitions, values: dict[str, Any], name: str,
                           template: str) -> None:
    plain = {k: "x" for k in values}
    expected = _split(definitions, template, plain)
    got = _split(definitions, template, {**plain, name: values[name]})
    if got is None or expected is None or len(got) != len(expected):
        raise ConfigError(f"--param {name}={to_text(values[name])!r} would change the "
                          "arguments of the activity's command (a space outside the quotes "
                          "of the command, or an empty value).",
                          f"Quote @{{pipeline().parameters.{name}}} in the command of "
                          f"{definitions.pipeline.display_path}, or pass a plain value.")


def _split(definitions: Definitions, template: str, values: dict) -> list[str] | None:
    context = PipelineContext(definitions.pipeline.name, "run-id", values)
    try:
        return shlex.split(str(evaluate({"value": template, "type": "Expression"}, context)))
    except ValueError:
        return None


# Parameters of the scoring pipeline that are numbers written as text ('' = the deployment's
# setting): the pipeline writes them into the invoke body's JSON, so only an integer passes.
INTEGER_TEXT_PARAMETERS = ("miniBatchSize", "instanceCount", "maxRetries", "errorThreshold")
# Parameters the scoring pipeline writes inside a JSON string of the invoke body.
JSON_TEXT_PARAMETERS = ("input", "inputType", "outputPath", "jobName", "experimentName",
                        "endpoint", "deployment")


def check_flow_parameters(definitions: Definitions, values: dict[str, Any],
                          names: list[str] | None = None) -> None:
    """A control-flow pipeline's values: an integer setting is an integer (or empty), and a
    value written into the invoke body's JSON has no quote, backslash or control character."""
    for name in names if names is not None else list(values):
        value = values.get(name)
        if name in INTEGER_TEXT_PARAMETERS and value not in ("", None) and not re.fullmatch(
                r"-?\d+", str(value)):
            raise ConfigError(f"--param {name}={value}: '{name}' is a whole number (or empty "
                              "for the deployment's setting).")
        if name in JSON_TEXT_PARAMETERS and isinstance(value, str) and re.search(
                r'["\\\x00-\x1f]', value):
            raise ConfigError(f"--param {name}: the value may not contain quotes, backslashes "
                              "or control characters.")
    kind = values.get("inputType")
    if kind is not None and kind not in ("UriFile", "UriFolder"):
        raise ConfigError(f"--param inputType={kind}: the input is UriFile or UriFolder.")
