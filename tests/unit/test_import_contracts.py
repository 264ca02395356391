"""The layout's import rules hold, and the check really catches a broken one.

``lint-imports`` (import-linter) reads the contracts in ``pyproject.toml``. The second test copies
the package, gives the page a forbidden import of the master, and expects the check to fail naming
the contracts it breaks.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")


def lint_imports(where: Path) -> subprocess.CompletedProcess[str]:
    if LINT_IMPORTS is None:
        if os.environ.get("CI") == "true":
            pytest.fail("lint-imports (import-linter) is not installed: pip install -e '.[test]'")
        pytest.skip("lint-imports (import-linter) is not installed: pip install -e '.[test]'")
    env = {**os.environ, "PYTHONPATH": str(where)}
    return subprocess.run(
        [LINT_IMPORTS, str(where / "pyproject.toml"), "--no-cache"],
        cwd=where,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_import_contracts_hold() -> None:
    done = lint_imports(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


@pytest.mark.parametrize(
    ("module", "forbidden", "broken"),
    [
        # The page reaching the master (the side door /healthz once used).
        (
            "web/app.py",
            "distgray.master.server",
            "The page sees a JobBoard, never the cluster, the network or the jobs",
        ),
        # Jobs importing the worker launcher (the side door local-process polling once used).
        ("jobs/service.py", "distgray.cli.local_workers", "Jobs drive an engine's interface: not the worker, the"),
        # A lower layer importing a higher one.
        ("imaging/kernel.py", "distgray.net.shm", "Layers: cli composes; each layer imports only those below it"),
    ],
)
def test_a_forbidden_import_breaks_the_contracts(tmp_path: Path, module: str, forbidden: str, broken: str) -> None:
    shutil.copytree(ROOT / "distgray", tmp_path / "distgray", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    source = tmp_path / "distgray" / module
    source.write_text(source.read_text() + f"\nimport {forbidden}  # noqa: E402,F401\n")
    done = lint_imports(tmp_path)
    assert done.returncode != 0, done.stdout
    assert f"{broken}" in done.stdout and "BROKEN" in done.stdout
    importer = "distgray." + module.removesuffix(".py").replace("/", ".")
    assert f"{importer} -> {forbidden}" in done.stdout
