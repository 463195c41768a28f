"""The subset of the Data Factory expression language that the pipelines in `adf/` use.

Semantics follow ADF ("Expressions and functions in Azure Data Factory", MicrosoftDocs
azure-docs, articles/data-factory/control-flow-expression-language-functions.md): a JSON
string starting with `@` is one expression (any type), `@@` at the start is a literal `@`,
and elsewhere `@{...}` interpolates an expression as text (`@@{` stays a literal `@{`). An
`{"value": ..., "type": "Expression"}` object is evaluated the same way. Supported:
`pipeline()` with its properties and parameters, `activity('<name>')` (its `output`, `status`
and `error`) and `variables('<name>')` of the run, the functions in SUPPORTED_FUNCTIONS with
that article's semantics (`startsWith`/`endsWith` ignore case, `coalesce` returns the first
non-null argument, `empty` is true for null, '' and an empty collection, `union` merges
objects with the later one winning, `json` parses a string), string/number/boolean/null
literals, `.prop`, `?.prop` and `[index]` access. Anything else is an ExpressionError naming
the expression, raised by `check` before a run starts, so the local runner never silently
runs something different from Azure.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from workspace.errors import ConfigError, ProjectError

SUPPORTED_FUNCTIONS = ("activity", "and", "coalesce", "concat", "contains", "empty", "endswith",
                       "equals", "greater", "if", "int", "join", "json", "less", "not", "or",
                       "pipeline", "range", "skip", "split", "startswith", "string",
                       "triggerbody", "union", "variables")


class _Unknown:
    """A value only known while the run goes (an activity's output, a variable): `check`
    parses an expression with it, so names and functions are checked, not values."""

    def __repr__(self) -> str:
        return "<known at run time>"


UNKNOWN = _Unknown()


class ExpressionError(ConfigError):
    """A pipeline expression cannot be evaluated."""


@dataclass(frozen=True)
class PipelineContext:
    """What `pipeline()` returns during one run."""

    pipeline_name: str
    run_id: str
    parameters: dict = field(default_factory=dict)
    data_factory: str = "local"
    trigger_time: str = ""
    # The run's activities so far (name → {"output", "status", "error"}) and variables; None:
    # the expression may not use activity() / variables() (a Custom activity's properties).
    activities: dict | None = None
    variables: dict | None = None
    checking: bool = False  # parse only: activity outputs and variables are UNKNOWN
    trigger_type: str = "Manual"
    trigger_name: str = "Manual"
    # A storage event's body (`folderPath`, `fileName`) while a trigger's pipeline parameters
    # are evaluated ("Create a trigger that runs a pipeline in response to a storage event",
    # articles/data-factory/how-to-create-event-trigger.md); None elsewhere.
    trigger_body: dict | None = None

    def system(self) -> dict:
        return {"Pipeline": self.pipeline_name, "RunId": self.run_id,
                "DataFactory": self.data_factory, "TriggerType": self.trigger_type,
                "TriggerName": self.trigger_name, "TriggerId": self.run_id,
                "GroupId": self.run_id, "TriggerTime": self.trigger_time}


def evaluate(value: Any, context: PipelineContext, where: str = "value") -> Any:
    """Evaluate a JSON value of an activity: strings, Expression objects, nested objects."""
    if isinstance(value, dict):
        if value.get("type") == "Expression" and set(value) == {"value", "type"}:
            return evaluate_string(str(value["value"]), context, where)
        return {k: evaluate(v, context, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [evaluate(v, context, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, str):
        return evaluate_string(value, context, where)
    return value


def check(value: Any, context: PipelineContext, where: str = "value") -> None:
    """Parse every expression in value (raising ExpressionError for an unsupported function,
    an undeclared parameter or variable, an unknown activity), without run-time values."""
    from dataclasses import replace

    evaluate(value, replace(context, checking=True), where)


def evaluate_string(text: str, context: PipelineContext, where: str = "value") -> Any:
    if text.startswith("@@"):
        return _interpolate(text, context, where)
    if text.startswith("@") and not text.startswith("@{"):
        return _Parser(text[1:], context, where, text).parse_all()
    return _interpolate(text, context, where)


def to_text(value: Any) -> str:
    """How ADF renders a value inside a string (interpolation and string())."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _interpolate(text: str, context: PipelineContext, where: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        if text.startswith("@@", i):
            out.append("@")
            i += 2
        elif text.startswith("@{", i):
            parser = _Parser(text, context, where, text, pos=i + 2)
            value = parser.parse_expression()
            parser.skip_space()
            if not parser.peek("}"):
                raise parser.error("expected '}' to close '@{'")
            out.append(to_text(value))
            i = parser.pos + 1
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


_NUMBER = re.compile(r"-?\d+(\.\d+)?([eE][-+]?\d+)?")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class _Parser:
    """Recursive descent over one expression; evaluates as it parses."""

    def __init__(self, text: str, context: PipelineContext, where: str, source: str, pos: int = 0):
        self.text, self.context, self.where, self.source, self.pos = text, context, where, source, pos

    def error(self, message: str) -> ExpressionError:
        return ExpressionError(f"ADF expression in {self.where} ({self.source!r}): {message}.",
                               "The local runner supports pipeline(), "
                               f"{', '.join(f + '()' for f in SUPPORTED_FUNCTIONS if f != 'pipeline')}, "
                               "literals, '.property' and '[index]'; fix adf/pipeline.json or "
                               "the pipeline file named above.")

    def parse_all(self) -> Any:
        value = self.parse_expression()
        self.skip_space()
        if self.pos != len(self.text):
            raise self.error(f"unexpected {self.text[self.pos:]!r}")
        return value

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def peek(self, token: str) -> bool:
        return self.text.startswith(token, self.pos)

    def expect(self, token: str) -> None:
        self.skip_space()
        if not self.peek(token):
            raise self.error(f"expected {token!r} at position {self.pos}")
        self.pos += len(token)

    def parse_expression(self) -> Any:
        value = self.parse_primary()
        while True:
            self.skip_space()
            if self.peek("?."):  # safe navigation: null instead of an error
                self.pos += 2
                value = self.member(value, self.name(), safe=True)
            elif self.peek("."):
                self.pos += 1
                value = self.member(value, self.name(), safe=False)
            elif self.peek("["):
                self.pos += 1
                key = self.parse_expression()
                self.expect("]")
                value = self.member(value, key, safe=False)
            else:
                return value

    def parse_primary(self) -> Any:
        self.skip_space()
        if self.peek("'"):
            return self.string_literal()
        number = _NUMBER.match(self.text, self.pos)
        if number:
            self.pos = number.end()
            literal = number.group(0)
            return float(literal) if number.group(1) or number.group(2) else int(literal)
        name = self.name()
        self.skip_space()
        if not self.peek("("):
            literals = {"true": True, "false": False, "null": None}
            if name.lower() in literals:
                return literals[name.lower()]
            raise self.error(f"'{name}' is not a function call or literal")
        self.pos += 1
        args = []
        self.skip_space()
        if not self.peek(")"):
            while True:
                args.append(self.parse_expression())
                self.skip_space()
                if self.peek(","):
                    self.pos += 1
                    continue
                break
        self.expect(")")
        return self.call(name, args)

    def name(self) -> str:
        self.skip_space()
        match = _NAME.match(self.text, self.pos)
        if not match:
            rest = self.text[self.pos:self.pos + 20] or "end of expression"
            raise self.error(f"expected a name at {rest!r}")
        self.pos = match.end()
        return match.group(0)

    def string_literal(self) -> str:
        self.pos += 1
        out = []
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char == "'":
                if self.peek("''"):  # '' is an escaped quote
                    out.append("'")
                    self.pos += 2
                    continue
                self.pos += 1
                return "".join(out)
            out.append(char)
            self.pos += 1
        raise self.error("unterminated string literal")

    def call(self, name: str, args: list) -> Any:
        function = name.lower()
        if function in ("activity", "variables"):
            return self.run_value(function, args)
        if function == "triggerbody":
            if args:
                raise self.error("triggerBody() takes no arguments")
            if self.context.trigger_body is None:
                raise self.error("triggerBody() exists only in a storage event trigger's "
                                 "pipeline parameters")
            return UNKNOWN if self.context.checking else dict(self.context.trigger_body)
        if function in _FUNCTIONS:
            low, high = _ARITY[function]
            if len(args) < low or (high is not None and len(args) > high):
                count = f"{low}" if low == high else f"{low} or more" if high is None else f"{low} to {high}"
                raise self.error(f"{name}() takes {count} argument(s), got {len(args)}")
            if any(a is UNKNOWN for a in args):
                return UNKNOWN
            try:
                return _FUNCTIONS[function](*[_plain(a) for a in args])
            except (TypeError, ValueError) as exc:
                raise self.error(f"{name}(): {exc}") from None
        if function in ("concat", "string", "range") and any(a is UNKNOWN for a in args):
            return UNKNOWN
        if function == "pipeline":
            if args:
                raise self.error("pipeline() takes no arguments")
            return _PipelineObject(self.context)
        if function == "concat":
            if not args:
                raise self.error("concat() needs at least one argument")
            if all(isinstance(a, list) for a in args):
                return [item for a in args for item in a]
            return "".join(to_text(_plain(a)) for a in args)
        if function == "string":
            if len(args) != 1:
                raise self.error("string() takes exactly one argument")
            return to_text(_plain(args[0]))
        if function == "range":  # range(startIndex, count): count integers from startIndex
            if len(args) != 2 or not all(isinstance(a, int) and not isinstance(a, bool)
                                         for a in args):
                raise self.error("range() takes two integers: startIndex and count")
            if args[1] < 0:
                raise self.error(f"range() count must be 0 or more, got {args[1]}")
            return list(range(args[0], args[0] + args[1]))
        raise self.error(f"function '{name}' is not supported")

    def run_value(self, function: str, args: list) -> Any:
        """activity('<name>') and variables('<name>'): the run's values (UNKNOWN when checking)."""
        store = self.context.activities if function == "activity" else self.context.variables
        if store is None:
            raise self.error(f"{function}() cannot be used here (only in a pipeline's control "
                             "flow, not in a Custom activity's properties)")
        if len(args) != 1 or not isinstance(args[0], str):
            raise self.error(f"{function}() takes the name of one {function.rstrip('s')} as a "
                             "string literal")
        name = args[0]
        if name not in store:
            known = ", ".join(sorted(store)) or "none"
            what = "activity" if function == "activity" else "variable"
            raise self.error(f"{what} '{name}' is not in the pipeline ({what} names: {known})")
        if self.context.checking:
            return UNKNOWN
        value = store[name]
        if function == "activity" and value is None:
            raise self.error(f"activity '{name}' has not run (it was skipped or is still to run)")
        return value

    def member(self, value: Any, key: Any, safe: bool) -> Any:
        if value is UNKNOWN or key is UNKNOWN:
            return UNKNOWN
        if isinstance(value, _PipelineObject):
            return value.get(key, self)
        if isinstance(value, _Parameters):  # exact names, as ADF resolves parameters
            if key in value:
                return value[key]
            if safe:
                return None
            declared = ", ".join(sorted(value)) or "none"
            raise self.error(f"pipeline parameter '{key}' is not declared (declared: {declared})")
        if isinstance(value, dict):
            if key in value:
                return value[key]
            lowered = {str(k).lower(): v for k, v in value.items()}
            if str(key).lower() in lowered:
                return lowered[str(key).lower()]
            if safe:
                return None
            raise self.error(f"property '{key}' does not exist")
        if isinstance(value, list) and isinstance(key, int):
            if -len(value) <= key < len(value):
                return value[key]
            raise self.error(f"index {key} is out of range")
        if value is None and safe:
            return None
        raise self.error(f"cannot read '{key}' of {type(value).__name__}")


class _PipelineObject:
    """`pipeline()`: its system properties (case-insensitive, as in ADF) and parameters."""

    def __init__(self, context: PipelineContext):
        self.context = context

    def get(self, key: Any, parser: _Parser) -> Any:
        if str(key).lower() == "parameters":
            return _Parameters(self.context.parameters)
        for name, value in self.context.system().items():
            if name.lower() == str(key).lower():
                return value
        raise parser.error(f"pipeline() has no property '{key}'")


class _Parameters(dict):
    """pipeline().parameters: an unknown name is an error that lists the declared ones."""


def _plain(value: Any) -> Any:
    if isinstance(value, _PipelineObject):
        return value.context.system()
    return value


def _truth(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expects a boolean, got {to_text(value)!r}")
    return value


def _empty(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, (str, list, dict)):
        return len(value) == 0
    raise TypeError(f"expects a string, array or object, got {to_text(value)!r}")


def _union(*values: Any) -> Any:
    if all(isinstance(v, dict) for v in values):
        merged: dict = {}
        for value in values:
            merged.update(value)
        return merged
    if all(isinstance(v, list) for v in values):
        out: list = []
        for value in values:
            out += [item for item in value if item not in out]
        return out
    raise TypeError("expects all objects or all arrays")


def _json(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    return json.loads(value)


def _contains(collection: Any, item: Any) -> bool:
    if isinstance(collection, str):
        return str(item) in collection
    if isinstance(collection, (list, dict)):
        return item in collection
    raise TypeError("expects a string, array or object")


def _compare(a: Any, b: Any) -> tuple:
    if isinstance(a, bool) or isinstance(b, bool):
        raise TypeError("cannot compare booleans")
    return a, b


# name → implementation (arguments already evaluated; ADF's functions are not lazy) and the
# number of arguments each takes (low, high; None: no upper bound).
_FUNCTIONS = {
    "and": lambda *a: all(_truth(v) for v in a),
    "or": lambda *a: any(_truth(v) for v in a),
    "not": lambda a: not _truth(a),
    "if": lambda c, a, b: a if _truth(c) else b,
    "equals": lambda a, b: a == b,
    "greater": lambda a, b: _compare(a, b)[0] > _compare(a, b)[1],
    "less": lambda a, b: _compare(a, b)[0] < _compare(a, b)[1],
    "empty": _empty,
    "coalesce": lambda *a: next((v for v in a if v is not None), None),
    "startswith": lambda t, s: str(t).lower().startswith(str(s).lower()),
    "endswith": lambda t, s: str(t).lower().endswith(str(s).lower()),
    "contains": _contains,
    "union": _union,
    "json": _json,
    "int": lambda v: int(v),
    "split": lambda text, delimiter: _text(text, "split").split(_text(delimiter, "split")),
    "skip": lambda collection, count: _items(collection, "skip")[int(count):],
    "join": lambda collection, delimiter: _text(delimiter, "join").join(
        to_text(item) for item in _items(collection, "join")),
}
_ARITY = {"and": (1, None), "or": (1, None), "not": (1, 1), "if": (3, 3), "equals": (2, 2),
          "greater": (2, 2), "less": (2, 2), "empty": (1, 1), "coalesce": (1, None),
          "startswith": (2, 2), "endswith": (2, 2), "contains": (2, 2), "union": (1, None),
          "json": (1, 1), "int": (1, 1), "split": (2, 2), "skip": (2, 2), "join": (2, 2)}


def _text(value: Any, function: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expects a string, got {to_text(value)!r}")
    return value


def _items(value: Any, function: str) -> list:
    if not isinstance(value, list):
        raise TypeError(f"expects an array, got {to_text(value)!r}")
    return value
