"""How much decoding costs next to parsing the JSON itself.

For a corpus of realistic messages (the project's JSON fixtures, plus the team's public captures
when ../shared/dataverse-samples exists) it times, per message and in the same run:
  - orjson.loads of the bytes (the baseline: the least any JSON consumer pays);
  - parse_context (what the dispatcher pays before routing);
  - full materialisation: parse_context, then every member of every context touched, parents,
    images and every value of every entity included;
  - the touch floor: touching every value of a context decoded beforehand, which is what full
    materialisation would cost if decoding were free (the walk alone, in Python).
GUID and date memos are cleared before each decode, so figures are for a cold message.
Targets: parse <= 2.0x, materialise <= 4.0x. It also times the full decoding of each
fixture's .NET binary form against its XML form (target: binary <= 2.0x xml). The last line is
machine-readable.

    python -m benchmarks.decode [--rounds N]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from shared.context import Entity, EntityCollection, RemoteExecutionContext, parse_context, values
from shared.context.execution import _FIELDS

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT.parent / "shared" / "dataverse-samples"


def corpus() -> list[tuple[str, bytes]]:
    files = sorted((ROOT / "tests" / "fixtures" / "contexts").glob("*.json"))
    if SAMPLES.is_dir():
        files += sorted(SAMPLES.glob("*.json"))
    return [(path.name, path.read_bytes()) for path in files]


def touch(value: Any) -> int:
    """Read every value reachable from `value`; returns how many were read. Exact-type checks:
    an ABC isinstance costs more than the decoding it would measure."""
    kind = type(value)
    if kind is dict:
        return sum(touch(item) for item in value.values())
    if kind is Entity:
        return 1 + touch(value.attributes) + touch(value.formatted_values)
    if kind is list or kind is tuple:
        return sum(touch(item) for item in value)
    if kind is EntityCollection:
        return 1 + touch(value.entities)
    return 1


def materialise(body: bytes) -> int:
    return touch_context(parse_context(body))


def touch_context(context: RemoteExecutionContext | None) -> int:
    """Touch every member of the context and its parents; returns how many values were read."""
    count = 0
    while context is not None:
        for name in _FIELDS:
            if name != "parent_context":
                count += touch(getattr(context, name))
        context = context.parent_context
    return count


def best_time(function: Callable[[bytes], object], body: bytes, rounds: int) -> float:
    """Best of `rounds` batches: the least disturbed measurement on a noisy machine."""
    batch = max(1, 20_000 // max(1, len(body) // 100))
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(batch):
            values.clear_caches()
            function(body)
        best = min(best, (time.perf_counter() - start) / batch)
    return best


def walk_of(context: RemoteExecutionContext) -> Callable[[bytes], object]:
    """The touch floor's workload: the same walk over a context decoded beforehand."""
    return lambda _body: touch_context(context)


def cold_parse(body: bytes) -> object:
    return parse_context(body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds; the best counts")
    args = parser.parse_args()
    messages = corpus()
    # The baseline also clears the memos, so both sides pay the same loop overhead.
    totals = {"orjson": 0.0, "parse": 0.0, "materialise": 0.0, "touch": 0.0}
    print(
        f"{'message':48} {'bytes':>7} {'orjson us':>10} {'parse x':>8} {'full x':>7} {'touch x':>8}"
    )
    for name, body in messages:
        decoded = parse_context(body).validate()
        base = best_time(orjson.loads, body, args.rounds)
        parse = best_time(cold_parse, body, args.rounds)
        full = best_time(materialise, body, args.rounds)
        walk = best_time(walk_of(decoded), body, args.rounds)
        totals["orjson"] += base
        totals["parse"] += parse
        totals["materialise"] += full
        totals["touch"] += walk
        ratios = f"{parse / base:8.2f} {full / base:7.2f} {walk / base:8.2f}"
        print(f"{name[:48]:48} {len(body):7} {base * 1e6:10.1f} {ratios}")
    parse_ratio = totals["parse"] / totals["orjson"]
    materialise_ratio = totals["materialise"] / totals["orjson"]
    touch_floor = totals["touch"] / totals["orjson"]
    print(f"corpus: {len(messages)} messages; ratios are sums of per-message times")
    print("targets: parse <= 2.0x, materialise <= 4.0x (of which the touch floor is the walk)")
    binary_vs_xml = binary_against_xml(args.rounds)
    print(
        f"parse_ratio={parse_ratio:.2f} materialise_ratio={materialise_ratio:.2f} "
        f"touch_floor={touch_floor:.2f} binary_vs_xml={binary_vs_xml:.2f}"
    )


def decode_fully(content_type: str) -> Callable[[bytes], object]:
    return lambda body: parse_context(body, content_type).validate()


def binary_against_xml(rounds: int) -> float:
    """Full decoding of each fixture's .NET binary form against its XML form (target <= 2.0x)."""
    fixtures = ROOT / "tests" / "fixtures" / "contexts"
    xml_total = binary_total = 0.0
    print(f"\n{'context':40} {'xml us':>8} {'binary us':>10} {'ratio':>6}")
    for xml_path in sorted(fixtures.glob("*.xml")):
        for variant in (".msbin1", ".dictionary.msbin1"):
            binary = xml_path.with_name(xml_path.stem + variant).read_bytes()
            xml_time = best_time(decode_fully("application/xml"), xml_path.read_bytes(), rounds)
            binary_time = best_time(decode_fully("application/msbin1"), binary, rounds)
            xml_total += xml_time
            binary_total += binary_time
            name = xml_path.stem + variant
            print(
                f"{name[:40]:40} {xml_time * 1e6:8.1f} {binary_time * 1e6:10.1f} "
                f"{binary_time / xml_time:6.2f}"
            )
    print("target: binary <= 2.0x xml")
    return binary_total / xml_total


if __name__ == "__main__":
    main()
