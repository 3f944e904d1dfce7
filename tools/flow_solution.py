"""An unmanaged solution a maker imports (Power Automate > Solutions > Import), holding the
publishing flows of an environment file's `[[flows]]`, their connection references and their
environment variables. Import asks for the two connections; then turn the flow on.

    python -m tools.flow_solution --env dev [--out dist/ContosoEventsFlows.zip]

The zip's layout is the packed solution format as exported solutions show it: solution.xml
(the manifest: a root component per flow, type 29, and per environment variable, type 380),
customizations.xml (the flows' metadata, `<Workflow>` with category 5, and the connection
references), Workflows/<name>-<ID>.json (the definitions, shared/flow_definition.py) and
environmentvariabledefinitions/<schema>/environmentvariabledefinition.xml. It is checked here
for its structure only: no Dataverse imports it on this machine.
"""

from __future__ import annotations

import argparse
import re
import uuid
import zipfile
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from shared.flow_definition import STRING_VARIABLE, connection_references, variables
from shared.registration import EnvironmentSpec, load_environment
from tools.flow_registration import definition

CONTENT_TYPES = (
    '<?xml version="1.0" encoding="utf-8"?><Types xmlns="http://schemas.openxmlformats.org/'
    'package/2006/content-types"><Default Extension="xml" ContentType="application/octet-stream"'
    ' /><Default Extension="json" ContentType="application/octet-stream" /></Types>'
)
CONNECTORS = {"dataverse": "shared_commondataserviceforapps", "servicebus": "shared_servicebus"}


def flow_id(spec: EnvironmentSpec, name: str) -> str:
    """Stable per flow name, so a re-import updates the flow instead of adding one."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "dataverse-event-consumers:flow:" + name))


def _workflow(workflow_id: str, name: str, json_name: str) -> str:
    return f"""    <Workflow WorkflowId="{{{workflow_id}}}" Name={quoteattr(name)}>
      <JsonFileName>/Workflows/{escape(json_name)}</JsonFileName>
      <Type>1</Type><Subprocess>0</Subprocess><Category>5</Category><Mode>0</Mode>
      <Scope>4</Scope><OnDemand>0</OnDemand><TriggerOnCreate>0</TriggerOnCreate>
      <TriggerOnDelete>0</TriggerOnDelete><AsyncAutodelete>0</AsyncAutodelete>
      <SyncWorkflowLogOnFailure>0</SyncWorkflowLogOnFailure>
      <StateCode>0</StateCode><StatusCode>1</StatusCode><RunAs>1</RunAs>
      <IsTransacted>1</IsTransacted><IntroducedVersion>1.0.0.0</IntroducedVersion>
      <IsCustomizable>1</IsCustomizable><BusinessProcessType>0</BusinessProcessType>
      <IsCustomProcessingStepAllowedForOtherPublishers>1</IsCustomProcessingStepAllowedForOtherPublishers>
      <ModernFlowType>0</ModernFlowType><PrimaryEntity>none</PrimaryEntity>
      <LocalizedNames><LocalizedName languagecode="1033" description={quoteattr(name)} /></LocalizedNames>
    </Workflow>"""  # noqa: E501


def _connection_reference(logical_name: str) -> str:
    kind = "dataverse" if "dataverse" in logical_name.lower() else "servicebus"
    return f"""    <connectionreference connectionreferencelogicalname={quoteattr(logical_name)}>
      <connectionreferencedisplayname>{escape(logical_name)}</connectionreferencedisplayname>
      <connectorid>/providers/Microsoft.PowerApps/apis/{CONNECTORS[kind]}</connectorid>
      <iscustomizable>1</iscustomizable><promptingbehavior>0</promptingbehavior>
      <statecode>0</statecode><statuscode>1</statuscode>
    </connectionreference>"""


def _variable(schema: str, default: str) -> str:
    return f"""<?xml version="1.0" encoding="utf-8"?>
<environmentvariabledefinition schemaname={quoteattr(schema)}>
  <defaultvalue>{escape(default)}</defaultvalue>
  <displayname default={quoteattr(schema)}>
    <label description={quoteattr(schema)} languagecode="1033" />
  </displayname>
  <introducedversion>1.0.0.0</introducedversion>
  <iscustomizable>1</iscustomizable>
  <isrequired>1</isrequired>
  <secretstore>0</secretstore>
  <type>{STRING_VARIABLE}</type>
