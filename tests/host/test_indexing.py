"""The fast check: function_app.py indexed in this process by the runtime's own loader
(`index_function_app` + `process_indexed_function`), with every trigger configured. It needs
azure-functions-runtime, whose floor is Python 3.13, so it runs in CI's 3.13 pass of the suite
(and wherever the suite runs on 3.13); the worker-process suite beside it runs on any Python."""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

import pytest

from tests.host.rpc import protocol_path
from tests.test_function_app import TRIGGER_SETTINGS, fresh_function_app

runtime = pytest.importorskip(
    "azure_functions_runtime", reason="azure-functions-runtime needs Python 3.13 (CI's 3.13 pass)"
)


def test_the_runtime_indexes_all_five_functions(monkeypatch: pytest.MonkeyPatch) -> None:
    from azure_functions_runtime.bindings.meta import load_binding_registry
    from azure_functions_runtime.functions import Registry
    from azure_functions_runtime.loader import index_function_app, process_indexed_function

    monkeypatch.syspath_prepend(str(protocol_path()))
    protos = importlib.import_module("functionrpc.FunctionRpc_pb2")
    module: ModuleType = fresh_function_app(monkeypatch, TRIGGER_SETTINGS)
    load_binding_registry()
    # index_function_app imports the module by name, as the worker does: this one.
    assert sys.modules["function_app"] is module
    indexed = index_function_app(module.__file__)
    metadata, _ = process_indexed_function(protos, Registry(), indexed, str(module.__file__))
    assert sorted(entry.name for entry in metadata) == [
        "dataverse_event_hub",
        "dataverse_health",
        "dataverse_housekeeping",
        "dataverse_queue",
        "dataverse_topic",
    ]
