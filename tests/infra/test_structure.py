"""The infrastructure, settings and pipelines agree with the code.

Bicep cannot be compiled on our machines, so these tests read it as text: every app setting the
code reads is set by the template and listed in local.settings.json.example; the app identity's
roles are exactly those its triggers and stores need; no secret leaves the deployment; the
workflows pass actionlint and every pipeline file parses.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BICEP = (ROOT / "infra" / "main.bicep").read_text()
ENVIRONMENTS = ("dev", "test", "prod")

# Settings the host provides, or that have an identity-based twin in Azure.
PROVIDED_BY_HOST = {"WEBSITE_INSTANCE_ID", "WEBSITE_OWNER_NAME", "IDENTITY_ENDPOINT"}
# Set in Azure only: in the local example it would make `func start` refuse to run.
AZURE_ONLY = {"DATAVERSE_HOSTING"}
ALTERNATIVES = {
    "AzureWebJobsStorage": "AzureWebJobsStorage__accountName",
    "AzureWebJobsStorage__accountName": "AzureWebJobsStorage",
}


def settings_read_by_code() -> set[str]:
    names: set[str] = set()
    for path in [ROOT / "function_app.py", *(ROOT / "shared").rglob("*.py")]:
        source = path.read_text()
        names.update(re.findall(r'\b(?:text|number)\("([A-Za-z_]+)"', source))
        names.update(re.findall(r'environ\.get\("([A-Za-z_]+)"', source))
        if "AZURE_MARKERS = (" in source:
            markers = source[source.index("AZURE_MARKERS = (") :].split(")", 1)[0]
            names.update(re.findall(r'"([A-Za-z_]+)"', markers))
        names.update(re.findall(r'"%([A-Za-z_]+)%"', source))
        names.update(re.findall(r'connection="([A-Za-z]+)"', source))
    return names


def bicep_app_settings() -> set[str]:
    block = BICEP[BICEP.index("appSettings: [") :]
    block = block[: block.index("\n      ]")]
    return set(re.findall(r"name: '([A-Za-z_]+)'", block))


def example_settings() -> set[str]:
    return set(json.loads((ROOT / "local.settings.json.example").read_text())["Values"])


def satisfied(name: str, available: set[str]) -> bool:
    if name in available or ALTERNATIVES.get(name) in available:
        return True
    # A connection name is satisfied by its identity-based settings.
    return any(setting.startswith(f"{name}__") for setting in available)


def test_the_scan_finds_the_settings() -> None:
    found = settings_read_by_code()
    assert {
        "DATAVERSE_URL",
        "ALLOWED_ORGANIZATIONS",
        "DATAVERSE_QUEUE_NAME",
        "ServiceBusConnection",
        "EventHubConnection",
        "HEALTH_SCHEDULE",
        "IDEMPOTENCY_STORE",
    } <= found


def missing_from(available: set[str]) -> list[str]:
    """The settings the code reads that neither the host nor `available` provides."""
    return sorted(
        name
        for name in settings_read_by_code() - PROVIDED_BY_HOST
        if not satisfied(name, available)
    )


def test_every_setting_the_code_reads_is_set_by_the_infrastructure() -> None:
    assert missing_from(bicep_app_settings()) == []


def test_every_setting_the_code_reads_is_in_the_local_settings_example() -> None:
    assert missing_from(example_settings() | AZURE_ONLY) == []
    assert not AZURE_ONLY & example_settings()


def role_assignments() -> list[dict[str, str]]:
    found = []
    for match in re.finditer(
        r"resource (\w+) 'Microsoft\.Authorization/roleAssignments@[^']+' = "
        r"(?:if \([^\n]*\) )?\{(.*?)\n\}",
        BICEP,
        re.S,
    ):
        body = match.group(2)
        found.append(
            {
                "name": match.group(1),
                "scope": re.search(r"scope: (\w+)", body).group(1),  # type: ignore[union-attr]
                "role": re.search(r"roles\.(\w+)", body).group(1),  # type: ignore[union-attr]
                "principal": re.search(r"principalId: ([\w.]+)", body).group(1),  # type: ignore[union-attr]
            }
        )
    return found


def test_the_app_identity_has_exactly_the_roles_its_triggers_and_stores_need() -> None:
    app_roles = {
        (assignment["scope"], assignment["role"])
        for assignment in role_assignments()
        if assignment["principal"] == "identity.properties.principalId"
    }
    assert app_roles == {
        # the queue and topic triggers: receive, and the management read that target-based
        # scaling needs, on the one entity each reads
        ("queue", "serviceBusDataOwner"),
        ("subscription", "serviceBusDataOwner"),
        ("hub", "eventHubsDataReceiver"),  # the Event Hub trigger
        ("storage", "storageBlobDataOwner"),  # host state, checkpoints, package, poison store
        ("claimsTable", "storageTableDataContributor"),  # idempotency claims and watermarks
        ("insights", "monitoringMetricsPublisher"),  # telemetry with Entra authentication
    }
    source = (ROOT / "function_app.py").read_text()
    assert "service_bus_queue_trigger" in source
    assert "service_bus_topic_trigger" in source
    assert "event_hub_message_trigger" in source


def test_role_ids_are_the_built_in_definitions() -> None:
    ids = dict(re.findall(r"\n  (\w+): '([0-9a-f-]{36})'", BICEP))
    assert ids["serviceBusDataOwner"] == "090c5cfd-751d-490a-894a-3ce6f1109419"
    assert ids["storageTableDataContributor"] == "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3"
    assert ids["storageBlobDataOwner"] == "b7e6dc6d-f1e8-4753-8033-0f276bb0955b"
    assert {assignment["role"] for assignment in role_assignments()} <= set(ids)


def test_no_secret_leaves_the_deployment() -> None:
    outputs = re.findall(r"^output .*$", BICEP, re.M)
    assert outputs
    leaks = r"listKeys|primaryKey|secondaryKey|ConnectionString|secrets|sendKey"
    assert not any(re.search(leaks, line) for line in outputs), outputs
    for line in BICEP.splitlines():
        if "listKeys()" in line:
            assert "value:" in line  # only ever the value of a Key Vault secret
    assert BICEP.count("rights: [ 'Send' ]") == 3  # Dataverse's rules can send, nothing else
    assert "'Listen'" not in BICEP
    assert "'Manage'" not in BICEP


def test_every_parameter_is_used_and_every_environment_sets_the_required_ones() -> None:
    params = re.findall(r"^param (\w+) \w+( = .*)?$", BICEP, re.M)
    for name, _ in params:
        assert len(re.findall(rf"\b{name}\b", BICEP)) > 1, f"param {name} is never used"
    required = {name for name, default in params if not default}
    for environment in ENVIRONMENTS:
        text = (ROOT / "infra" / "environments" / f"{environment}.bicepparam").read_text()
        assert "using '../main.bicep'" in text
        assigned = set(re.findall(r"^param (\w+) =", text, re.M))
        assert required <= assigned, f"{environment} misses {required - assigned}"
        assert assigned <= {name for name, _ in params}


def test_environment_files_name_the_resources_the_infrastructure_creates() -> None:
    for environment in ENVIRONMENTS:
        params = (ROOT / "infra" / "environments" / f"{environment}.bicepparam").read_text()
        base = re.search(r"param baseName = '([^']+)'", params).group(1)  # type: ignore[union-attr]
        spec = tomllib.loads((ROOT / "infra" / "environments" / f"{environment}.toml").read_text())
        for endpoint in spec["endpoints"]:
            assert endpoint["namespace"] == f"sb-{base}"
            assert endpoint["sas_key_vault"] == f"kv-{base}/dataverse-send-key"
            assert endpoint["sas_key_name"] == "dataverse-send"
        url = re.search(r"param dataverseUrl = '([^']+)'", params).group(1)  # type: ignore[union-attr]
        assert spec["dataverse_url"] == url


PIPELINES = [
    *sorted((ROOT / ".github" / "workflows").glob("*.yml")),
    ROOT / "azure-pipelines.yml",
    ROOT / ".azure-pipelines" / "deploy-environment.yml",
]


@pytest.mark.parametrize("path", PIPELINES, ids=lambda path: path.name)
def test_pipeline_files_parse(path: Path) -> None:
    assert isinstance(yaml.safe_load(path.read_text()), dict)


def test_workflows_pass_actionlint() -> None:
    actionlint = shutil.which("actionlint") or str(Path(sys.executable).parent / "actionlint")
    if not Path(actionlint).exists():
        pytest.fail("actionlint is not installed (requirements-dev.txt)")
    workflows = sorted(str(path) for path in (ROOT / ".github" / "workflows").glob("*.yml"))
    result = subprocess.run([actionlint, *workflows], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_workflows_use_federation_and_no_secrets() -> None:
    for path in (ROOT / ".github" / "workflows").glob("*.yml"):
        assert "secrets." not in path.read_text(), path.name
    deploy = yaml.safe_load((ROOT / ".github" / "workflows" / "deploy-environment.yml").read_text())
    assert deploy["permissions"]["id-token"] == "write"
    steps = deploy["jobs"]["deploy"]["steps"]
    commands = " ".join(step.get("run", "") for step in steps)
    assert "tools.endpoints apply" in commands
    assert "tools.health" in commands
    assert deploy["jobs"]["deploy"]["environment"] == "${{ inputs.environment }}"


def test_both_pipelines_deploy_every_environment_in_order() -> None:
    github = yaml.safe_load((ROOT / ".github" / "workflows" / "deploy.yml").read_text())["jobs"]
    assert [
        github[job]["with"]["environment"] for job in ("dev", "test-environment", "prod")
    ] == list(ENVIRONMENTS)
    assert github["prod"]["needs"] == "test-environment"
    devops = yaml.safe_load((ROOT / "azure-pipelines.yml").read_text())["stages"]
    templates = [stage["parameters"] for stage in devops if "template" in stage]
    assert [t["environment"] for t in templates] == list(ENVIRONMENTS)
    assert [t["dependsOn"] for t in templates] == ["Package", "Deploy_dev", "Deploy_test"]


def test_the_package_holds_the_app_and_its_environment_files_only() -> None:
    from tools import package

    files = package.files_to_package(ROOT)
    assert "function_app.py" in files
    assert "host.json" in files
    assert "requirements.txt" in files
    assert "infra/environments/dev.toml" in files
    assert not any(
        path.startswith(("tests/", "tools/", ".github/", "benchmarks/")) for path in files
    )
    assert not any(path.endswith((".bicep", ".bicepparam", ".md")) for path in files)


def test_the_package_makes_azure_install_the_locked_versions(tmp_path: Path) -> None:
    import zipfile

    from tools import package

    target = tmp_path / "app.zip"
    assert package.main(["package", str(target)]) == 0
    with zipfile.ZipFile(target) as archive:
        deployed = archive.read("requirements.txt").decode()
        names = archive.namelist()
    lock = (ROOT / "requirements.lock").read_text(encoding="utf-8")
    assert deployed.endswith(lock)
    assert "requirements.lock" not in names
    assert "function_app.py" in names


def test_azure_runs_the_python_the_lock_and_the_pipelines_test() -> None:
    bicep = (ROOT / "infra" / "main.bicep").read_text(encoding="utf-8")
    assert "param pythonVersion string = '3.13'" in bicep
    assert "runtime: { name: 'python', version: pythonVersion }" in bicep
    ci = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text(encoding="utf-8"))
    [setup] = [
        step for step in ci["jobs"]["test"]["steps"] if "setup-python" in step.get("uses", "")
    ]
    assert setup["with"]["python-version"].split() == ["3.13", "3.11"]
    run = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "VENV=.venv-3.13 bash scripts/test" in run


def test_the_loop_guard_knows_the_app_user_by_default() -> None:
    # The guard's one rule is the initiating user; without APP_USER_OBJECT_ID it is off, so
    # the template fills it with the managed identity's object id when no override is given.
    assert (
        "{ name: 'APP_USER_OBJECT_ID', value: empty(appUserObjectId) ? "
        "identity.properties.principalId : appUserObjectId }"
    ) in BICEP


def test_storage_takes_entra_only_and_keeps_deleted_blobs() -> None:
    storage = BICEP[BICEP.index("resource storage ") :].split("\n}\n", 1)[0]
    assert "allowSharedKeyAccess: false" in storage
    assert "defaultToOAuthAuthentication: true" in storage
    blobs = BICEP[BICEP.index("resource blobs ") :].split("\n}\n", 1)[0]
    assert "deleteRetentionPolicy: { enabled: true" in blobs
    assert "containerDeleteRetentionPolicy: { enabled: true" in blobs
    assert "isVersioningEnabled: true" in blobs


def test_every_key_vault_secret_expires() -> None:
    secrets = re.findall(
        r"resource \w+ 'Microsoft\.KeyVault/vaults/secrets@[^']+' = [^{]*\{(.*?)\n\}", BICEP, re.S
    )
    assert len(secrets) == 3
    assert all("attributes: secretAttributes" in body for body in secrets)
    assert "exp: dateTimeToEpoch(dateTimeAdd(deployedAt" in BICEP


def test_no_basic_publishing_credentials() -> None:
    policies = re.findall(
        r"basicPublishingCredentialsPolicies@[^']+' = \{\s*parent: app\s*name: '(\w+)'\s*"
        r"properties: \{ allow: false \}",
        BICEP,
    )
    assert sorted(policies) == ["ftp", "scm"]


def test_key_vault_service_bus_event_hubs_and_the_app_send_diagnostics_to_the_workspace() -> None:
    scopes = re.findall(
        r"diagnosticSettings@[^']+' = [^{]*\{\s*name: [^\n]+\s*scope: (\w+)\s*"
        r"properties: \{\s*workspaceId: logs\.id",
        BICEP,
    )
    assert sorted(scopes) == ["app", "eventHubs", "serviceBus", "vault"]
    vault = BICEP[BICEP.index("resource vaultAudit ") :].split("\n}\n", 1)[0]
    assert "categoryGroup: 'audit', enabled: true" in vault


def resource(name: str) -> str:
    """The text of one resource declaration, up to its closing brace."""
    start = BICEP.index(f"\nresource {name} ")
    return BICEP[start + 1 :].split("\n}", 1)[0]


def test_no_principal_holds_a_role_on_a_whole_namespace() -> None:
    # Operators and the app get Service Bus roles on their entities only: other queues and
    # topics in the namespace stay out of reach.
    scopes = {assignment["scope"] for assignment in role_assignments()}
    assert not scopes & {"serviceBus", "eventHubs"}, scopes
    operators = {
        (assignment["scope"], assignment["role"])
        for assignment in role_assignments()
        if assignment["principal"] == "operatorsPrincipalId"
    }
    assert operators == {("queue", "serviceBusDataOwner"), ("topic", "serviceBusDataOwner")}


def test_the_scaling_role_is_justified_beside_it() -> None:
    before = BICEP[: BICEP.index("\nresource queueConsumer ")]
    comment = before[before.rindex("\n\n") :]
    assert "GetQueueRuntimeProperties" in comment
    assert "Data Receiver only" in comment


def test_storage_and_key_vault_close_to_the_public_network_in_private_mode() -> None:
    storage = resource("storage")
    assert "publicNetworkAccess: privateNetworking ? 'Disabled' : 'Enabled'" in storage
    assert "defaultAction: privateNetworking ? 'Deny' : 'Allow'" in storage
    vault = resource("vault")
    assert (
        "publicNetworkAccess: privateNetworking && empty(deployerIpRanges) ? 'Disabled' : 'Enabled'"
        in vault
    )
    assert "defaultAction: privateNetworking ? 'Deny' : 'Allow'" in vault
    assert "ipRules: map(deployerIpRanges" in vault
    # each closes only where the private endpoints exist
    links = BICEP[BICEP.index("var privateLinks = [") :].split("\n]", 1)[0]
    assert re.findall(r"group: '(\w+)'", links) == ["blob", "table", "vault"]
    for name in ("privateZones", "privateZoneLinks", "privateEndpoints", "privateEndpointZones"):
        assert "if (privateNetworking)" in resource(name).splitlines()[0]


def test_private_mode_integrates_the_app_with_one_outbound_address() -> None:
    vnet = resource("vnet")
    assert "serviceName: 'Microsoft.App/environments'" in vnet  # Flex Consumption's delegation
    assert "natGateway: { id: nat.id }" in vnet
    app = resource("app")
    assert "virtualNetworkSubnetId: privateNetworking ?" in app
    assert "dependsOn: [ vnet, privateEndpointZones ]" in app
    assert "output outboundAddress string = privateNetworking ? natAddress" in BICEP


def test_the_site_refuses_requests_and_deploys_through_entra_only() -> None:
    app = resource("app")
    assert "ipSecurityRestrictionsDefaultAction: 'Deny'" in app
    assert "scmIpSecurityRestrictionsUseMain: false" in app
    source = (ROOT / "function_app.py").read_text()
    assert "http_trigger" not in source
    assert ".route(" not in source


def test_brokers_state_their_public_access_and_take_an_address_allow_list() -> None:
    brokers = (("serviceBus", "serviceBusNetwork"), ("eventHubs", "eventHubsNetwork"))
    for namespace, rules in brokers:
        assert "publicNetworkAccess: 'Enabled'" in resource(namespace)
        body = resource(rules)
        assert "defaultAction: empty(brokerIpRanges) ? 'Allow' : 'Deny'" in body
        assert "ipRules: map(brokerAllowedRanges" in body
        assert "trustedServiceAccessEnabled: false" in body
    assert "Dataverse posts over the public network" in resource("serviceBus")
    assert "natAddress.properties.ipAddress" in BICEP[BICEP.index("var brokerAllowedRanges") :]


def test_the_root_key_and_telemetry_ingestion_are_justified() -> None:
    root = BICEP[BICEP.index("// RootManageSharedAccessKey") :].split("\n\n", 1)[0]
    assert "listKeys" in root
    assert "grants nobody" in root
    insights = resource("insights")
    assert "publicNetworkAccessForIngestion: 'Enabled'" in insights
    assert "Private Link Scope" in insights


def test_the_table_role_is_scoped_to_the_table_the_template_creates() -> None:
    table = resource("tableContributor")
    assert "scope: claimsTable" in table
    assert "name: idempotencyTable" in resource("claimsTable")


def test_the_fleet_is_sized_under_one_application_users_concurrency_limit() -> None:
    # maximumInstances x dataverseMaxConcurrency <= 52 (Learn, "Service protection API limits"),
    # in the template's defaults and in every environment's parameters.
    default_instances = int(re.search(r"param maximumInstances int = (\d+)", BICEP).group(1))  # type: ignore[union-attr]
    per_instance = int(re.search(r"param dataverseMaxConcurrency int = (\d+)", BICEP).group(1))  # type: ignore[union-attr]
    assert default_instances * per_instance <= 52
    assert "value: string(dataverseMaxConcurrency)" in BICEP
    for name in ENVIRONMENTS:
        params = (ROOT / "infra" / "environments" / f"{name}.bicepparam").read_text()
        instances = int(re.search(r"param maximumInstances = (\d+)", params).group(1))  # type: ignore[union-attr]
        found = re.search(r"param dataverseMaxConcurrency = (\d+)", params)
        assert instances * (int(found.group(1)) if found else per_instance) <= 52, name
