"""Steps derived from routes: what Dataverse must post so that every handler gets its events."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from shared.registration import ImageSpec, StepSpec, load_environment
from shared.routing import Router, discover
from shared.steps import derive_steps, uncovered
from tests.infra.test_structure import ENVIRONMENTS
from tools import endpoints


async def handler(context: object, dataverse: object) -> None:
    return None


def test_routes_of_one_table_and_message_make_one_step_with_the_union_of_their_needs() -> None:
    router = Router()
    router.on(
        entity="contact",
        message="Update",
        attributes=["emailaddress1"],
        pre_image=["emailaddress1"],
    )(handler)

    async def phones(context: object, dataverse: object) -> None:
        return None

    router.on(
        entity="contact",
        message="Update",
        attributes=["telephone1"],
        pre_image=["telephone1"],
        post_image="*",
    )(phones)
    router.on(entity="account", message="Create")(handler)
    router.on(entity="*", message="*")(phones)  # needs no step of its own
    (update, create) = derive_steps(router.routes)
    assert (update.entity, update.message, update.stage, update.mode) == (
        "contact",
        "Update",
        40,
        1,
    )
    assert update.filtering_attributes == ("emailaddress1", "telephone1")
    assert update.images == (
        ImageSpec("PreImage", "pre", ("emailaddress1", "telephone1")),
        ImageSpec("PostImage", "post", ()),  # every column
    )
    assert (create.entity, create.message, create.filtering_attributes, create.images) == (
        "account",
        "Create",
        (),
        (),
    )
    assert uncovered(router.routes, [update, create]) == []


def test_a_route_taking_every_change_makes_an_unfiltered_step() -> None:
    router = Router()
    router.on(entity="contact", message="Update", attributes=["emailaddress1"])(handler)

    async def every(context: object, dataverse: object) -> None:
        return None

    router.on(entity="contact", message="Update")(every)
    (step,) = derive_steps(router.routes)
    assert step.filtering_attributes == ()


def test_steps_that_leave_a_route_short_are_named() -> None:
    router = Router()
    router.on(
        entity="contact", message="Update", attributes=["telephone1"], pre_image=["telephone1"]
    )(handler)

    async def deletes(context: object, dataverse: object) -> None:
        return None

    router.on(entity="lead", message="*")(deletes)
    narrow = StepSpec(
        message="Update",
        entity="contact",
        filtering_attributes=("emailaddress1",),
        images=(ImageSpec("PreImage", "pre", ("emailaddress1",)),),
    )
    problems = uncovered(router.routes, [narrow])
    assert problems == [
        "tests.shared.test_steps.handler: the step does not post changes of ['telephone1']; "
        "reads ['telephone1'] from the PreImage, which does not carry them",
        "tests.shared.test_steps.test_steps_that_leave_a_route_short_are_named.<locals>.deletes "
        "(lead *): no step posts its events",
    ]


@pytest.mark.parametrize("environment", [*ENVIRONMENTS, "local"])
def test_every_route_of_the_project_is_covered_in_every_environment(environment: str) -> None:
    spec = load_environment(environment)
    steps = [step for endpoint in spec.endpoints for step in endpoint.steps]
    routes = discover("handlers").routes
    assert uncovered(routes, steps) == []
    assert any(step.source.startswith("routes") for step in steps)  # derived ones
    assert any(step.source == "file" for step in steps)  # and the file's extra ones


NEW_HANDLER = """
from shared import DataverseClient, RemoteExecutionContext, Router

router = Router()


@router.on(entity="contact", message="Update", attributes=["telephone1"], pre_image=["telephone1"])
async def phone_changed(context: RemoteExecutionContext, dataverse: DataverseClient) -> None:
    return None
"""


def test_a_new_handler_module_shows_up_in_the_offline_steps_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The newcomer's case: a telephone1 handler beside the email one. Without derivation its
    # step was never registered; now the contact Update step takes both columns and images.
    package = tmp_path / "newcomer_handlers"
    package.mkdir()
    (package / "__init__.py").write_text("")
    root = Path(__file__).resolve().parents[2]
    for module in (root / "handlers").glob("[!_]*.py"):
        (package / module.name).write_text(module.read_text())
    (package / "phone_changed.py").write_text(textwrap.dedent(NEW_HANDLER))
    monkeypatch.syspath_prepend(str(tmp_path))
    assert endpoints.main(["steps", "--env", "dev", "--handlers", "newcomer_handlers"]) == 0
    rows = json.loads(capsys.readouterr().out)
    (update,) = [row for row in rows if (row["table"], row["message"]) == ("contact", "Update")]
    assert update["filtering_attributes"] == ["emailaddress1", "telephone1"]
    assert update["pre_image"] == ["emailaddress1", "telephone1"]
    assert update["post_image"] == ["emailaddress1"]
    assert "newcomer_handlers.phone_changed.phone_changed" in update["routes"]
    for row in rows:
        assert {
            "table",
            "message",
            "stage",
            "mode",
            "filtering_attributes",
            "pre_image",
            "post_image",
            "endpoint",
        } <= set(row)


def test_an_override_in_the_file_that_leaves_a_route_short_fails_the_steps_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    source = (
        Path(endpoints.__file__).resolve().parents[1] / "infra" / "environments" / "dev.toml"
    ).read_text()
    source += textwrap.dedent(
        """
        [[endpoints.steps]]
        message = "Update"
        entity = "contact"
        filtering_attributes = ["fullname"]
        """
    )
    (tmp_path / "narrow.toml").write_text(source)
    monkeypatch.setattr("shared.registration.ENVIRONMENTS", tmp_path)
    assert endpoints.main(["steps", "--env", "narrow"]) == 1
    err = capsys.readouterr().err
    assert "uncovered: handlers.contact_email_changed.mark_email_unverified" in err
    assert "does not post changes of ['emailaddress1']" in err
