"""The decode benchmark's workload reads what it claims to read (it is not run by the suite)."""

from __future__ import annotations

import orjson

from benchmarks.decode import corpus, materialise, touch_context
from shared.context import parse_context
from shared.context.execution import _FIELDS, _LAZY
from tests.conftest import context_bytes


def test_full_materialisation_touches_as_many_values_as_a_decoded_context_holds() -> None:
    for name, body in corpus():
        assert materialise(body) == touch_context(parse_context(body).validate()), name


def test_every_column_of_the_target_and_the_images_is_counted() -> None:
    body = context_bytes("contact-update.json")
    tree = orjson.loads(body)
    target = tree["InputParameters"][0]["value"]
    images = [
        image["value"] for key in ("PreEntityImages", "PostEntityImages") for image in tree[key]
    ]
    # Header members, the plain parameter, and each column; every entity counts itself too.
    header = len(_FIELDS) - len(_LAZY)
    at_least = header + 1 + 1 + len(target["Attributes"])
    at_least += sum(
        1 + len(image["Attributes"]) + len(image["FormattedValues"]) for image in images
    )
    assert materialise(body) >= at_least
