# Shared by scripts/test and scripts/demo: a virtual environment that matches the
# requirements files, and an Azurite storage emulator on loopback when the tests need one.

PYTHON=${PYTHON:-python3}

ensure_venv() {
  local stamp=.venv/.requirements.sha
  local want
  want=$(cat requirements.txt requirements-dev.txt | sha256sum | cut -d' ' -f1)
  if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
  fi
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -r requirements-dev.txt
    echo "$want" > "$stamp"
  fi
}

# Starts Azurite (from the project's own npm install) unless one already listens on 10000-10002.
ensure_azurite() {
  [ -f package.json ] || return 0
  if (exec 3<>/dev/tcp/127.0.0.1/10002) 2>/dev/null; then
    return 0
  fi
  if [ ! -x node_modules/.bin/azurite ]; then
    npm ci --silent --no-audit --no-fund
  fi
  mkdir -p .azurite
  # --skipApiVersionCheck: the Azure SDKs move to new storage API versions before Azurite does.
  node_modules/.bin/azurite --silent --inMemoryPersistence --disableTelemetry --skipApiVersionCheck \
    --blobHost 127.0.0.1 --queueHost 127.0.0.1 --tableHost 127.0.0.1 \
    > .azurite/azurite.log 2>&1 &
  AZURITE_PID=$!
  trap 'kill "$AZURITE_PID" 2>/dev/null || true' EXIT
  for _ in $(seq 1 50); do
    if (exec 3<>/dev/tcp/127.0.0.1/10002) 2>/dev/null; then
      return 0
    fi
    sleep 0.2
  done
  echo "Azurite did not start; see .azurite/azurite.log" >&2
  return 1
}
