"""federation/aws.py without a network: bad input is a ConfigError naming the field, before any call;
the IAM statement and command that let a role mint web identity tokens."""

from __future__ import annotations

import json
from typing import Any

import pytest

from airflow_workload_identity.errors import ConfigError
from airflow_workload_identity.federation.aws import (
    aws_credentials_supplier,
    aws_web_identity_token_source,
    put_role_policy_command,
    web_identity_token_statement,
)
from airflow_workload_identity.registry import Registry

# No ambient identity and an STS endpoint nothing listens on: any request would fail loudly.
ENV = {"AWS_REGION": "eu-west-1", "AWS_ENDPOINT_URL_STS": "http://127.0.0.1:9"}


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"audience": ""}, "audience"),
        ({"audience": "has space"}, "audience"),
        ({"audience": "api://x", "duration_seconds": 59}, "duration_seconds"),
        ({"audience": "api://x", "duration_seconds": 3601}, "duration_seconds"),
        ({"audience": "api://x", "duration_seconds": True}, "duration_seconds"),
        ({"audience": "api://x", "signing_algorithm": "HS256"}, "signing_algorithm"),
        ({"audience": "api://x", "region": "Europe"}, "region"),
        ({"audience": "api://x", "source": "gcp"}, "source"),
        ({"audience": "api://x", "cache": "disk"}, "credential_cache"),
    ],
)
def test_bad_input_names_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as err:
        aws_web_identity_token_source(env=ENV, registry=Registry(), **kwargs)
    assert err.value.field == field
    assert err.value.fix


def test_field_names_map_to_the_connection_fields() -> None:
    with pytest.raises(ConfigError) as err:
        aws_web_identity_token_source(
            "api://x",
            duration_seconds=10,
            env=ENV,
            registry=Registry(),
            field_names={"duration_seconds": "aws_token_seconds"},
        )
    assert err.value.field == "aws_token_seconds"


def test_a_region_is_required() -> None:
    with pytest.raises(ConfigError) as err:
        aws_credentials_supplier(env={}, registry=Registry())
    assert err.value.field == "region"
    assert "regional" in err.value.problem


def test_sources_are_shared_per_key_without_a_request() -> None:
    registry = Registry()
    env = {
        **ENV,
        "AWS_ROLE_ARN": "arn:aws:iam::111111111111:role/pod-base",
        "AWS_WEB_IDENTITY_TOKEN_FILE": "/nonexistent",
    }
    first = aws_web_identity_token_source(
        "api://AzureADTokenExchange", env=env, registry=registry, source="web_identity"
    )
    again = aws_web_identity_token_source(
        "api://AzureADTokenExchange", env=env, registry=registry, source="web_identity"
    )
    other = aws_web_identity_token_source("api://other", env=env, registry=registry, source="web_identity")
    assert first is again
    assert other is not first and other.key() != first.key()
    assert "api://AzureADTokenExchange" in repr(first)
    supplier = aws_credentials_supplier(env=env, registry=registry, source="web_identity")
    assert supplier is aws_credentials_supplier(env=env, registry=registry, source="web_identity")
    assert supplier.get_aws_region(None, None) == "eu-west-1"
    assert "IRSA" in repr(supplier)


def test_statement_pins_audience_lifetime_and_algorithm() -> None:
    statement = web_identity_token_statement("api://AzureADTokenExchange", 300, "RS256")
    assert statement["Action"] == "sts:GetWebIdentityToken"
    condition = statement["Condition"]
    assert condition["ForAllValues:StringEquals"] == {"sts:IdentityTokenAudience": ["api://AzureADTokenExchange"]}
    assert condition["NumericLessThanEquals"] == {"sts:DurationSeconds": "300"}
    command = put_role_policy_command("arn:aws:iam::111111111111:role/pod-base", statement, "outbound")
    assert command.startswith("aws iam put-role-policy --role-name pod-base --policy-name outbound ")
    document = json.loads(command.split("--policy-document ", 1)[1].strip("'"))
    assert document["Statement"] == [statement]
