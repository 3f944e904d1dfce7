"""A Dataverse Web API emulator (ASGI), for tests, the embedded demo and local development."""

from tools.emulator.app import API_PREFIX, DataverseEmulator, RecordedRequest
from tools.emulator.store import DEFAULT_TABLES, Table

__all__ = ["API_PREFIX", "DEFAULT_TABLES", "DataverseEmulator", "RecordedRequest", "Table"]
