"""The trust-policy evaluator the moto patches use, on its own."""

from __future__ import annotations

from dev.sandbox._policy import Principal, conditions_match, trust_allows, validate_assume_params

SESSION = Principal(
    arn="arn:aws:sts::111111111111:assumed-role/pod-base/s1",
    account="111111111111",
    role_arn="arn:aws:iam::111111111111:role/pod-base",
)


def trust(principal: object, action: object = "sts:AssumeRole", condition: dict | None = None, effect: str = "Allow"):
    statement = {"Effect": effect, "Principal": principal, "Action": action}
    if condition:
        statement["Condition"] = condition
    return {"Version": "2012-10-17", "Statement": [statement]}


def test_principal_forms() -> None:
    assert trust_allows(trust({"AWS": "arn:aws:iam::111111111111:role/pod-base"}), "sts:AssumeRole", SESSION, {})
    assert trust_allows(trust({"AWS": SESSION.arn}), "sts:AssumeRole", SESSION, {})
    assert trust_allows(trust({"AWS": "111111111111"}), "sts:AssumeRole", SESSION, {})
    assert trust_allows(trust({"AWS": "*"}), "sts:AssumeRole", SESSION, {})
    assert trust_allows(trust("*"), "sts:AssumeRole", SESSION, {})
    assert not trust_allows(trust({"AWS": "arn:aws:iam::111111111111:role/other"}), "sts:AssumeRole", SESSION, {})
    assert not trust_allows(trust({"AWS": "arn:aws:iam::222222222222:root"}), "sts:AssumeRole", SESSION, {})
    assert not trust_allows(trust({"Service": "pods.eks.amazonaws.com"}), "sts:AssumeRole", SESSION, {})
    service = Principal(service="pods.eks.amazonaws.com")
    assert trust_allows(
        trust({"Service": ["ec2.amazonaws.com", "pods.eks.amazonaws.com"]}), "sts:AssumeRole", service, {}
    )
    assert not trust_allows(trust({"AWS": "*"}), "sts:AssumeRole", service, {})


def test_actions_and_deny() -> None:
    allow = trust({"AWS": SESSION.role_arn}, action=["sts:AssumeRole", "sts:TagSession"])
    assert trust_allows(allow, "sts:TagSession", SESSION, {})
    assert not trust_allows(allow, "sts:SetSourceIdentity", SESSION, {})
    assert trust_allows(trust({"AWS": SESSION.role_arn}, action="sts:*"), "sts:SetSourceIdentity", SESSION, {})
    both = {"Statement": [*allow["Statement"], *trust("*", effect="Deny")["Statement"]]}
    assert not trust_allows(both, "sts:AssumeRole", SESSION, {})


def test_conditions() -> None:
    ctx = {"sts:ExternalId": ["ext-1"], "aws:RequestTag/team": ["data"]}
    assert conditions_match({"StringEquals": {"sts:externalid": "ext-1"}}, ctx)
    assert not conditions_match({"StringEquals": {"sts:ExternalId": "ext-2"}}, ctx)
    assert not conditions_match({"StringEquals": {"sts:SourceIdentity": "x"}}, ctx)  # missing key
    assert conditions_match({"StringEquals": {"sts:ExternalId": ["ext-0", "ext-1"]}}, ctx)
    assert conditions_match({"StringLike": {"aws:RequestTag/team": "d*"}}, ctx)
    assert conditions_match({"StringNotEquals": {"sts:SourceIdentity": "x"}}, ctx)  # negated + missing
    assert conditions_match({"StringEqualsIfExists": {"sts:SourceIdentity": "x"}}, ctx)
    assert conditions_match({"Null": {"sts:SourceIdentity": "true"}}, ctx)
    assert not conditions_match({"Null": {"sts:ExternalId": "true"}}, ctx)
    assert not conditions_match({"NumericLessThan": {"sts:ExternalId": "3"}}, ctx)  # unknown: fail closed


def test_validation_messages() -> None:
    ok = {"RoleArn": "arn:aws:iam::222222222222:role/customer-reader", "RoleSessionName": "ok"}
    assert validate_assume_params("AssumeRole", ok) is None
    assert validate_assume_params("AssumeRole", {**ok, "SourceIdentity": "x" * 65}) == (
        f"1 validation error detected: Value '{'x' * 65}' at 'sourceIdentity' failed to satisfy constraint: "
        "Member must have length less than or equal to 64"
    )
    tags = [{"Key": f"k{i}", "Value": "v"} for i in range(51)]
    assert "at 'tags'" in (validate_assume_params("AssumeRole", {**ok, "Tags": tags}) or "")
