"""Decode example messages and print what each one holds.

    python -m tools.replay [FILES...]

Without files it takes the bundled examples in tests/fixtures/contexts. For each message it
prints the format, the routing header and the Target's columns (names only: values stay out of
output by default), or the classified error for a body that is not a readable context.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from shared.context import Entity, EntityReference, message_format, parse_context
from shared.errors import InvalidMessage

EXAMPLES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "contexts"


def describe(path: Path) -> str:
    body = path.read_bytes()
    try:
        context = parse_context(body).validate()
    except InvalidMessage as error:
        return f"{path.name}: dead-letter {error.reason}: {error.message}"
    target = context.target
    if isinstance(target, Entity):
        shown = f"Entity {target.logical_name} columns {sorted(target.attributes)}"
    elif isinstance(target, EntityReference):
        shown = f"EntityReference {target.logical_name}({target.id})"
    else:
        shown = "no Target"
    return (
        f"{path.name}: {message_format(body)} {context.message_name} of "
        f"{context.primary_entity_name} ({context.primary_entity_id}) stage {context.stage}, "
        f"operation {context.operation_id}; {shown}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Decode Dataverse messages and describe them.")
    parser.add_argument("files", nargs="*", type=Path)
    args = parser.parse_args(argv)
    files = args.files or sorted(EXAMPLES.glob("*"))
    for path in files:
        print(describe(path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
