"""Direct identities against the sandbox: a connection with no role / no impersonation acts as the pod's own
identity (AWS: the IRSA or Pod Identity role; GCP: the GKE metadata server's service account), shared with
the chains that start from it, pinned by ``expected_account_ids`` / ``expected_principal``, reported by
``whoami`` (hop 0 only) and planned by ``policy`` (hop 0 the platform's, the grant yours)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest
from botocore.exceptions import ClientError

from airflow_workload_identity.aws import AwsWorkloadIdentityHook
from airflow_workload_identity.errors import ConfigError, IdentityMismatch
from dev.sandbox import AwsSandbox
from tests.fixtures_aws import Pod

# -- AWS ------------------------------------------------------------------------------------------------------

_POD_READS_A = "direct-read-bucket-a"


@pytest.fixture
def pod_role_reads_a(aws_sandbox: AwsSandbox) -> Iterator[None]:
    """The pod's own role (pod-base, platform account) granted s3:GetObject on bucket A, as the guide's
    "grant the workload identity directly" has the customer do."""
    sc = aws_sandbox.scenario
    iam = aws_sandbox.admin_client("iam", sc.platform_account)
    document = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{sc.bucket_a}/*"}],
    }
    iam.put_role_policy(RoleName=sc.pod_base_role_name, PolicyName=_POD_READS_A, PolicyDocument=json.dumps(document))
    yield
    iam.delete_role_policy(RoleName=sc.pod_base_role_name, PolicyName=_POD_READS_A)


def _get_a(hook: AwsWorkloadIdentityHook, sandbox: AwsSandbox) -> bytes:
    sc = sandbox.scenario
    body: bytes = hook.get_client("s3").get_object(Bucket=sc.bucket_a, Key=sc.bucket_a_key)["Body"].read()
    return body


def test_aws_without_role_arn_acts_as_the_irsa_role_and_shares_its_credentials(
    pod: Pod, aws_sandbox: AwsSandbox, connection: Callable[..., str], pod_role_reads_a: None
) -> None:
    sc = aws_sandbox.scenario
    pod.irsa()
    direct = AwsWorkloadIdentityHook(aws_conn_id=connection("direct", region_name=sc.region))
    assert _get_a(direct, aws_sandbox) == sc.bucket_a_body
    with pytest.raises(ClientError) as err:  # only what the pod's role was granted
        direct.get_client("s3").get_object(Bucket=sc.bucket_b, Key=sc.bucket_b_key)
    assert err.value.response["Error"]["Code"] == "AccessDenied"

    # one AssumeRoleWithWebIdentity for the direct connection, another direct one and a chain from the same pod
    other = AwsWorkloadIdentityHook(aws_conn_id=connection("direct_two"))
    chained = AwsWorkloadIdentityHook(aws_conn_id=connection("chained", role_arn=sc.customer_reader_role_arn))
    assert other.get_credentials() is direct.get_credentials()
    assert chained.chain.source.credentials is direct.get_credentials()
    assert _get_a(chained, aws_sandbox) == sc.bucket_a_body
    assert aws_sandbox.calls("AssumeRoleWithWebIdentity") == 1
    assert aws_sandbox.calls("AssumeRole") == 1  # the chain's hop only

    report = direct.whoami(verify=True)
    assert len(report.hops) == 1 and report.hops[0].index == 0
    session_prefix = f"arn:aws:sts::{sc.platform_account}:assumed-role/{sc.pod_base_role_name}/"
    assert report.final.principal.startswith(session_prefix)
    assert any("no role assumed" in note for note in report.notes)
    assert any("verified now" in note for note in report.notes)


def test_aws_direct_pinning_by_expected_account_ids(
    pod: Pod, aws_sandbox: AwsSandbox, connection: Callable[..., str]
) -> None:
    sc = aws_sandbox.scenario
    pod.irsa()
    wrong = AwsWorkloadIdentityHook(aws_conn_id=connection("pinned_wrong", expected_account_ids=[sc.customer_account]))
    with pytest.raises(IdentityMismatch) as err:
        wrong.get_credentials().get_frozen_credentials()
    assert err.value.field == "expected_account_ids" and sc.platform_account in err.value.actual
    right = AwsWorkloadIdentityHook(aws_conn_id=connection("pinned_right", expected_account_ids=[sc.platform_account]))
    assert right.get_credentials().get_frozen_credentials().access_key
    assert right.whoami().final.principal.startswith(f"arn:aws:sts::{sc.platform_account}:")


def test_aws_direct_with_pod_identity(
    pod: Pod, aws_sandbox: AwsSandbox, connection: Callable[..., str], pod_role_reads_a: None
) -> None:
    sc = aws_sandbox.scenario
    pod.pod_identity()
    hook = AwsWorkloadIdentityHook(aws_conn_id=connection("direct_pi", expected_account_ids=[sc.platform_account]))
    assert _get_a(hook, aws_sandbox) == sc.bucket_a_body
    assert "EKS Pod Identity" in hook.whoami().hops[0].method


def test_aws_direct_policy_separates_the_platform_trust_from_your_grant(
    pod: Pod, aws_sandbox: AwsSandbox, connection: Callable[..., str]
) -> None:
    sc = aws_sandbox.scenario
    pod.irsa()
    plan = AwsWorkloadIdentityHook(aws_conn_id=connection("direct")).policy_plan()
    owners = [(step.hop, step.granted_by, step.kind) for step in plan.steps]
    assert owners == [(0, "platform", "trust_statement"), (None, "you", "identity_statement")]
    assert plan.steps[1].target == sc.pod_base_role_arn
    text = plan.text()
    assert "assumes no role" in text
    assert text.index("What the platform grants") < text.index("What you grant")
    assert "cannot edit" in text
    assert [step["granted_by"] for step in json.loads(plan.json())["steps"]] == ["platform", "you"]
    shell = plan.shell()
    assert "AssumeRoleWithWebIdentity" in shell and "step2-identity-" in shell and "step1-" not in shell


def test_aws_direct_refuses_role_fields_without_a_role(connection: Callable[..., str]) -> None:
    hook = AwsWorkloadIdentityHook(aws_conn_id=connection("direct_bad", external_id="customer-42"))
    with pytest.raises(ConfigError) as err:
        hook.spec  # noqa: B018
    assert err.value.field == "external_id" and "role_arn is empty" in str(err.value)


# -- GCP ------------------------------------------------------------------------------------------------------


def _gcp_storage_read(hook: object, sandbox: object, bucket: str, key: str) -> bytes:
    from google.cloud import storage

    client = storage.Client(
        credentials=hook.get_credentials(),  # type: ignore[attr-defined]
        project=hook.project_id,  # type: ignore[attr-defined]
        client_options={"api_endpoint": sandbox.storage_host},  # type: ignore[attr-defined]
    )
    body: bytes = client.bucket(bucket).blob(key).download_as_bytes()
    return body


@pytest.fixture
def gcp_direct(gke: object) -> Iterator[object]:
    """The GKE pod's own service account granted read on bucket A (the guide's option without impersonation)."""
    pytest.importorskip("google.cloud.storage", reason="the Google SDKs are not installed")
    sc = gke.scenario  # type: ignore[attr-defined]
    gke.grant_storage(sc.source_sa, sc.bucket_a, "roles/storage.objectViewer")  # type: ignore[attr-defined]
    yield gke
    gke.revoke_storage(sc.source_sa, sc.bucket_a, "roles/storage.objectViewer")  # type: ignore[attr-defined]


def test_gcp_without_chain_acts_as_the_pods_service_account_and_shares_its_token(
    gcp_direct: object, gcp_connection: Callable[..., str]
) -> None:
    from google.api_core.exceptions import Forbidden

    from airflow_workload_identity.gcp import GcpWorkloadIdentityHook

    gke = gcp_direct
    sc = gke.scenario  # type: ignore[attr-defined]
    direct = GcpWorkloadIdentityHook(gcp_conn_id=gcp_connection("direct", project_id="customer-proj"))
    assert _gcp_storage_read(direct, gke, sc.bucket_a, sc.bucket_a_key) == sc.bucket_a_body
    with pytest.raises(Forbidden) as err:
        _gcp_storage_read(direct, gke, sc.bucket_b, sc.bucket_b_key)
    assert sc.source_sa in str(err.value)

    chained = GcpWorkloadIdentityHook(gcp_conn_id=gcp_connection("chained", impersonation_chain=[sc.reader_sa]))
    assert direct.get_credentials() is chained.chain.source.token  # the pod's one token
    assert chained.get_access_token()
    assert gke.calls("metadata_token") == 1  # type: ignore[attr-defined]
    assert gke.calls("generateAccessToken") == 1  # type: ignore[attr-defined]  # the chain's only

    report = direct.whoami(verify=True)
    assert [hop.index for hop in report.hops] == [0]
    assert report.final.principal == sc.source_sa
    assert any("no impersonation" in note for note in report.notes)
    assert any(f"generateIdToken issued a token for {sc.source_sa}" in note for note in report.notes)
    assert direct.get_id_token("https://svc.example")  # from the metadata identity endpoint


def test_gcp_direct_pinning_by_expected_principal(gcp_direct: object, gcp_connection: Callable[..., str]) -> None:
    from airflow_workload_identity.gcp import GcpWorkloadIdentityHook

    sc = gcp_direct.scenario  # type: ignore[attr-defined]
    wrong = GcpWorkloadIdentityHook(gcp_conn_id=gcp_connection("pinned_wrong", expected_principal=sc.reader_sa))
    with pytest.raises(IdentityMismatch) as err:
        wrong.get_access_token()
    assert err.value.field == "expected_principal" and err.value.actual == sc.source_sa
    with pytest.raises(IdentityMismatch):
        wrong.get_id_token("https://svc.example")
    right = GcpWorkloadIdentityHook(gcp_conn_id=gcp_connection("pinned_right", expected_principal=sc.source_sa))
    assert right.get_access_token()
    assert right.whoami().final.principal == sc.source_sa


def test_gcp_direct_policy_prints_the_project_binding(gcp_direct: object, gcp_connection: Callable[..., str]) -> None:
    from airflow_workload_identity.gcp import GcpWorkloadIdentityHook

    sc = gcp_direct.scenario  # type: ignore[attr-defined]
    plan = GcpWorkloadIdentityHook(gcp_conn_id=gcp_connection("direct", project_id="customer-proj")).policy_plan()
    assert [(s.hop, s.granted_by) for s in plan.steps] == [(0, "platform"), (None, "you")]
    assert plan.steps[1].content == (
        f"gcloud projects add-iam-policy-binding customer-proj --member=serviceAccount:{sc.source_sa} "
        "--role=roles/storage.objectViewer"
    )
    text = plan.text()
    assert "impersonates nothing" in text and "pick the role your tasks need" in text
    assert "roles/iam.workloadIdentityUser" in text.split("What you grant")[0]


def test_gcshook_on_a_direct_connection(gcp_direct: object, gcp_connection: Callable[..., str]) -> None:
    pytest.importorskip("airflow.providers.google", reason="the official Google provider is not installed")
    from airflow.providers.google.cloud.hooks.gcs import GCSHook

    from airflow_workload_identity.gcp.interop import install, uninstall

    sc = gcp_direct.scenario  # type: ignore[attr-defined]
    conn = gcp_connection("direct_gcs", project_id="customer-proj")
    install()
    try:
        for _ in range(2):
            assert GCSHook(gcp_conn_id=conn).download(sc.bucket_a, sc.bucket_a_key) == sc.bucket_a_body
        assert GCSHook(gcp_conn_id=conn).project_id == "customer-proj"
    finally:
        uninstall()
    assert gcp_direct.calls("metadata_token") == 1  # type: ignore[attr-defined]
    assert gcp_direct.calls("generateAccessToken") == 0  # type: ignore[attr-defined]


def test_gcp_secret_manager_backend_on_the_pods_own_service_account(gcp_direct: object) -> None:
    from airflow_workload_identity.errors import AccessDenied
    from airflow_workload_identity.gcp.secrets import SecretManagerBackend

    sb = gcp_direct
    sc = sb.scenario  # type: ignore[attr-defined]
    fake = sb.secret_manager  # type: ignore[attr-defined]
    fake.add_secret("customer-proj", "airflow-variables-greeting", "hello as the pod")
    fake.add_secret("customer-proj", "restricted-variables-greeting", "not for the pod")
    fake.grant(sc.source_sa, "customer-proj", "airflow-*")
    try:
        backend = SecretManagerBackend(
            project_id="customer-proj",
            iam_endpoint_url=sb.iam_endpoint,  # type: ignore[attr-defined]
            secret_manager_endpoint_url=sb.secret_manager_endpoint,  # type: ignore[attr-defined]
        )
        assert backend.get_variable("greeting") == "hello as the pod"
        assert backend.whoami().final.principal == sc.source_sa
        denied = SecretManagerBackend(
            project_id="customer-proj",
            variables_prefix="restricted-variables",
            iam_endpoint_url=sb.iam_endpoint,  # type: ignore[attr-defined]
            secret_manager_endpoint_url=sb.secret_manager_endpoint,  # type: ignore[attr-defined]
        )
        with pytest.raises(AccessDenied) as err:
            denied.get_variable("greeting")
        assert f"--member=serviceAccount:{sc.source_sa} --role=roles/secretmanager.secretAccessor" in str(
            err.value.remediation
        )
        assert sb.calls("generateAccessToken") == 0  # type: ignore[attr-defined]
    finally:
        fake.revoke_all()


def test_aws_secrets_manager_backend_on_the_pods_own_role_names_it_when_denied(
    pod: Pod, aws_sandbox: AwsSandbox
) -> None:
    from airflow_workload_identity.aws.secrets import SecretsManagerBackend
    from airflow_workload_identity.errors import AccessDenied

    sc = aws_sandbox.scenario
    pod.irsa()
    backend = SecretsManagerBackend(region_name=sc.region)  # no role_arn: reads as the pod's own role
    assert backend.whoami().final.principal.startswith(f"arn:aws:sts::{sc.platform_account}:assumed-role/")
    with pytest.raises(AccessDenied) as err:  # the pod's role may not read secrets: the grant names it
        backend.get_variable("greeting")
    assert f"identity policy of {sc.pod_base_role_arn}" in err.value.remediation
    assert f"arn:aws:secretsmanager:{sc.region}:{sc.platform_account}:secret:airflow/variables/" in str(
        err.value.remediation
    )
    assert aws_sandbox.calls("AssumeRole") == 0
