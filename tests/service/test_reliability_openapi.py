"""Schemathesis against the OpenAPI document a live server serves: every check passes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from api_contract import OPENAPI
from support import TESTS_DIR

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
# SCHEMATHESIS_EXAMPLES=1000 for a deep run; the default keeps the suite quick.
EXAMPLES = os.environ.get("SCHEMATHESIS_EXAMPLES", "100")


def test_every_schemathesis_check_passes(live_server: str, tmp_path: Path) -> None:
    report = tmp_path / "schemathesis.json"
    config = TESTS_DIR / "schemathesis.toml"
    result = subprocess.run(
        [
            str(SCHEMATHESIS),
            "--config-file",
            str(config),
            "run",
            f"{live_server}/openapi.json",
            "--checks",
            "all",
            "--max-examples",
            EXAMPLES,
            "--workers",
            "1",
            "--generation-database",
            "none",
            "--continue-on-failure",
            "--no-color",
            "--report",
            "json",
            "--report-json-path",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=1200,
        cwd=tmp_path,  # its crash cache goes there, not into the checkout
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    run = json.loads(report.read_text())
    print(
        f"\nschemathesis {run['schemathesis_version']}: {run['test_cases']['generated']} requests, "
        f"{len(run['failures'])} failures, phases "
        + ", ".join(f"{name} {phase['status']}" for name, phase in run["phases"].items())
    )
    # Schemathesis leaves out the operation serving the document it was pointed at.
    operations = sum(
        len(methods) for path, methods in OPENAPI["paths"].items() if path != "/openapi.json"
    )
    assert run["operations"]["tested"] == run["operations"]["total"] == operations
    assert run["failures"] == [] and run["errors"] == []
    # The documented example (a real image) is sent and accepted, not only generated data.
    assert run["phases"]["examples"]["status"] == "success"
