"""Names Dataverse knows, for checking routes when they are declared rather than when an event
never comes: SDK messages a step can be registered on, the stages a service endpoint step can
use, and standard tables whose logical names carry no publisher prefix.

A table or message missing here is refused with a suggestion; custom APIs and custom tables
carry a publisher prefix (`contoso_Escalate`, `contoso_project`) and are accepted as such, and
tables.toml adds any table the project describes.
"""

from __future__ import annotations

import difflib
import re


def _words(text: str) -> list[str]:
    return text.split()


# Messages with sdkmessagefilters for tables (Learn: "Use messages with the SDK for .NET",
# and the sdkmessage rows of any environment). Matching is case-insensitive.
SDK_MESSAGES = frozenset(
    _words(
        """
        Create Update Delete Retrieve RetrieveMultiple Upsert CreateMultiple UpdateMultiple
        UpsertMultiple DeleteMultiple Assign SetState SetStateDynamicEntity Merge Associate
        Disassociate GrantAccess ModifyAccess RevokeAccess QualifyLead Win Lose Close Cancel
        Fulfill Reschedule Book Send SendFromTemplate DeliverIncoming Route AddToQueue
        PickFromQueue ReleaseToQueue RemoveFromQueue AddItem AddMember AddMembers RemoveMember
        AddListMembers CopyMembersList ExecuteWorkflow Recalculate CalculatePrice
        CalculateActualValue Publish PublishAll ImportSolution ExportSolution InstantiateTemplate
        Reactivate
        """
    )
)
_MESSAGES_BY_KEY = {name.lower(): name for name in SDK_MESSAGES}
# Custom API unique names start with their publisher's customization prefix.
_CUSTOM_API = re.compile(r"^[A-Za-z][A-Za-z0-9]*_[A-Za-z0-9_]+$")

# The stages of sdkmessageprocessingstep.stage a service endpoint step can be registered on:
# 10 pre-validation, 20 pre-operation (both synchronous only), 40 post-operation.
STEP_STAGES = {10: "pre-validation", 20: "pre-operation", 40: "post-operation"}

# Standard tables without a publisher prefix that handlers commonly subscribe to.
STANDARD_TABLES = frozenset(
    _words(
        """
    account contact lead opportunity opportunityproduct quote quotedetail salesorder
    salesorderdetail invoice invoicedetail product pricelevel productpricelevel competitor
    incident incidentresolution contract contractdetail entitlement knowledgearticle queue
    queueitem subject territory campaign campaignactivity campaignresponse list listmember
    marketinglist activitypointer activityparty task phonecall email appointment letter fax
    recurringappointmentmaster socialactivity annotation connection connectionrole
    customeraddress systemuser team teammembership businessunit role position
    transactioncurrency organization goal goalrollupquery sharepointdocumentlocation
    sharepointsite documenttemplate template kbarticle feedback post postcomment
    bulkoperation userquery savedquery systemform workflow asyncoperation processsession
    serviceendpoint sdkmessage sdkmessagefilter sdkmessageprocessingstep
    sdkmessageprocessingstepimage solution solutioncomponent publisher plugintype
    pluginassembly environmentvariabledefinition environmentvariablevalue connectionreference
    customapi customapirequestparameter customapiresponseproperty duplicaterule
    mailbox emailserverprofile calendar resource equipment service serviceappointment
    uom uomschedule discount discounttype
    """
    )
)

_LOGICAL = re.compile(r"^[a-z][a-z0-9_]*$")


class RouteError(ValueError):
    """A route names a table, message, stage or column Dataverse would never post."""


def suggestion(name: str, known: set[str] | frozenset[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=3, cutoff=0.75)
    extended = sorted(candidate for candidate in close if candidate.startswith(name))
    best = extended or close
    return f"; did you mean {best[0]!r}?" if best else ""


def check_message(message: str) -> str:
    """The message as Dataverse spells it (`update` -> `Update`), or an error."""
    known = _MESSAGES_BY_KEY.get(message.lower())
    if known is not None:
        return known
    if _CUSTOM_API.match(message):
        return message  # a custom API, named with its publisher prefix
    close = difflib.get_close_matches(message.lower(), sorted(_MESSAGES_BY_KEY), n=1, cutoff=0.6)
    hint = f"; did you mean {_MESSAGES_BY_KEY[close[0]]!r}?" if close else ""
    raise RouteError(
        f"message {message!r} is not an SDK message a step can be registered on{hint} "
        "(a custom API is named with its publisher prefix, e.g. 'contoso_Escalate')"
    )


def check_stage(stage: int | None) -> None:
    if stage is not None and stage not in STEP_STAGES:
        stages = ", ".join(f"{number} ({label})" for number, label in STEP_STAGES.items())
        raise RouteError(f"stage {stage!r} is not a step stage: use {stages}, or leave it out")


def singular_candidates(name: str) -> list[str]:
    """What a plural entity set name might be the plural of: contacts, addresses, companies."""
    candidates = []
    if name.endswith("ies"):
        candidates.append(name[:-3] + "y")
    if name.endswith("es"):
        candidates.append(name[:-2])
    if name.endswith("s"):
        candidates.append(name[:-1])
    return candidates


def check_table(name: str, described: set[str] | frozenset[str]) -> str:
    """The table's logical name, lower case, or an error with the likely intended name.

    Accepted: a standard table, a table tables.toml describes, or a name with a publisher
    prefix (a custom table). Refused: entity set names (plural) and near misses."""
    logical = name.lower()
    if not _LOGICAL.match(logical):
        raise RouteError(
            f"table {name!r} is not a logical name (lower-case letters, digits and underscores)"
        )
    known = STANDARD_TABLES | described
    if logical in known:
        return logical
    for candidate in singular_candidates(logical):
        if candidate in known:
            raise RouteError(
                f"table {name!r} looks like an entity set name; routes take the logical name: "
                f"did you mean {candidate!r}?"
            )
    if "_" in logical:
        return logical  # a custom table with its publisher prefix
    raise RouteError(
        f"table {name!r} is neither a standard table nor described in tables.toml"
        f"{suggestion(logical, known)} (custom tables carry their publisher prefix)"
    )
