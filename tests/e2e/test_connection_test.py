"""``POST /api/v2/connections/test`` on a real api-server whose identity is the sandbox pod's.

The connection test runs the hook inside the api-server process (REFERENCE 1.8): the identity it
starts from is the server's own, here IRSA (AWS), GKE Workload Identity (GCP) and AKS workload identity
(Azure) against the loopback sandboxes. Connections are created through the REST API, then tested the
way the UI's Test button does (stored connection id + extra), minus the ``port: 0`` of the 3.3.2 UI.
"""

from __future__ import annotations

import re

import pytest

from tests.e2e.server import ApiServer, Cloud

pytestmark = pytest.mark.e2e


def test_aws_connection_test_assumes_the_role_from_the_pods_irsa_identity(api_server: ApiServer, cloud: Cloud) -> None:
    sc = cloud.aws.scenario
    api_server.create_connection(
        "e2e_api_aws", "aws_workload_identity", {"role_arn": sc.customer_reader_role_arn, "region_name": "eu-west-1"}
    )
    result = api_server.test_connection("e2e_api_aws")
    message = result["message"]
    assert result["status"] is True, message
    # The final identity is a session of the customer's role, named after the (transient) connection id,
    # reached from the pod's IRSA role session and verified with a live sts:GetCallerIdentity.
    session = re.escape(f"arn:aws:sts::{sc.customer_account}:assumed-role/customer-reader/") + r"(airflow\.\w+)"
    match = re.match(rf"Connected as {session}; credentials valid until ", message)
    assert match, message
    assert f"assumed-role/{sc.pod_base_role_arn.split('/')[-1]}/" in message, message
    assert "verified now: sts:GetCallerIdentity" in message, message


def test_aws_connection_test_reports_a_bad_field(api_server: ApiServer) -> None:
    """A value the form lets through (``pattern`` is not enforced by the UI) fails the test, naming it."""
    api_server.create_connection("e2e_api_aws_bad", "aws_workload_identity", {"role_arn": "arn:aws:iam::1:role/x"})
    result = api_server.test_connection("e2e_api_aws_bad")
    assert result["status"] is False
    assert "ConfigError" in result["message"] and "'role_arn'" in result["message"], result["message"]


def test_gcp_connection_test_impersonates_through_the_chain(api_server: ApiServer, cloud: Cloud) -> None:
    sc = cloud.gcp.scenario
    api_server.create_connection(
        "e2e_api_gcp",
        "gcp_workload_identity",
        {"impersonation_chain": [sc.hop_sa, sc.chained_reader_sa], "iam_endpoint_url": cloud.gcp.iam_endpoint},
    )
    result = api_server.test_connection("e2e_api_gcp")
    assert result["status"] is True, result["message"]
    assert result["message"].startswith(f"Connected as {sc.chained_reader_sa}"), result["message"]
    assert f"generateIdToken issued a token for {sc.chained_reader_sa}" in result["message"]


def test_azure_connection_test_exchanges_the_pods_token(api_server: ApiServer, cloud: Cloud) -> None:
    sc = cloud.azure.scenario
    api_server.create_connection(
        "e2e_api_azure",
        "azure_workload_identity",
        {"mode": "workload_identity", "client_id": sc.workload_client_id},
        host=cloud.azure.blob_account_url,
    )
    result = api_server.test_connection("e2e_api_azure")
    assert result["status"] is True, result["message"]
    assert f"object {sc.workload_object_id}" in result["message"], result["message"]
