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


def test_the_project_handlers_are_discovered() -> None:
    router = discover("handlers")
    assert {route.name for route in router.routes} == {
        "handlers.audit_trail.record_audit_line",
        "handlers.contact_email_changed.mark_email_unverified",
        "handlers.welcome_task.open_welcome_task",
    }
    assert "handlers" in sys.modules
