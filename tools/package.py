"""Zip the function app as Azure builds it remotely: the tracked files minus .funcignore.

    python tools/package.py app.zip

Standard library only, so a pipeline can run it before installing anything. The remote build
(Flex Consumption) installs the package's requirements.txt, so the package carries
requirements.lock under that name: Azure installs the exact versions the tests ran, not the
newest releases inside the ranges.
"""

from __future__ import annotations

import argparse
import fnmatch
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def ignored_patterns(root: Path = ROOT) -> list[str]:
    lines = (root / ".funcignore").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def is_ignored(path: str, patterns: list[str]) -> bool:
    parts = path.split("/")
    for pattern in patterns:
        # A pattern names a file or folder at any depth ("tests"), or a path ("infra/*.bicep").
        if fnmatch.fnmatch(path, pattern) or any(
            fnmatch.fnmatch("/".join(parts[: depth + 1]), pattern) for depth in range(len(parts))
        ):
            return True
        if "/" not in pattern and any(fnmatch.fnmatch(part, pattern) for part in parts):
            return True
    return False


def files_to_package(root: Path = ROOT) -> list[str]:
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=root, check=True, capture_output=True, text=True
    ).stdout.split()
    patterns = ignored_patterns(root)
    return sorted(path for path in tracked if not is_ignored(path, patterns))


LOCK = "requirements.lock"


def deployed_requirements(root: Path = ROOT) -> str:
    """The lock, as the requirements.txt of the package."""
    lock = (root / LOCK).read_text(encoding="utf-8")
    return f"# {LOCK} of this commit: exact versions (the ranges are in the repository)\n{lock}"


def contents(root: Path = ROOT) -> Iterator[tuple[str, bytes]]:
    """Each file of the package with what it holds there."""
    for path in files_to_package(root):
        if path == "requirements.txt":
            yield path, deployed_requirements(root).encode("utf-8")
        elif path != LOCK:
            yield path, (root / path).read_bytes()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python tools/package.py",
        description="Zip the function app as Azure builds it: tracked files minus .funcignore, "
        "requirements.txt holding the locked versions.",
    )
    parser.add_argument(
        "target", nargs="?", default="app.zip", help="the zip to write (default: app.zip)"
    )
    target = Path(parser.parse_args(argv[1:]).target)
    count = 0
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, data in contents():
            archive.writestr(path, data)
            count += 1
    print(f"{target}: {count} files")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
