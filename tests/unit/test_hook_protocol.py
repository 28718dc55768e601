"""The three hooks share one interface (``hooks.WorkloadIdentityHook``); mypy checks it statically, this
checks it at runtime: same names, and every parameter of the protocol present in each hook with the same
kind and default (a hook may add optional cloud-specific keywords)."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from airflow_workload_identity import hooks
from airflow_workload_identity.aws.hook import AwsWorkloadIdentityHook
from airflow_workload_identity.azure.hook import AzureWorkloadIdentityHook
from airflow_workload_identity.gcp.hook import GcpWorkloadIdentityHook
from airflow_workload_identity.hooks import WorkloadIdentityHook

HOOKS = [AwsWorkloadIdentityHook, GcpWorkloadIdentityHook, AzureWorkloadIdentityHook]
METHODS = ["get_credentials", "whoami", "policy_plan", "explain_access_denied", "test_connection"]


@pytest.mark.parametrize("hook", HOOKS, ids=lambda h: h.__name__)
@pytest.mark.parametrize("name", METHODS)
def test_each_hook_has_the_protocol_signature(hook: type, name: str) -> None:
    wanted = inspect.signature(getattr(WorkloadIdentityHook, name))
    actual = inspect.signature(getattr(hook, name))
    for param in wanted.parameters.values():
        assert param.name in actual.parameters, f"{hook.__name__}.{name} lacks {param.name!r}"
        got = actual.parameters[param.name]
        assert got.kind == param.kind, f"{hook.__name__}.{name}({param.name}) is {got.kind}, not {param.kind}"
        assert got.default == param.default, f"{hook.__name__}.{name}({param.name}) default {got.default!r}"
    extra = [p for n, p in actual.parameters.items() if n not in wanted.parameters]
    for param in extra:  # cloud-specific additions must not make a protocol call fail
        assert param.default is not inspect.Parameter.empty or param.kind in (
            inspect.Parameter.VAR_POSITIONAL,
            inspect.Parameter.VAR_KEYWORD,
        ), f"{hook.__name__}.{name} adds required {param.name!r}"


@pytest.mark.parametrize("hook", HOOKS, ids=lambda h: h.__name__)
def test_each_hook_instance_is_a_workload_identity_hook(hook: type) -> None:
    instance = hook.__new__(hook)  # no connection needed to check the shape
    assert isinstance(instance, WorkloadIdentityHook)
    assert hook.conn_type in hooks.CONN_TYPES


def test_no_signature_glue_left() -> None:
    package = Path(hooks.__file__).parent
    offenders = [
        str(path.relative_to(package))
        for path in sorted(package.rglob("*.py"))
        if "inspect.signature" in path.read_text(encoding="utf-8")
    ]
    assert offenders == []


def test_mypy_checks_the_three_hooks_against_the_protocol() -> None:
    source = Path(hooks.__file__).read_text(encoding="utf-8")
    assert "_CONFORMING: tuple[type[WorkloadIdentityHook], ...]" in source
    for hook in HOOKS:
        assert hook.__name__ in source
