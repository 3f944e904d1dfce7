"""Writes the contexts the emulator posts for a few writes (tests/fixtures/emulator/*.json), so
that generate.sh can write them again with Microsoft's serializers as XML and .NET binary:

    python -m tools.fixturegen.emulator_contexts
    tools/fixturegen/generate.sh tests/fixtures/emulator/*.json

tests/tools/test_posting_formats.py then checks that the emulator's own XML and binary writers
(tools/emulator/formats.py) decode, value by value, to what Microsoft's serializers wrote.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import orjson

from shared.dataverse import DataverseClient
from shared.registration import load_environment
from tools.emulator import AnyToken, DataverseEmulator
from tools.endpoints import reconcile

OUT = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "emulator"
ENVIRONMENT = "https://contoso.crm.dynamics.com"


async def sas_key(endpoint: object) -> str:
    return "not-a-real-key"


def client(emulator: DataverseEmulator, token: str) -> DataverseClient:
    return DataverseClient(
        ENVIRONMENT, auth=AnyToken(token), transport=httpx.ASGITransport(app=emulator)
    )


async def main() -> None:
    emulator = DataverseEmulator(environment_url=ENVIRONMENT)
    emulator.seed_sdk_messages({m: ["account", "contact"] for m in ("Create", "Update", "Delete")})
    emulator.add_identity("nancy", "Nancy Davolio")
    async with client(emulator, "pipeline") as pipeline:
        await reconcile(pipeline, load_environment("local"), apply=True, sas_key=sas_key)
    async with client(emulator, "nancy") as nancy:
        account = await nancy.create("accounts", {"name": "Northwind Traders", "industrycode": 7})
        contact = await nancy.create(
            "contacts",
            {
                "lastname": "Davolio",
                "emailaddress1": "nancy@example.com",
                "parentcustomerid_account@odata.bind": f"/accounts({account})",
            },
        )
        await nancy.update("contacts", contact, {"emailaddress1": "nancy.d@example.com"})
        await nancy.delete("contacts", contact)
    OUT.mkdir(parents=True, exist_ok=True)
    names = ["account-create", "contact-update", "contact-delete"]
    for name, message in zip(names, emulator.broker.sent, strict=True):
        (OUT / f"{name}.json").write_bytes(orjson.dumps(orjson.loads(message.body)))
        print(f"wrote {OUT / name}.json")


if __name__ == "__main__":
    asyncio.run(main())
