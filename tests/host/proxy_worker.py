"""Stands in for the proxy half of the Functions Python worker, which the host ships and PyPI
does not: for Python 3.13+ the host starts the proxy, and the proxy hands every request to the
app's own `azure_functions_runtime`. This script does what the proxy does, no more:

- reads the command line the host passes (`--host`, `--port`, `--workerId`, `--requestId`,
  `--grpcMaxMessageLength` and their `--functions-*` twins), which the Service Bus extension also
  reads from `sys.argv` to reach the host's Settlement service;
- puts `AzureWebJobsScriptRoot` on `sys.path`, as the worker does;
- opens `FunctionRpc.EventStream`, says `StartStream`, and answers each request by calling the
  runtime's entry point for it (`worker_init_request`, `functions_metadata_request`,
  `function_load_request`, `invocation_request`) with the request and the properties the proxy
  passes (`host`, `protos`); invocations run concurrently, as in the real worker;
- forwards log records to the host as `RpcLog` (the root logger at INFO, as in the worker).

Run by tests/host/host.py with the deployed requirements (requirements.lock) and Python 3.13.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from types import SimpleNamespace
from typing import Any

import grpc
from functionrpc import FunctionRpc_pb2 as protos
from functionrpc import FunctionRpc_pb2_grpc as services


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--workerId", "--functions-worker-id", dest="worker_id")
    parser.add_argument("--requestId", "--functions-request-id", dest="request_id")
    parser.add_argument(
        "--grpcMaxMessageLength",
        "--functions-grpc-max-message-length",
        dest="max_message_length",
        type=int,
        default=2**31 - 1,
    )
    parser.add_argument("--functions-uri")
    args, _ = parser.parse_known_args(argv)
    return args


class LogForwarder(logging.Handler):
    """Sends each record to the host as RpcLog, tagged with the invocation it belongs to."""

    def __init__(self, outgoing: asyncio.Queue[Any], loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(logging.INFO)
        self.outgoing = outgoing
        self.loop = loop

    def emit(self, record: logging.LogRecord) -> None:
        from azure_functions_runtime import invocation_id_cv

        levels = {
            logging.DEBUG: protos.RpcLog.Debug,
            logging.INFO: protos.RpcLog.Information,
            logging.WARNING: protos.RpcLog.Warning,
            logging.ERROR: protos.RpcLog.Error,
            logging.CRITICAL: protos.RpcLog.Critical,
        }
        log = protos.RpcLog(
            invocation_id=invocation_id_cv.get() or "",
            category=record.name,
            level=levels.get(record.levelno, protos.RpcLog.Information),
            message=self.format(record),
            log_category=protos.RpcLog.User,
        )
        message = protos.StreamingMessage(rpc_log=log)
        try:
            on_loop = asyncio.get_running_loop() is self.loop
        except RuntimeError:
            on_loop = False
        if on_loop:  # in order with the invocation's response, which follows it
            self.outgoing.put_nowait(message)
        else:
            self.loop.call_soon_threadsafe(self.outgoing.put_nowait, message)


async def serve(args: argparse.Namespace) -> None:
    import azure_functions_runtime as runtime

    loop = asyncio.get_running_loop()
    outgoing: asyncio.Queue[Any] = asyncio.Queue()
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    root.addHandler(LogForwarder(outgoing, loop))
    runtime.start_threadpool_executor()

    options = [
        ("grpc.max_send_message_length", args.max_message_length),
        ("grpc.max_receive_message_length", args.max_message_length),
    ]
    async with grpc.aio.insecure_channel(f"{args.host}:{args.port}", options=options) as channel:
        stream = services.FunctionRpcStub(channel).EventStream()
        await stream.write(
            protos.StreamingMessage(
                request_id=args.request_id,
                start_stream=protos.StartStream(worker_id=args.worker_id),
            )
        )

        async def write_all() -> None:
            while True:
                await stream.write(await outgoing.get())

        writer = asyncio.create_task(write_all())
        properties = {"host": args.host, "protos": protos}
        handlers = {
            "worker_init_request": (runtime.worker_init_request, "worker_init_response"),
            "functions_metadata_request": (
                runtime.functions_metadata_request,
                "function_metadata_response",
            ),
            "function_load_request": (runtime.function_load_request, "function_load_response"),
            "invocation_request": (runtime.invocation_request, "invocation_response"),
        }
        pending: set[asyncio.Task[None]] = set()

        async def answer(message: Any, kind: str) -> None:
            entry, response_field = handlers[kind]
            request = SimpleNamespace(request=message, properties=properties)
            if kind == "invocation_request":
                runtime.invocation_id_cv.set(message.invocation_request.invocation_id)
            response = await entry(request)
            await outgoing.put(
                protos.StreamingMessage(request_id=message.request_id, **{response_field: response})
            )

        async for message in stream:
            kind = message.WhichOneof("content")
            if kind == "worker_terminate":
                break
            if kind not in handlers:
                continue
            task = asyncio.create_task(answer(message, kind))
            pending.add(task)
            task.add_done_callback(pending.discard)
        writer.cancel()


def main() -> None:
    args = parse_args(sys.argv[1:])
    # The script's own folder is no part of the worker's path (its modules would shadow the app's).
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [entry for entry in sys.path if os.path.abspath(entry or ".") != here]
    root = os.environ.get("AzureWebJobsScriptRoot")  # noqa: SIM112 (the host's name)
    if root:
        sys.path.append(root)
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
