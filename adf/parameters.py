"""Pipeline parameters checked against the trainer before a run starts, on every target.

The activity's command passes parameters to trainer/main.py options
(`--lr "@{pipeline().parameters.learningRate}"`). A value is checked with the trainer's own
type for that option: the trainer's argparse parser is the one table of its options, so
this check and the trainer never disagree. And no value may change how the command splits
into arguments (Batch runs it without a shell but splits it on spaces and quotes, as the
local runner does with shlex).
"""
from __future__ import annotations

import argparse
import importlib.util
import re
import shlex
from functools import lru_cache
from typing import Any

from adf.definitions import Definitions
from adf.expressions import PipelineContext, evaluate, to_text
from workspace.errors import ConfigError
from workspace.settings import REPO_ROOT

TRAINER = REPO_ROOT / "trainer" / "main.py"
# Characters no parameter of a command needs, and that quoting rules treat specially.
UNSAFE = re.compile(r"[\"'\\`$\x00-\x1f\x7f]")
_FEED = re.compile(r"(--[\w-]+)(?:=|\s+)\"?@\{\s*pipeline\(\)\.parameters\.(\w+)\s*\}")


@lru_cache(maxsize=1)
def trainer_parser() -> argparse.ArgumentParser:
    """trainer/main.py's own parser (the file is self-contained: it imports only the stdlib
    at module level)."""
    spec = importlib.util.spec_from_file_location("_iris_trainer", TRAINER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_parser()


def command_template(definitions: Definitions) -> str:
    command = definitions.activity.get("typeProperties", {}).get("command", "")
    return command.get("value", "") if isinstance(command, dict) else str(command)


def trainer_options(template: str) -> dict[str, str]:
    """Parameter name → the trainer option its value is passed to, read from the command."""
    return {name: option for option, name in _FEED.findall(template)}


def check_parameters(definitions: Definitions, values: dict[str, Any],
                     names: list[str] | None = None) -> None:
    """Refuse (ConfigError naming the parameter) a value the trainer would refuse, or one that
    could add or change an argument of the command. `names`: the ones to check (default all)."""
    template = command_template(definitions)
    options = trainer_options(template)
    actions = {o: a for a in trainer_parser()._actions for o in a.option_strings}
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
                raise ConfigError(f"--param {name}={text}: passed to the trainer as "
                                  f"{options[name]}, which {exc}.") from None
        _check_splits_the_same(definitions, values, name, template)


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
