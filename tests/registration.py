"""An emulated Dataverse environment to register endpoints in."""

from __future__ import annotations

from tools.emulator import DataverseEmulator

SDK_MESSAGES = {
    "Create": ["account", "contact"],
    "Update": ["account", "contact"],
    "Delete": ["account", "contact"],
}


def environment() -> DataverseEmulator:
    emulator = DataverseEmulator()
    emulator.seed_sdk_messages(SDK_MESSAGES)
    return emulator


async def sas_key(endpoint: object) -> str:
    return "a-44-character-key-that-is-not-a-real-key=="
