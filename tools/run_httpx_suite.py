"""Run httpx's own client test suite with reliable_client's clients in place.

    python tools/run_httpx_suite.py [pytest args...]

Downloads the source distribution of the installed httpx version from PyPI
(with pip), takes its tests/ folder, and runs tests/client/ under pytest with
tools/httpx_suite_plugin.py loaded, which swaps in reliable_client.Client and
AsyncClient (retries and keys off).  Nothing of httpx's is kept in this repo.
Needs the ``compat`` extra (uvicorn, trustme, ...).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
from importlib.metadata import version
from pathlib import Path

HERE = Path(__file__).resolve().parent

PYTEST_INI = """\
[pytest]
addopts = -rxXs -m "not network" -p no:asyncio -p no:cacheprovider -p httpx_suite_plugin
filterwarnings =
    error
    ignore:You seem to already have a custom sys.excepthook:RuntimeWarning
    ignore:trio.MultiError is deprecated:DeprecationWarning
markers =
    copied_from(source, changes=None): copied test
    network: needs a network connection
"""


def main(argv: list[str]) -> int:
    httpx_version = version("httpx")
    with tempfile.TemporaryDirectory(prefix="httpx-suite-") as tmp:
        work = Path(tmp)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--no-binary",
                ":all:",
                f"httpx=={httpx_version}",
                "-d",
                str(work),
            ],
            check=True,
        )
        (sdist,) = work.glob("httpx-*.tar.gz")
        prefix = f"httpx-{httpx_version}/tests/"
        with tarfile.open(sdist) as archive:
            members = [m for m in archive.getmembers() if m.name.startswith(prefix)]
            for member in members:
                member.name = member.name[len(f"httpx-{httpx_version}/") :]
            archive.extractall(work, members=members, filter="data")
        (work / "pytest.ini").write_text(PYTEST_INI)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(HERE), str(work), env.get("PYTHONPATH", "")]
        ).rstrip(os.pathsep)
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "tests/client", "-q", *argv],
            cwd=work,
            env=env,
        )
        return result.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
