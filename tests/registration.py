"""An emulated Dataverse environment to register endpoints in."""

from __future__ import annotations

from tools.emulator import DataverseEmulator

# The routes steps are derived from in these tests (not handlers/, which a project grows).
REGISTRATION_HANDLERS = "tests.registration_handlers"

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
