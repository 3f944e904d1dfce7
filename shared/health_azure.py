"""What only Azure can answer for the delivery checks (shared/health_delivery.py): the age of a
queue's oldest message and the expiry of a send key's Key Vault copy, read with the caller's
identity (an operator or the pipeline: Service Bus Data Owner on the queue, Key Vault Secrets
User on the vault). Topics and event hubs report no queue age here (a subscription's backlog
and an event hub's consumer lag are metrics; see the README's Operate section).
"""

from __future__ import annotations

from datetime import datetime

import httpx
from azure.core.credentials_async import AsyncTokenCredential

from shared.health_delivery import QueueState
from shared.registration import EndpointSpec
from shared.vault import read_secret_expiry, secret_url


class AzureProbes:
    def __init__(
        self,
        credential: AsyncTokenCredential,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.credential = credential
        self.transport = transport

    async def queue(self, endpoint: EndpointSpec) -> QueueState | None:
        if endpoint.contract != "queue":
            return None
        from azure.servicebus.aio import ServiceBusClient
        from azure.servicebus.aio.management import ServiceBusAdministrationClient

        namespace = f"{endpoint.namespace}.servicebus.windows.net"
        async with ServiceBusAdministrationClient(namespace, self.credential) as admin:
            runtime = await admin.get_queue_runtime_properties(endpoint.path)
        active = runtime.active_message_count or 0
        if not active:
            return QueueState(0, None)
        async with (
            ServiceBusClient(namespace, self.credential) as client,
            client.get_queue_receiver(endpoint.path) as receiver,
        ):
            peeked = await receiver.peek_messages(max_message_count=1)
        oldest = peeked[0].enqueued_time_utc if peeked else None
        return QueueState(active, oldest)

    async def secret_expires(self, endpoint: EndpointSpec) -> datetime | None:
        """The `exp` attribute of the Key Vault secret the environment file names (GET secret,
        api-version 7.4); None when the key comes from an environment variable."""
        if not endpoint.sas_key_vault:
            return None
        url = secret_url(endpoint.sas_key_vault)
        return await read_secret_expiry(url, self.credential, transport=self.transport)
