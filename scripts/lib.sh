# Shared by scripts/test and scripts/demo: a virtual environment that matches the
# requirements files, and an Azurite storage emulator on loopback when the tests need one.

PYTHON=${PYTHON:-python3}
# The test environment; CI's second pass sets VENV=.venv-3.13 with PYTHON=python3.13.
VENV=${VENV:-.venv}

# Installs the deployed requirements at the versions in requirements.lock (a constraint file),
# plus the test and tooling needs, so the suite runs what Azure installs.
ensure_venv() {
  local stamp=$VENV/.requirements.sha
  local want
  want=$(cat requirements.txt requirements-dev.txt requirements.lock | sha256sum | cut -d' ' -f1)
  if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
  fi
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet -r requirements-dev.txt -c requirements.lock
    echo "$want" > "$stamp"
  fi
}

# A Python 3.13 (the floor of the azure-functions-runtime the host loads): PYTHON313, then a
# pyenv build, then python3.13 on PATH. Prints nothing when there is none.
find_python313() {
  local found
  for found in "${PYTHON313:-}" \
    "$(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.13*/bin/python3.13 2>/dev/null | sort -V | tail -1)" \
    "$(command -v python3.13 2>/dev/null)"; do
    if [ -n "$found" ] && "$found" -c 'import sys; assert sys.version_info[:2] == (3, 13)' 2>/dev/null; then
      echo "$found"
      return 0
    fi
  done
}

# The conformance suite's worker: Python 3.13 with exactly requirements.lock, nothing else
# (tests/host). Skipped, with a note, where no Python 3.13 is found; CI=true makes that fatal.
ensure_worker_venv() {
  local python stamp=.venv-worker/.requirements.sha want
  python=$(find_python313)
  if [ -z "$python" ]; then
    echo "no Python 3.13 found: the conformance suite (tests/host) will skip" >&2
    [ -z "${CI:-}" ] || { echo "CI needs Python 3.13 for tests/host" >&2; return 1; }
    return 0
  fi
  want=$(cat requirements.lock | sha256sum | cut -d' ' -f1)
  if [ ! -x .venv-worker/bin/python ]; then
    "$python" -m venv .venv-worker
  fi
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    .venv-worker/bin/python -m pip install --quiet --upgrade pip
    .venv-worker/bin/python -m pip install --quiet -r requirements.lock
    echo "$want" > "$stamp"
  fi
  "$VENV/bin/python" -m tests.host.rpc > /dev/null
}

# Starts Azurite (from the project's own npm install) on three free loopback ports chosen for
# this run, with an account key made for this run, and exports AZURITE_CONNECTION_STRING naming
# exactly that instance. The tests use nothing else: whatever else listens on this machine
# (another Azurite on 10000-10002, any other program) is never mistaken for it.
ensure_azurite() {
  [ -f package.json ] || return 0
  if [ -n "${AZURITE_CONNECTION_STRING:-}" ]; then
    return 0 # an instance this shell already started (scripts/test sources lib.sh once)
  fi
  if [ ! -x node_modules/.bin/azurite ]; then
    npm ci --silent --no-audit --no-fund
  fi
  local ports blob queue table key
  ports=$("$VENV/bin/python" - <<'PY'
import socket
sockets = [socket.socket() for _ in range(3)]
for s in sockets:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in sockets))
PY
)
  read -r blob queue table <<< "$ports"
  key=$("$VENV/bin/python" -c 'import base64, os; print(base64.b64encode(os.urandom(64)).decode())')
  mkdir -p .azurite
  # --skipApiVersionCheck: the Azure SDKs move to new storage API versions before Azurite does.
  AZURITE_ACCOUNTS="devstoreaccount1:$key" node_modules/.bin/azurite --silent --inMemoryPersistence \
    --disableTelemetry --skipApiVersionCheck \
    --blobHost 127.0.0.1 --blobPort "$blob" --queueHost 127.0.0.1 --queuePort "$queue" \
    --tableHost 127.0.0.1 --tablePort "$table" \
    > .azurite/azurite.log 2>&1 &
  AZURITE_PID=$!
  # Wait for it to exit, so a second run right after this one (CI's 3.13 pass) starts its own.
  trap 'kill "$AZURITE_PID" 2>/dev/null; wait "$AZURITE_PID" 2>/dev/null || true' EXIT
  for _ in $(seq 1 50); do
    if ! kill -0 "$AZURITE_PID" 2>/dev/null; then
      break # it exited: a port was taken between choosing and binding, or npm's copy is broken
    fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$table") 2>/dev/null && (exec 3<>"/dev/tcp/127.0.0.1/$blob") 2>/dev/null; then
      export AZURITE_CONNECTION_STRING="DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=$key;BlobEndpoint=http://127.0.0.1:$blob/devstoreaccount1;QueueEndpoint=http://127.0.0.1:$queue/devstoreaccount1;TableEndpoint=http://127.0.0.1:$table/devstoreaccount1"
      return 0
    fi
    sleep 0.2
  done
  echo "Azurite did not start; see .azurite/azurite.log" >&2
  return 1
}
