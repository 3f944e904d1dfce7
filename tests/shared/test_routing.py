"""Router: matching by table, message, stage and columns; mistakes fail at import."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from shared.context import RemoteExecutionContext, parse_context
from shared.routing import Router, discover
from tests.conftest import context_bytes


def context(name: str = "account-create.json") -> RemoteExecutionContext:
    return parse_context(context_bytes(name))


def names(router: Router, ctx: RemoteExecutionContext) -> list[str]:
    return [route.handler.__name__ for route in router.match(ctx)]


def test_matching_by_entity_message_stage_with_wildcards_in_registration_order() -> None:
    router = Router()

    @router.on(entity="*", message="*")
    async def everything(context, dataverse):
        return None

    @router.on(entity="account", message="Create")
    async def account_created(context, dataverse):
        return None

    @router.on(entity="ACCOUNT", message="create", stage=40)
    async def account_created_post(context, dataverse):
        return None

    @router.on(entity="account", message="Create", stage=20)
    async def account_created_pre(context, dataverse):
        return None

    @router.on(entity="contact", message="*")
    async def any_contact(context, dataverse):
        return None

    @router.on(message="Update")
    async def any_update(context, dataverse):
        return None

    assert names(router, context("account-create.json")) == [
        "everything",
        "account_created",
        "account_created_post",
    ]
    assert names(router, context("contact-update.json")) == [
        "everything",
        "any_contact",
        "any_update",
    ]
    assert names(router, context("custom-api.json")) == ["everything"]


def test_attribute_filter_needs_one_of_the_columns_in_the_target() -> None:
    router = Router()

    @router.on(entity="contact", message="Update", attributes=["EmailAddress1", "telephone1"])
    async def email_or_phone(context, dataverse):
        return None

    @router.on(entity="contact", message="Update", attributes=["telephone1"])
    async def phone_only(context, dataverse):
        return None

    ctx = context("contact-update.json")
    accepted = [route.handler.__name__ for route in router.match(ctx) if route.accepts_target(ctx)]
    assert accepted == ["email_or_phone"]


def test_decorators_return_the_handler_unchanged() -> None:
    router = Router()

    async def handler(context, dataverse):
        return None

    assert router.on(entity="account")(handler) is handler


def test_handlers_must_be_async() -> None:
    router = Router()
    with pytest.raises(TypeError, match="async def"):

        @router.on(entity="account")
        def blocking(context, dataverse):
            return None


def test_handlers_take_context_dataverse_and_optionally_the_event() -> None:
    router = Router()

    @router.on(entity="account")
    async def with_event(context, dataverse, event):
        return None

    assert router.routes[0].wants_event
    with pytest.raises(TypeError, match=r"\(context, dataverse\)"):

        @router.on(entity="account")
        async def too_few(context):
            return None


def test_registering_a_handler_twice_for_the_same_key_fails() -> None:
    router = Router()

    async def handler(context, dataverse):
        return None

    router.on(entity="account", message="Create")(handler)
    router.on(entity="account", message="Update")(handler)  # another key: fine
    with pytest.raises(ValueError, match="registered twice"):
        router.on(entity="Account", message="create")(handler)


def test_attributes_must_be_a_list() -> None:
    with pytest.raises(TypeError, match="list of column names"):
        Router().on(entity="contact", attributes="emailaddress1")


def write_package(root: Path, name: str, modules: dict[str, str]) -> None:
    package = root / name
    package.mkdir()
    (package / "__init__.py").write_text("")
    for module, source in modules.items():
        (package / f"{module}.py").write_text(textwrap.dedent(source))


GOOD = """
    from shared.routing import Router
    router = Router()

    @router.on(entity="account", message="Create")
    async def {name}(context, dataverse):
        return None
