"""Shared test set-up: an isolated Airflow home on SQLite and no ambient cloud identity leaking in.

Runs before any test module imports Airflow, so the environment below is what Airflow reads.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest

_HOME = tempfile.mkdtemp(prefix="awi-airflow-home-")
atexit.register(shutil.rmtree, _HOME, ignore_errors=True)
os.environ["AIRFLOW_HOME"] = _HOME
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_HOME}/airflow.db"
os.environ["AIRFLOW__CORE__TEST_CONNECTION"] = "Enabled"
os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")

# No ambient identity from the machine running the tests: every test states the identity it has.
_AMBIENT_PREFIXES = ("AWS_", "AZURE_", "GOOGLE_", "GCE_", "IDENTITY_", "MSI_", "IMDS_", "CLOUDSDK_")
for _name in list(os.environ):
    if _name.startswith(_AMBIENT_PREFIXES):
        del os.environ[_name]
os.environ["AWS_CONFIG_FILE"] = "/dev/null"
os.environ["AWS_SHARED_CREDENTIALS_FILE"] = "/dev/null"
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
# The sandboxes listen on loopback: connections in the tests override endpoints to them, which the
# deployment must allow (docs/security.md).
os.environ["AIRFLOW__WORKLOAD_IDENTITY__ALLOWED_ENDPOINT_HOSTS"] = "127.0.0.1"
# Tests count token requests per test: each test process keeps its tokens to itself (a test starts with an
# empty process registry), and the tests of the host-wide cache turn it on with a directory of their own.
os.environ["AIRFLOW__WORKLOAD_IDENTITY__CREDENTIAL_CACHE"] = "process"
os.environ["AIRFLOW__WORKLOAD_IDENTITY__CREDENTIAL_CACHE_DIR"] = os.path.join(_HOME, "credential-cache")

# Airflow configures logging (a handler on the process's stderr) when first imported: do it now, before any
# test captures stderr, or its handler would keep a captured stream that is closed after that test.
import airflow  # noqa: E402
import airflow.settings  # noqa: E402, F401


@pytest.fixture(autouse=True)
def _fresh_registry() -> Iterator[None]:
    """Each test starts with no shared credentials from an earlier test."""
    from airflow_workload_identity.registry import REGISTRY

    REGISTRY.clear()
    yield
    REGISTRY.clear()


def _missing(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is None
    except ModuleNotFoundError:
        return True


# The older-Airflow matrix legs install only the AWS extra: skip the other clouds' test modules there.
collect_ignore_glob = [
    *(["*gcp*"] if _missing("google.cloud.storage") else []),
    *(["*azure*"] if _missing("azure.storage.blob") else []),
]

pytest_plugins = ["tests.fixtures_aws", "tests.fixtures_gcp", "tests.fixtures_azure"]
