"""System tests share the integration fixtures (real worker subprocesses)."""

from tests.integration.conftest import workers  # noqa: F401
