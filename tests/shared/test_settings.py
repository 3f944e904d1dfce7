"""Settings from the environment, and the credential chosen for each place the app runs."""

from __future__ import annotations

import pytest
from azure.identity.aio import DefaultAzureCredential, ManagedIdentityCredential

from shared.dataverse import create_client
from shared.dataverse.auth import EmulatorCredential
from shared.settings import DEFAULT_WRITE_TAG, Settings, SettingsError, make_credential


def test_defaults() -> None:
    settings = Settings.from_environment({})
    assert settings.dataverse_url is None
    assert settings.write_tag == DEFAULT_WRITE_TAG
    assert settings.max_concurrency < 52  # well under the per-user concurrency limit
    assert settings.in_azure is False


def test_values_are_read_and_normalised() -> None:
    settings = Settings.from_environment(
        {
            "DATAVERSE_URL": "https://contoso.crm.dynamics.com/",
            "DATAVERSE_WRITE_TAG": "contoso-sync",
            "DATAVERSE_CALL_BUDGET_SECONDS": "20",
            "DATAVERSE_MAX_CONCURRENCY": "4",
            "AZURE_CLIENT_ID": "11111111-2222-3333-4444-555555555555",
            "WEBSITE_INSTANCE_ID": "abc",
            "ALLOWED_ORGANIZATIONS": (
                "Contoso.crm.dynamics.com, 0f000000-0000-4000-8000-0000000000aa"
            ),
            "LOG_ATTRIBUTE_VALUES": "true",
        }
    )
    assert settings.dataverse_url == "https://contoso.crm.dynamics.com"
    assert settings.write_tag == "contoso-sync"
    assert settings.call_budget_seconds == 20
    assert settings.max_concurrency == 4
    assert settings.in_azure
    assert settings.allowed_organizations == {
        "contoso.crm.dynamics.com",
        "0f000000-0000-4000-8000-0000000000aa",
    }
    assert settings.log_attribute_values


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DATAVERSE_URL", "contoso.crm.dynamics.com"),
        ("DATAVERSE_CALL_BUDGET_SECONDS", "soon"),
        ("DATAVERSE_MAX_CONCURRENCY", "-1"),
        ("DATAVERSE_REQUEST_BUDGET", "-5"),
    ],
)
def test_malformed_settings_are_refused(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_environment({name: value})


async def test_managed_identity_in_azure_and_developer_credentials_locally() -> None:
    user_assigned = make_credential(
        Settings(in_azure=True, managed_identity_client_id="11111111-2222-3333-4444-555555555555")
    )
    system_assigned = make_credential(Settings(in_azure=True))
    local = make_credential(Settings(in_azure=False))
    assert isinstance(user_assigned, ManagedIdentityCredential)
    assert isinstance(system_assigned, ManagedIdentityCredential)
    assert isinstance(local, DefaultAzureCredential)
    for credential in (user_assigned, system_assigned, local):
        await credential.close()


async def test_client_from_settings() -> None:
    with pytest.raises(SettingsError, match="DATAVERSE_URL"):
        create_client(Settings())
    client = create_client(
        Settings(dataverse_url="https://contoso.crm.dynamics.com", write_tag="t", max_concurrency=3)
    )
    assert client.api_url == "https://contoso.crm.dynamics.com/api/data/v9.2/"
    assert client.options.tag == "t"
    await client.aclose()


async def test_the_shared_request_budget_is_counted_in_the_table_store_only() -> None:
    url = "https://contoso.crm.dynamics.com"
    storage = "UseDevelopmentStorage=true"
    table = Settings.from_environment(
        {"DATAVERSE_URL": url, "IDEMPOTENCY_STORE": "table", "AzureWebJobsStorage": storage}
    )
    client = create_client(table)
    assert client.budget is not None
    assert client.budget.requests == 5700
    await client.aclose()
    for off in (
        Settings.from_environment({**dict(DATAVERSE_URL=url), "IDEMPOTENCY_STORE": "memory"}),
        Settings.from_environment(
            {
                "DATAVERSE_URL": url,
                "IDEMPOTENCY_STORE": "table",
                "AzureWebJobsStorage": storage,
                "DATAVERSE_REQUEST_BUDGET": "0",
            }
        ),
    ):
        client = create_client(off)
        assert client.budget is None
        await client.aclose()


async def test_a_loopback_dataverse_url_is_the_emulator_and_needs_no_login() -> None:
    local = make_credential(Settings(dataverse_url="http://127.0.0.1:8765"))
    assert isinstance(local, EmulatorCredential)
    assert (await local.get_token("http://127.0.0.1:8765/.default")).token == "emulator"
    remote = make_credential(Settings(dataverse_url="https://contoso.crm.dynamics.com"))
    assert isinstance(remote, DefaultAzureCredential)
    await remote.close()
    # In Azure the managed identity is used whatever the URL says.
    azure = make_credential(Settings(dataverse_url="http://localhost:8765", in_azure=True))
    assert isinstance(azure, ManagedIdentityCredential)
    await azure.close()


# What each plan sets, of the variables `running_in_azure` reads (the rest of each plan's
# variables are irrelevant here). Flex Consumption, the plan infra/main.bicep deploys, sets no
# WEBSITE_INSTANCE_ID: detection resting on it alone turned every fail-closed guard off there.
PLANS = {
    "flex consumption": {"WEBSITE_OWNER_NAME": "sub+flex-abc-webspace", "IDENTITY_ENDPOINT": "x"},
    "flex consumption, our bicep": {"DATAVERSE_HOSTING": "azure", "WEBSITE_OWNER_NAME": "s"},
    "linux consumption": {"WEBSITE_OWNER_NAME": "sub+rg-westeuropewebspace-Linux"},
    "premium or dedicated": {"WEBSITE_INSTANCE_ID": "abc", "WEBSITE_OWNER_NAME": "s"},
    "only our bicep's setting": {"DATAVERSE_HOSTING": "azure"},
}


@pytest.mark.parametrize("plan", sorted(PLANS))
def test_azure_is_recognised_on_every_plan_and_its_guards_hold(plan: str) -> None:
    environ = PLANS[plan]
    assert Settings.from_environment(environ).in_azure
    with pytest.raises(SettingsError, match="memory"):
        Settings.from_environment({**environ, "IDEMPOTENCY_STORE": "memory"})


def test_func_start_on_a_laptop_is_not_azure() -> None:
    local = {
        "FUNCTIONS_WORKER_RUNTIME": "python",
        "AzureWebJobsStorage": "UseDevelopmentStorage=true",
        "WEBSITE_HOSTNAME": "localhost:7071",  # Core Tools sets this one locally
    }
    assert not Settings.from_environment(local).in_azure
