"""The worker interpreter for the conformance suite, and one running worker per module.

The worker runs in its own virtual environment, `.venv-worker`: Python 3.13 (the floor of the
`azure-functions-runtime` the host loads) with exactly the deployed requirements
(requirements.lock) and nothing else, so what runs here is what Azure installs. scripts/test
builds it where a Python 3.13 is found; `DATAVERSE_WORKER_PYTHON` may name another interpreter.
Without one the suite skips with what to do, except under CI=true, where it fails.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WORKER_VENV = ROOT / ".venv-worker"
HOW = (
    "the conformance suite needs Python 3.13 with the deployed requirements in .venv-worker: "
    "install Python 3.13 (e.g. `pyenv install 3.13`), then run scripts/test, which builds it"
)


def _unavailable(message: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def worker_python() -> str:
    python = os.environ.get("DATAVERSE_WORKER_PYTHON") or str(WORKER_VENV / "bin" / "python")
    if not Path(python).exists():
        _unavailable(f"{python} does not exist; {HOW}")
    probe = subprocess.run(
        [
            python,
            "-c",
            "import sys, azure_functions_runtime; print(sys.version_info[:2] >= (3, 13))",
        ],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0 or probe.stdout.strip() != "True":
        _unavailable(f"{python} is not Python 3.13+ with azure-functions-runtime; {HOW}")
    return python


@pytest.fixture(scope="module")
def script_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The app as the deployment package holds it (tools/package.py), unpacked."""
    from tools.package import contents

    root = tmp_path_factory.mktemp("wwwroot")
    for name, data in contents(ROOT):
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return root
