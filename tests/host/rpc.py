"""The Functions host protocol's message modules, taken at test time from a PyPI package.

`azure-functions-runtime-v1` ships modules generated from the host's FunctionRpc.proto under a
top-level `tests.protos` package, which would collide with this project's `tests`. This module
downloads that wheel (once, into a cache folder), and extracts the generated modules as the
package `functionrpc`, whose relative imports keep working under the new name. Nothing of it is
committed. The Service Bus extension's own `settlement_pb2` modules serve the Settlement service.

    python -m tests.host.rpc   # prepare the cache (scripts/test does this)
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

# The release whose generated modules the host double speaks; the runtime library itself
# (azure-functions-runtime, in requirements.lock) is protocol-compatible with it.
PROTOCOL_WHEEL = "azure-functions-runtime-v1==1.2.0"
PACKAGE = "functionrpc"
CACHE = Path(__file__).resolve().parents[2] / ".cache" / "functionrpc"
_MEMBERS = "tests/protos/"


def protocol_path(cache: Path = CACHE) -> Path:
    """A folder holding the `functionrpc` package: put it on sys.path or PYTHONPATH."""
    package = cache / PACKAGE
    if (package / "FunctionRpc_pb2.py").exists():
        return cache
    wheels = cache / "wheels"
    wheel = next(iter(sorted(wheels.glob("azure_functions_runtime_v1-*.whl"))), None)
    if wheel is None:
        wheels.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--only-binary=:all:",
                "--python-version",
                "3.13",
                PROTOCOL_WHEEL,
                "--dest",
                str(wheels),
            ],
            check=True,
        )
        wheel = next(iter(sorted(wheels.glob("azure_functions_runtime_v1-*.whl"))))
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            if name.startswith(_MEMBERS) and name.endswith(".py"):
                target = package / name[len(_MEMBERS) :]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(archive.read(name))
    if not (package / "FunctionRpc_pb2.py").exists():
        raise RuntimeError(f"{wheel.name} holds no {_MEMBERS}FunctionRpc_pb2.py")
    return cache


if __name__ == "__main__":
    print(protocol_path())