"""


def test_discover_merges_every_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_package(
        tmp_path,
        "discovered_ok",
        {
            "b_second": GOOD.format(name="second"),
            "a_first": GOOD.format(name="first"),
            "_private": "raise RuntimeError('never imported')",
        },
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    router = discover("discovered_ok")
    assert names(router, context()) == ["first", "second"]


def test_discover_fails_loudly_on_a_broken_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_package(tmp_path, "discovered_broken", {"oops": "import no_such_module\n"})
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ImportError, match=r"discovered_broken\.oops"):
        discover("discovered_broken")


def test_discover_requires_a_router(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_package(tmp_path, "discovered_routerless", {"plain": "x = 1\n"})
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(TypeError, match=r"discovered_routerless\.plain must define router"):
        discover("discovered_routerless")


def decorated_handlers(package: Path) -> set[str]:
    """Every `@router.on` function of a package's modules, found by reading their source: what
    discovery must find, whatever handlers a project has."""
    import ast

    found = set()
    for path in package.rglob("*.py"):
        relative = path.relative_to(package.parent).with_suffix("")
        if any(part.startswith("_") for part in relative.parts):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.AsyncFunctionDef) and any(
                "router.on" in ast.unparse(decorator) for decorator in node.decorator_list
            ):
                found.add(".".join(relative.parts) + "." + node.name)
    return found


def test_the_project_handlers_are_discovered() -> None:
    # Derived from handlers/, so adding a handler module keeps the suite green.
    router = discover("handlers")
    expected = decorated_handlers(Path(__file__).resolve().parents[2] / "handlers")
    assert "handlers.welcome_task.open_welcome_task" in expected  # the reading works
    assert {route.name for route in router.routes} == expected
    assert "handlers" in sys.modules


# --- mistakes Dataverse would answer with silence, refused at import -------------------------


async def _handler(context: RemoteExecutionContext, dataverse: object) -> None:
    return None


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"entity": "contcat"}, "did you mean 'contact'"),
        ({"entity": "contacts"}, "entity set name.*did you mean 'contact'"),
        ({"entity": "opportunities"}, "did you mean 'opportunity'"),
        ({"entity": "Contact Person"}, "not a logical name"),
        ({"entity": "contact", "message": "Updated"}, "did you mean 'Update'"),
        ({"entity": "contact", "message": "Frobnicate"}, "publisher prefix"),
        ({"entity": "contact", "attributes": ["telephone"]}, "did you mean 'telephone1'"),
        ({"entity": "contact", "pre_image": ["emailadress1"]}, "did you mean 'emailaddress1'"),
        ({"entity": "contact", "stage": 50}, "stage 50 is not a step stage"),
        ({"entity": "account", "message": "Create", "pre_image": ["name"]}, "no pre image"),
        ({"entity": "account", "message": "Delete", "post_image": "*"}, "no post image"),
    ],
)
def test_names_dataverse_would_never_post_are_refused_with_a_suggestion(
    options: dict[str, object], says: str
) -> None:
    from shared.sdk_names import RouteError

    with pytest.raises(RouteError, match=says):
        Router().on(**options)(_handler)  # type: ignore[arg-type]


def test_what_dataverse_posts_is_accepted_in_any_case() -> None:
    router = Router()
    router.on(entity="Contact", message="update", attributes=["TELEPHONE1"])(_handler)
    router.on(entity="contoso_project", message="contoso_Escalate")(_handler)  # custom names
    router.on(entity="contact", message="Create", post_image=["fullname"])(_handler)
    router.on(entity="lead", message="Update", pre_image="*")(_handler)
    routes = router.routes
    assert routes[0].message == "update"
    assert routes[0].attributes == frozenset({"telephone1"})
    assert routes[2].post_image == frozenset({"fullname"})
    assert routes[3].pre_image == frozenset({"*"})


def test_swapped_arguments_are_refused() -> None:
    from shared import DataverseClient

    async def swapped(dataverse: DataverseClient, context: RemoteExecutionContext) -> None:
        return None

    with pytest.raises(TypeError, match="swapped"):
        Router().on(entity="account")(swapped)


def test_modules_in_sub_packages_are_discovered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_package(tmp_path, "discovered_nested", {"top": GOOD.format(name="top")})
    write_package(tmp_path / "discovered_nested", "sales", {"deep": GOOD.format(name="deep")})
    monkeypatch.syspath_prepend(str(tmp_path))
    assert names(discover("discovered_nested"), context()) == ["deep", "top"]


def test_a_folder_of_modules_without_init_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_package(tmp_path, "discovered_folder", {"top": GOOD.format(name="top")})
    (tmp_path / "discovered_folder" / "sales").mkdir()
    (tmp_path / "discovered_folder" / "sales" / "deep.py").write_text(GOOD.format(name="deep"))
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(TypeError, match=r"sales holds handler modules but no __init__\.py"):
        discover("discovered_folder")


def test_a_module_without_router_is_told_how_to_be_a_helper(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_package(tmp_path, "discovered_helper", {"common": "x = 1\n"})
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(TypeError, match=r"discovered_helper/_common\.py"):
        discover("discovered_helper")
