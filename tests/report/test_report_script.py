"""The report's own script run under node against a minimal DOM (explorer_stub.js): sorting,
filters, the slider and paging, checked against scores.parquet. It runs wherever node is
installed; test_report_browser.py runs the same steps in a real Chromium."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

STUB = Path(__file__).with_name("explorer_stub.js")


def test_the_explorer_sorts_filters_and_counts_under_node(screened, explorer_steps, tmp_path):
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (apt-get install -y nodejs)")
    actions, check = explorer_steps
    (tmp_path / "actions.json").write_text(json.dumps(actions))
    done = subprocess.run(
        [node, str(STUB), str(screened["out"] / "report.html"), str(tmp_path / "actions.json")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["static_hidden"]  # the static top-50 table gives way to the explorer
    check(shown["seen"])
