#!/usr/bin/env bash
# Rebuilds tests/fixtures/contexts/*.xml and *.msbin1 from the JSON fixtures with Microsoft's
# own serializers (Mono's System.Runtime.Serialization is the .NET Framework reference source).
# Needs Debian's mono-mcs and libmono-system-runtime-serialization4.0-cil; the tests do not.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
mcs -nologo -out:"$build/fixturegen.exe" -r:System.Runtime.Serialization.dll -r:System.Xml.dll \
    "$here/Contracts.cs" "$here/Program.cs"
mono "$build/fixturegen.exe" "$root"/tests/fixtures/contexts/*.json
