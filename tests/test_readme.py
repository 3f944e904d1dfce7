"""The README's Python blocks run: a snippet a newcomer copies must work as printed.

Each ```python block is executed as it stands, against the example contexts and the local
emulator: a handler module is imported, its routes checked, and each handler called with an
event for its table and message; the decoding block reads a context; the write-back block
writes to the emulator (top-level `await`, as in an async REPL).
"""

from __future__ import annotations

import ast
import json
import re
import types
from pathlib import Path
from typing import Any

import pytest

from shared.context import parse_context
from shared.routing import Router
from tests.conftest import context_bytes
from tests.dataverse_doubles import emulated_client
from tools.emulator import DataverseEmulator

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)


def test_the_readme_has_the_blocks_this_test_runs() -> None:
    assert len(BLOCKS) >= 3
    assert any("router = Router()" in block for block in BLOCKS)


def contact_update_with(column: str, value: str) -> bytes:
    """The example contact Update, its Target carrying one more column."""
    document = json.loads(context_bytes("contact-update.json"))
    target = next(p for p in document["InputParameters"] if p["key"] == "Target")["value"]
    target["Attributes"].append({"key": column, "value": value})
    return json.dumps(document).encode()


async def run(block: str, namespace: dict[str, Any]) -> None:
    code = compile(block, "README.md", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    result = eval(code, namespace)
    if result is not None:
        await result


@pytest.mark.parametrize("index", range(len(BLOCKS)))
async def test_each_python_block_of_the_readme_runs(index: int) -> None:
    block = BLOCKS[index]
    emulator = DataverseEmulator()
    emulator.add_table("contoso_invoice", alternate_keys=(("contoso_number",),))
    emulator.add_table("salesorder")
    emulator.add_table("salesorderdetail")
    contact_id = "c0000000-0000-4000-8000-000000000007"
    async with emulated_client(emulator) as dataverse:
        await dataverse.upsert("contacts", contact_id, {"lastname": "Davolio"})
        body = contact_update_with("telephone1", "555-0199")
        namespace: dict[str, Any] = {
            "__name__": f"readme_block_{index}",
            "body": body,
            "content_type": "application/json",
            "dataverse": dataverse,
        }
        if "router = Router()" not in block:
            await run(block, namespace)
            return
        module = types.ModuleType(f"readme_block_{index}")
        exec(compile(block, "README.md", "exec"), module.__dict__)
        router = module.router
        assert isinstance(router, Router)
        assert router.routes
        for route in router.routes:
            context = parse_context(body)
            assert route.accepts_target(context)
            before = len(emulator.writes())
            await route.handler(context, dataverse)
            assert len(emulator.writes()) > before, f"{route.name} wrote nothing"
