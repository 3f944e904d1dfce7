"""A double of the Functions host's side of the worker protocol, for the conformance suite.

It serves what the .NET host serves to a Python worker, on a loopback port chosen per run:
`FunctionRpc.EventStream` (the host is the gRPC server; the worker connects and says
StartStream) and the Service Bus extension's `Settlement` service on the same address, which
is where `ServiceBusMessageActions` sends complete / abandon / dead-letter. It starts the worker
as the host does (command line, `AzureWebJobsScriptRoot`, working directory), then drives it
with WorkerInitRequest, FunctionsMetadataRequest, FunctionLoadRequest and InvocationRequest.
Every settlement and every RpcLog the worker sends is recorded for the tests to read.

Message shapes come from the host protocol (FunctionRpc.proto, as generated in the runtime's
own wheel: tests/host/rpc.py) and the Service Bus extension's settlement.proto.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator, Mapping
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.empty_pb2 import Empty

from tests.host.rpc import protocol_path

sys.path.insert(0, str(protocol_path()))

from azurefunctions.extensions.bindings.protos import settlement_pb2_grpc
from functionrpc import FunctionRpc_pb2 as protos
from functionrpc import FunctionRpc_pb2_grpc as services

__all__ = ["HostDouble", "Settlement", "protos"]

PROXY = Path(__file__).with_name("proxy_worker.py")
MAX_MESSAGE = 2**31 - 1
HOST_VERSION = "4.1040.0"  # a Functions host 4.x version string, as WorkerInitRequest carries


@dataclass(frozen=True)
class Settlement:
    action: str  # complete | abandon | deadletter | defer | renew
    lock_token: str
    reason: str | None = None
    description: str | None = None


class _SettlementService(settlement_pb2_grpc.SettlementServicer):  # type: ignore[misc]
    def __init__(self, record: list[Settlement]) -> None:
        self.record = record

    def Complete(self, request: Any, context: Any) -> Any:  # noqa: N802 (gRPC names)
        self.record.append(Settlement("complete", request.locktoken))
        return Empty()

    def Abandon(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.record.append(Settlement("abandon", request.locktoken))
        return Empty()

    def Deadletter(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.record.append(
            Settlement(
                "deadletter",
                request.locktoken,
                request.deadletterReason.value if request.HasField("deadletterReason") else None,
                request.deadletterErrorDescription.value
                if request.HasField("deadletterErrorDescription")
                else None,
            )
        )
        return Empty()


class _EventStream(services.FunctionRpcServicer):  # type: ignore[misc]
    """One worker connection: what the host sends goes through `outgoing`, what the worker
    answers is matched to the waiting request by request id (or invocation id)."""

    def __init__(self, host: HostDouble) -> None:
        self.host = host

    def EventStream(self, request_iterator: Iterator[Any], context: Any) -> Iterator[Any]:  # noqa: N802
        def read() -> None:
            try:
                for message in request_iterator:
                    self.host._received(message)
            except grpc.RpcError:
                pass  # the worker went away: the test sees it as a timeout

        threading.Thread(target=read, daemon=True).start()
        while True:
            message = self.host._outgoing.get()
            if message is None:
                return
            yield message


@dataclass
class HostDouble:
    script_root: Path
    python: str
    environment: Mapping[str, str] = field(default_factory=dict)
    settlements: list[Settlement] = field(default_factory=list)
    logs: list[Any] = field(default_factory=list)
    functions: dict[str, Any] = field(default_factory=dict)  # name -> RpcFunctionMetadata

    def __post_init__(self) -> None:
        self.worker_id = str(uuid.uuid4())
        self._outgoing: queue.Queue[Any] = queue.Queue()
        self._waiting: dict[str, futures.Future[Any]] = {}
        self._started = threading.Event()
        self._lock = threading.Lock()
        self._server: Any = None
        self._worker: subprocess.Popen[bytes] | None = None
        self.port = 0

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> None:
        options = [
            ("grpc.max_send_message_length", MAX_MESSAGE),
            ("grpc.max_receive_message_length", MAX_MESSAGE),
        ]
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=16), options=options)
        services.add_FunctionRpcServicer_to_server(_EventStream(self), self._server)
        settlement_pb2_grpc.add_SettlementServicer_to_server(
            _SettlementService(self.settlements), self._server
        )
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()
        request_id = str(uuid.uuid4())
        endpoint = ["--host", "127.0.0.1", "--port", str(self.port)]
        command = [self.python, str(PROXY), *endpoint]
        command += ["--workerId", self.worker_id, "--requestId", request_id]
        command += ["--grpcMaxMessageLength", str(MAX_MESSAGE)]
        command += ["--functions-uri", f"http://127.0.0.1:{self.port}/"]
        command += ["--functions-worker-id", self.worker_id]
        command += ["--functions-request-id", request_id]
        command += ["--functions-grpc-max-message-length", str(MAX_MESSAGE)]
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("DATAVERSE_", "PYTHON", "VIRTUAL_ENV"))
        }
        env.update(self.environment)
        env["AzureWebJobsScriptRoot"] = str(self.script_root)
        env["FUNCTIONS_WORKER_RUNTIME"] = "python"
        env["PYTHONPATH"] = str(protocol_path())
        self.stderr_path = self.script_root / ".worker-stderr.log"
        self._stderr = open(self.stderr_path, "wb")  # noqa: SIM115 (closed in stop)
        self._worker = subprocess.Popen(
            command,
            cwd=self.script_root,
            env=env,
            stdout=self._stderr,
            stderr=self._stderr,
        )
        if not self._started.wait(timeout):
            raise TimeoutError(f"the worker did not connect; its output:\n{self.worker_output()}")

    def stop(self) -> None:
        self._outgoing.put(None)
        if self._worker is not None:
            self._worker.terminate()
            try:
                self._worker.wait(10)
            except subprocess.TimeoutExpired:
                self._worker.kill()
        if self._server is not None:
            self._server.stop(grace=1)
        if hasattr(self, "_stderr"):
            self._stderr.close()

    def worker_output(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-8000:]
        except OSError:
            return ""

    # --- protocol -------------------------------------------------------------------------------

    def _received(self, message: Any) -> None:
        kind = message.WhichOneof("content")
        if kind == "start_stream":
            self._started.set()
            return
        if kind == "rpc_log":
            with self._lock:
                self.logs.append(message.rpc_log)
            return
        key = message.request_id
        if kind == "invocation_response":
            key = message.invocation_response.invocation_id
        with self._lock:
            waiting = self._waiting.pop(key, None)
        if waiting is not None:
            waiting.set_result(getattr(message, kind))

    def _request(self, key: str, message: Any, timeout: float) -> Any:
        answer: futures.Future[Any] = futures.Future()
        with self._lock:
            self._waiting[key] = answer
        self._outgoing.put(message)
        try:
            return answer.result(timeout)
        except futures.TimeoutError:
            raise TimeoutError(
                f"no answer from the worker; its output:\n{self.worker_output()}"
            ) from None

    def _call(self, field_name: str, request: Any, timeout: float = 60.0) -> Any:
        request_id = str(uuid.uuid4())
        message = protos.StreamingMessage(request_id=request_id, **{field_name: request})
        return self._request(request_id, message, timeout)

    def init(self) -> Any:
        """WorkerInitRequest: the worker loads the binding registry and indexes the app."""
        return self._call(
            "worker_init_request",
            protos.WorkerInitRequest(
                host_version=HOST_VERSION,
                capabilities={},
                function_app_directory=str(self.script_root),
                worker_directory=str(PROXY.parent),
            ),
        )

    def metadata(self) -> Any:
        """FunctionsMetadataRequest; remembers each function's metadata by name."""
        response = self._call(
            "functions_metadata_request",
            protos.FunctionsMetadataRequest(function_app_directory=str(self.script_root)),
        )
        for metadata in response.function_metadata_results:
            self.functions[metadata.name] = metadata
        return response

    def load_all(self) -> list[Any]:
        return [
            self._call(
                "function_load_request",
                protos.FunctionLoadRequest(function_id=metadata.function_id, metadata=metadata),
            )
            for metadata in self.functions.values()
        ]

    def invoke(
        self,
        function: str,
        inputs: Mapping[str, Any],
        *,
        trigger_metadata: Mapping[str, Any] | None = None,
        retry: tuple[int, int] | None = None,
        timeout: float = 60.0,
    ) -> Any:
        """InvocationRequest with TypedData inputs by binding name; the InvocationResponse."""
        invocation_id = str(uuid.uuid4())
        request = protos.InvocationRequest(
            invocation_id=invocation_id,
            function_id=self.functions[function].function_id,
            input_data=[
                protos.ParameterBinding(name=name, data=data) for name, data in inputs.items()
            ],
            trigger_metadata=dict(trigger_metadata or {}),
            trace_context=protos.RpcTraceContext(
                trace_parent=f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"
            ),
        )
        if retry is not None:
            request.retry_context.CopyFrom(
                protos.RetryContext(retry_count=retry[0], max_retry_count=retry[1])
            )
        message = protos.StreamingMessage(request_id=str(uuid.uuid4()), invocation_request=request)
        return self._request(invocation_id, message, timeout)

    def logs_of(self, invocation_id: str) -> list[Any]:
        with self._lock:
            return [log for log in self.logs if log.invocation_id == invocation_id]
