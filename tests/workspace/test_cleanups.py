"""Clean-ups registered for `python -m workspace down` (workspace/cleanups.py), run as
processes. The deployer's own (settling dead scoring jobs) is tested end to end in
tests/deployer/engine/test_faults.py (local-down)."""
from __future__ import annotations

import json

from workspace.cleanups import CLEANUPS_DIR, register_cleanup, run_cleanups


def test_down_runs_each_registered_module_and_says_what_it_prints(tmp_path):
    data = tmp_path / "data.json"
    data.write_text(json.dumps({"said": "by the clean-up"}))
    register_cleanup(tmp_path, "printer", "json.tool", "--compact", str(data))
    register_cleanup(tmp_path, "printer", "json.tool", "--compact", str(data))  # once
    register_cleanup(tmp_path, "zz-failing", "json.tool", str(tmp_path / "missing.json"))
    lines = []

    assert run_cleanups(tmp_path, lines.append) is False
    assert lines[0] == '{"said":"by the clean-up"}'
    assert lines[1].startswith("warning: clean-up zz-failing failed (exit 2)")
    assert len(lines) == 2


def test_a_registration_that_is_not_a_module_is_skipped_and_said(tmp_path):
    (tmp_path / CLEANUPS_DIR).mkdir()
    (tmp_path / CLEANUPS_DIR / "bad.json").write_text('{"module": "-c import os"}')
    lines = []
    assert run_cleanups(tmp_path, lines.append) is False
    assert lines == [f"warning: skipped clean-up {tmp_path / CLEANUPS_DIR / 'bad.json'}: "
                     "'-c import os' is not a module name"]


def test_nothing_registered_is_nothing_to_do(tmp_path):
    assert run_cleanups(tmp_path, print) is True
