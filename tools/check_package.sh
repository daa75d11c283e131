#!/usr/bin/env bash
# The package as users get it: build the wheel and the sdist, check their
# metadata, install the wheel into a fresh virtual environment away from the
# source tree, and run it there: imports, a short demo, a smoke test over
# loopback, and every optional extra installed and used.
#
#   bash tools/check_package.sh          (needs: pip install build twine)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
python=${PYTHON:-python3}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

python -m build --sdist --wheel --outdir "$work/dist" . >/dev/null
python -m twine check --strict "$work"/dist/*
wheel=$(ls "$work"/dist/*.whl)
sdist=$(ls "$work"/dist/*.tar.gz)
echo "built $(basename "$wheel") and $(basename "$sdist")"

# What the sdist must carry to build and test the package again.
# (Listed once into a file: `tar | grep -q` under pipefail fails at random,
# when grep exits at its first match and tar dies of SIGPIPE.)
tar -tzf "$sdist" > "$work/sdist.txt"
unzip -l "$wheel" > "$work/wheel.txt"
for member in pyproject.toml README.md CHANGELOG.md src/reliable_client/py.typed tests/conftest.py; do
    grep -q "/$member\$" "$work/sdist.txt" || { echo "sdist lacks $member"; exit 1; }
done
# The wheel holds the package and its marker of types, nothing else.
grep -q "reliable_client/py.typed" "$work/wheel.txt" || { echo "wheel lacks py.typed"; exit 1; }
if grep -qE " (tests|benchmarks)/" "$work/wheel.txt"; then
    echo "wheel carries tests or benchmarks"; exit 1
fi

"$python" -m venv "$work/venv"
venv="$work/venv/bin"
"$venv/pip" install --quiet "$wheel"
cd "$work"  # away from the source tree: only the installed package is importable
"$venv/python" - <<'PY'
import reliable_client, reliable_client.server, reliable_client.testing, reliable_client.outbox
assert "site-packages" in reliable_client.__file__, reliable_client.__file__
print("imported reliable_client", reliable_client.__version__, "from", reliable_client.__file__)
PY
"$venv/reliable-client" demo --calls 60 --rate 200 --no-progress | tail -n 12
"$venv/python" - <<'PY'
# Smoke test: a retried GET and a keyed POST against a loopback fault server.
import reliable_client as rc
from reliable_client.testing import ChaosServer, Reply

with ChaosServer(lifetime=30) as server, rc.Client(base_url=server.url) as client:
    server.script("/items", Reply(503), Reply(200, body=b"ok"))
    server.script("/orders", Reply(503, {"Retry-After": "0"}), Reply(201))
    got = client.get("/items")
    made = client.post("/orders", json={"total": 5})
    assert got.text == "ok" and rc.outcome(got).attempts == 2, got
    assert made.status_code == 201 and rc.outcome(made).idempotency_key, made
print("smoke test passed")
PY

# Each optional extra installs from the wheel and works.
"$venv/pip" install --quiet "$wheel[otel]"
"$venv/python" -c "
import reliable_client.otel as otel
otel.instrument(); assert otel.is_instrumented(); otel.uninstrument()
print('extra otel: ok')"
"$venv/pip" install --quiet "$wheel[redis]"
"$venv/python" -c "
from reliable_client.server import RedisStore
RedisStore('redis://127.0.0.1:1/0')  # made without connecting
print('extra redis: ok')"
"$venv/pip" install --quiet "$wheel[postgres]"
"$venv/python" -c "
import psycopg, reliable_client.outbox
print('extra postgres: ok (psycopg', psycopg.__version__ + ')')"
"$venv/pip" install --quiet "$wheel[plot]"
"$venv/reliable-client" demo --calls 40 --rate 200 --no-progress --plot "$work/demo.png" >/dev/null
test -s "$work/demo.png"
echo "extra plot: ok"
cd "$root"
echo "package checks passed"
