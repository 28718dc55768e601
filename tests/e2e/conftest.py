"""Fixtures: Chromium, the sandbox pod's environment, a real api-server running as that pod (the last
three are torn down when the e2e tests are done, before the rest of the session).

The api-server's environment is what a pod on EKS (IRSA), GKE (Workload Identity) and AKS (workload
identity) would have, pointed at the loopback sandboxes, so ``POST /api/v2/connections/test`` runs the
hooks with the pod's identity. Nothing is installed here: without ``/usr/bin/chromium`` (Debian's
``chromium`` package) or the ``playwright`` package every e2e test skips.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.e2e.server import PASSWORD, USERNAME, ApiServer, Cloud, ServerError, run_api_server

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

    from dev.sandbox import AwsSandbox, AzureSandbox, GcpSandbox

CHROMIUM = Path("/usr/bin/chromium")
# The machine has no network: nothing in the background may try to reach Google's services.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIEWPORT = {"width": 1400, "height": 1000}


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep each phase's report on the item, so that ``page`` can take a picture of a failure."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Skip (never fail) where the browser or Playwright is absent: the suite installs nothing."""
    if not CHROMIUM.exists():
        pytest.skip(
            f"{CHROMIUM} not found: e2e tests need Debian's chromium "
            "(apt-get install -y --no-install-recommends chromium; not 'playwright install')"
        )
    pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    return CHROMIUM


@pytest.fixture(scope="session")
def e2e_artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Screenshots and the api-server's log of this run (under pytest's basetemp)."""
    return tmp_path_factory.mktemp("e2e-artifacts", numbered=False)


@pytest.fixture(scope="package")
def cloud(
    chromium: Path,
    aws_sandbox: AwsSandbox,
    gcp_sandbox: GcpSandbox,
    azure_sandbox: AzureSandbox,
    tmp_path_factory: pytest.TempPathFactory,
) -> Cloud:
    """The three sandboxes (shared with the other tests, reset here) and a pod environment using them."""
    aws_sandbox.ensure_seeded()
    aws_sandbox.clear_faults()
    aws_sandbox.set_sts_latency(0)
    aws_sandbox.force_credential_ttl(None)
    gcp_sandbox.reset()
    azure_sandbox.clear_faults()
    azure_sandbox.hang_imds(None)
    azure_sandbox.force_token_ttl(None)
    pod = tmp_path_factory.mktemp("e2e-pod")
    irsa_token = aws_sandbox.write_web_identity_token(pod / "eks-token", ttl=86400)
    azure_token = azure_sandbox.write_sa_token(pod / "azure-identity-token", ttl=86400)
    env = {
        **aws_sandbox.env_isolation(),
        **aws_sandbox.env_irsa(irsa_token),
        # GCE_METADATA_HOST is read when google-auth is imported: fine, the api-server starts afterwards.
        **gcp_sandbox.env(),
        **azure_sandbox.env_isolation(),
        **azure_sandbox.env_imds(),
        **azure_sandbox.env_workload_identity(azure_token),
    }
    return Cloud(aws=aws_sandbox, gcp=gcp_sandbox, azure=azure_sandbox, env=env)


@pytest.fixture(scope="package")
def api_server(cloud: Cloud, e2e_artifacts: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    home = tmp_path_factory.mktemp("e2e-airflow-home")
    try:
        with run_api_server(home, cloud.env, e2e_artifacts / "api-server.log") as server:
            yield server
    except ServerError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="package")
def browser(chromium: Path) -> Iterator[Browser]:
    """Package-scoped: Playwright's sync API keeps an asyncio loop running in this thread until it stops,
    and later tests of the session call ``asyncio.run()``, which refuses to run inside a running loop."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(
    browser: Browser, api_server: ApiServer, e2e_artifacts: Path, request: pytest.FixtureRequest
) -> Iterator[Page]:
    """A fresh browser context, logged in through the login form (REFERENCE 1.11)."""
    context = browser.new_context(viewport=VIEWPORT, base_url=api_server.base_url)
    context.set_default_timeout(15_000)
    page = context.new_page()
    try:
        page.goto("/auth/login?next=%2F")
        page.fill("input[name=username]", USERNAME)
        page.fill("input[name=password]", PASSWORD)
        page.click("button:has-text('Sign in')")
        page.wait_for_url(lambda url: "/auth/login" not in url)
        yield page
    finally:
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            with contextlib.suppress(Exception):
                page.screenshot(path=str(e2e_artifacts / f"failed-{request.node.name}.png"), full_page=True)
        context.close()
