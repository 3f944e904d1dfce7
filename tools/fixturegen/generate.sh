#!/usr/bin/env bash
# Rebuilds tests/fixtures/contexts/*.xml, *.msbin1 and *.dictionary.msbin1 from the JSON
# fixtures with Microsoft's own serializers (Mono's System.Runtime.Serialization is the .NET
# Framework reference source), and shared/context/nbfs.py, the static dictionary of binary XML.
# Needs Debian's mono-mcs, libmono-system-runtime-serialization4.0-cil and
# libmono-system-servicemodel4.0a-cil; the tests do not. With arguments: only those JSON files.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
mcs -nologo -out:"$build/fixturegen.exe" -r:System.Runtime.Serialization.dll -r:System.Xml.dll \
    "$here/Contracts.cs" "$here/Program.cs" "$here/Dictionary.cs" "$here/Transcode.cs"
if [ $# -gt 0 ]; then
  # Only these JSON files (e.g. the emulator's contexts, tools/fixturegen/emulator_contexts.py).
  mono "$build/fixturegen.exe" "$@"
else
  mono "$build/fixturegen.exe" --dictionary "$root/shared/context/nbfs.py" \
    "$root"/tests/fixtures/contexts/*.json
fi