</environmentvariabledefinition>
"""


def build(spec: EnvironmentSpec, out: Path) -> list[str]:
    """Write the solution to `out`; returns the names of the files it holds."""
    flows = [flow for flow in spec.flows if flow.table]
    if not flows:
        raise SystemExit(f"{spec.name}: no [[flows]] entry with a table: nothing to package")
    unique = re.sub(r"[^A-Za-z0-9]", "", spec.solution or "DataverseEvents") + "Flows"
    prefix = flows[0].prefix
    roots, workflows, references, files = [], [], {}, {}
    found_variables: dict[str, str] = {}
    for flow in flows:
        raw = definition(spec, flow)
        workflow_id = flow_id(spec, flow.name)
        json_name = f"{re.sub(r'[^A-Za-z0-9]', '', flow.name)}-{workflow_id.upper()}.json"
        files[f"Workflows/{json_name}"] = raw
        workflows.append(_workflow(workflow_id, flow.name, json_name))
        roots.append(f'      <RootComponent type="29" id="{{{workflow_id}}}" behavior="0" />')
        for name in connection_references(raw):
            references[name] = _connection_reference(name)
        for schema, default in variables(raw).values():
            found_variables[schema] = default
    for schema, default in sorted(found_variables.items()):
        files[f"environmentvariabledefinitions/{schema}/environmentvariabledefinition.xml"] = (
            _variable(schema, default)
        )
        roots.append(f'      <RootComponent type="380" schemaName="{schema}" behavior="0" />')
    files["[Content_Types].xml"] = CONTENT_TYPES
    files["solution.xml"] = f"""<?xml version="1.0" encoding="utf-8"?>
<ImportExportXml version="9.2.0.0" SolutionPackageVersion="9.2" languagecode="1033" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <SolutionManifest>
    <UniqueName>{unique}</UniqueName>
    <LocalizedNames><LocalizedName description="{unique}" languagecode="1033" /></LocalizedNames>
    <Descriptions><Description description="Cloud flows that publish Dataverse rows to the event consumers' queue" languagecode="1033" /></Descriptions>
    <Version>1.0.0.0</Version>
    <Managed>0</Managed>
    <Publisher>
      <UniqueName>{prefix}</UniqueName>
      <LocalizedNames><LocalizedName description="{prefix}" languagecode="1033" /></LocalizedNames>
      <Descriptions /><EMailAddress xsi:nil="true" /><SupportingWebsiteUrl xsi:nil="true" />
      <CustomizationPrefix>{prefix}</CustomizationPrefix>
      <CustomizationOptionValuePrefix>10000</CustomizationOptionValuePrefix>
      <Addresses />
    </Publisher>
    <RootComponents>
{chr(10).join(roots)}
    </RootComponents>
    <MissingDependencies />
  </SolutionManifest>
</ImportExportXml>
"""  # noqa: E501
    files["customizations.xml"] = f"""<?xml version="1.0" encoding="utf-8"?>
<ImportExportXml xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" OrganizationSchemaType="Standard">
  <Entities /><Roles />
  <Workflows>
{chr(10).join(workflows)}
  </Workflows>
  <FieldSecurityProfiles /><Templates /><EntityMaps /><EntityRelationships />
  <OrganizationSettings /><optionsets /><CustomControls /><EntityDataProviders />
  <connectionreferences>
{chr(10).join(references[name] for name in sorted(references))}
  </connectionreferences>
  <Languages><Language>1033</Language></Languages>
</ImportExportXml>
"""  # noqa: E501
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, text in files.items():
            archive.writestr(name, text.encode("utf-8"))
    return sorted(files)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", required=True, help="the environment file (infra/environments)")
    parser.add_argument(
        "--out", type=Path, default=None, help="the zip to write (default: dist/<solution>.zip)"
    )
    args = parser.parse_args(argv)
    spec = load_environment(args.env, handlers=None)
    out = args.out or Path("dist") / f"{args.env}-flows.zip"
    for name in build(spec, out):
        print(f"  {name}")
    print(f"wrote {out}: import it in Power Automate (Solutions > Import), connect both")
    print("connection references when asked, then turn the flow on")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
