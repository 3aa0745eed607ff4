#!/usr/bin/env bash
# The test command the README gives and CI runs: installs what the tests need, then runs them.
#
# It installs system-wide what is missing, so run it as root (or where apt-get and pip may
# write): Debian packages with apt-get (redis-server, curl, chromium, chromium-driver,
# prometheus), Python packages with pip (openapi-python-client, schemathesis, selenium,
# prometheus-api-client; darktrace-sdk into target/sdk/), and npm packages into
# tests/clients/ts/. What is already there is not installed again.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "scripts/test.sh: installing what the tests need and is missing (apt-get, pip, npm), then cargo test" >&2

# The generated-client test uses the real generator from PyPI.
if ! command -v openapi-python-client >/dev/null 2>&1; then
    python3 -m pip install --quiet --root-user-action=ignore 'openapi-python-client==0.29.*'
fi

# Hostile-input tests run schemathesis against a running gateway.
if ! command -v st >/dev/null 2>&1; then
    python3 -m pip install --quiet --root-user-action=ignore 'schemathesis==4.*'
fi

# The seed's examples run on the real darktrace-sdk from PyPI: the version the seed documents
# and the newest. Each goes to its own directory, put on PYTHONPATH by the test.
for version in 0.9.0 0.10.1; do
    if [ ! -d "target/sdk/$version/darktrace" ]; then
        python3 -m pip install --quiet --root-user-action=ignore --target "target/sdk/$version" "darktrace-sdk==$version"
    fi
done

# The TypeScript client test generates with openapi-typescript, from npm (pinned by the lock).
if [ ! -d tests/clients/ts/node_modules ]; then
    (cd tests/clients/ts && npm ci --no-audit --no-fund --silent)
fi

# The Prometheus-compatible API is checked with real clients: promtool (Debian's prometheus
# package) and prometheus-api-client (PyPI); and differentially against a real Prometheus
# (the same package), which tests/api/promql_diff.rs starts on loopback and kills itself.
if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus) >/dev/null
fi
if ! python3 -c 'import prometheus_api_client' >/dev/null 2>&1; then
    python3 -m pip install --quiet --root-user-action=ignore 'prometheus-api-client==0.7.*'
fi

# The browser tests drive Debian's headless Chromium with Selenium from PyPI.
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) >/dev/null
fi
if ! python3 -c 'import selenium' >/dev/null 2>&1; then
    python3 -m pip install --quiet --root-user-action=ignore 'selenium==4.*'
fi

# The replica tests start their own redis-server; the README test runs its curl lines.
if ! command -v redis-server >/dev/null 2>&1 || ! command -v curl >/dev/null 2>&1; then
    (apt-get update -qq && apt-get install -y -qq redis-server curl) >/dev/null
fi

# The browser tests' screenshots land in target/artifacts/ (explorer.png, swagger.png).
cargo test --locked --all-targets
