"""Every command of every CLI (`python -m adf`, `deployer`, `workspace`), walked from its
group: its help has an example, -h works as --help, and any exit code it names is the
table's (workspace/errors.py), with the table's meaning."""
from __future__ import annotations

import re

import click
import pytest
from click.testing import CliRunner

from workspace.errors import EXIT_CODE_MEANINGS, ExitCode


def _roots() -> dict[str, click.Group]:
    from adf.cli import cli as adf
    from deployer.cli import cli as deployer
    from workspace.cli import cli as workspace

    return {"python -m adf": adf, "python -m deployer": deployer,
            "python -m workspace": workspace}


def _walk(command: click.Command, path: tuple[str, ...]):
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            yield from _walk(sub, path + (name,))


COMMANDS = [(prog, path, command) for prog, root in _roots().items()
            for path, command in _walk(root, ())]
IDS = [" ".join((prog, *path)) for prog, path, _ in COMMANDS]
# "exit 7", "exits 0", "exit code 6", "exit code is 6", "Exit code 7" ...
EXIT_MENTION = re.compile(r"\bexit(?:s|\s+codes?)?(?:\s+is)?\s+(\d+)\b(\s*\(([^)]*)\))?", re.I)


def _help(prog: str, path: tuple[str, ...], flag: str = "--help") -> str:
    result = CliRunner().invoke(_roots()[prog], [*path, flag], prog_name=prog)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("prog, path, command", COMMANDS, ids=IDS)
def test_every_command_has_an_example_and_takes_minus_h(prog, path, command):
    text = _help(prog, path)
    assert re.search(r"^\s*Examples?:\s*$", text, re.M), f"{' '.join((prog, *path))}: no example"
    example = re.search(r"^\s*Examples?:\s*\n\s+(.*)$", text, re.M).group(1)
    assert example.startswith(" ".join((prog, *path))), example  # it runs this very command
    assert _help(prog, path, "-h") == text


@pytest.mark.parametrize("prog, path, command", COMMANDS, ids=IDS)
def test_exit_codes_in_help_are_the_tables(prog, path, command):
    text = " ".join(_help(prog, path).split())
    for mention in EXIT_MENTION.finditer(text):
        code = ExitCode(int(mention.group(1)))  # a number not in the table fails here
        assert mention.group(3) == EXIT_CODE_MEANINGS[code], (
            f"{' '.join((prog, *path))}: '{mention.group(0)}' must say "
            f"'exit {code.value} ({EXIT_CODE_MEANINGS[code]})': write {{exit:{code.name}}}")
    if "Exit codes:" in text:
        listed = text.split("Exit codes:", 1)[1]
        for code in ExitCode:
            assert f"{code.value} {EXIT_CODE_MEANINGS[code]}" in listed, code


def test_the_top_level_helps_list_every_exit_code():
    for prog in _roots():
        text = " ".join(_help(prog, ()).split())
        assert "Exit codes: " + " ".join(f"{c.value} {EXIT_CODE_MEANINGS[c]}"
                                         for c in ExitCode) in text, prog


# ------------------------------------------------------------------ az ml's flag names

@pytest.mark.parametrize("path, args, param, value", [
    # `az ml batch-endpoint invoke --deployment-name/-d`
    (("invoke",), ["--input", "x.csv", "--deployment-name", "iris-v2"], "deployment", "iris-v2"),
    (("invoke",), ["--input", "x.csv", "-d", "iris-v2"], "deployment", "iris-v2"),
    (("invoke",), ["--input", "x.csv", "--deployment", "iris-v2"], "deployment", "iris-v2"),
    # `az ml job download --download-path/-p`
    (("jobs", "download"), ["batchjob-1", "--download-path", "out"], "output_dir", "out"),
    (("jobs", "download"), ["batchjob-1", "-p", "out"], "output_dir", "out"),
    # `az ml job show|download|cancel --name/-n`
    (("jobs", "show"), ["-n", "batchjob-1"], "name_option", "batchjob-1"),
    (("jobs", "cancel"), ["--name", "batchjob-1"], "name_option", "batchjob-1"),
    (("jobs", "download"), ["-n", "batchjob-1"], "name_option", "batchjob-1"),
])
def test_az_ml_flag_names_are_aliases(path, args, param, value):
    command = _roots()["python -m deployer"]
    for name in path:
        command = command.commands[name]
    ctx = command.make_context(" ".join(path), list(args))
    assert str(ctx.params[param]) == value


def test_a_job_named_with_minus_n_is_the_job_named_as_the_argument(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCAL_DIR", str(tmp_path))
    monkeypatch.setenv("TARGET", "local")
    run = CliRunner().invoke
    deployer = _roots()["python -m deployer"]
    by_argument = run(deployer, ["jobs", "show", "batchjob-nope"])
    by_name = run(deployer, ["jobs", "show", "-n", "batchjob-nope"])
    assert by_argument.exit_code == by_name.exit_code == ExitCode.NOT_FOUND, by_name.output
    assert "Job 'batchjob-nope' does not exist" in by_name.output
    both = run(deployer, ["jobs", "show", "batchjob-a", "--name", "batchjob-b"])
    neither = run(deployer, ["jobs", "show"])
    assert both.exit_code == neither.exit_code == ExitCode.USAGE
    assert "differ" in both.output and "Missing NAME (or -n/--name NAME)" in neither.output
