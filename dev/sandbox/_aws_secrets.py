"""Secrets Manager and Parameter Store on the sandbox's moto server, with IAM enforced per secret.

moto authorises these services against the resource ``"*"``: an identity policy scoped to a prefix
(``arn:aws:secretsmanager:*:*:secret:airflow/*``) would never match, and a refusal comes back as an XML
``AccessDenied`` where the services answer JSON. Here each request is authorised against the resource AWS
evaluates (the secret's ARN, ``arn:aws:ssm:<region>:<account>:parameter/<name>``) and a refusal is the
services' own ``AccessDeniedException`` JSON, as botocore parses it from AWS:

    {"__type": "AccessDeniedException", "Message": "User: <arn> is not authorized to perform:
     secretsmanager:GetSecretValue on resource: <arn> because no identity-based policy allows the
     secretsmanager:GetSecretValue action"}

Every request to either service is counted per sandbox and operation (``AwsSandbox.api_calls``).
Private to ``dev.sandbox.aws``.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from typing import Any

from moto.core.exceptions import JsonRESTError
from moto.secretsmanager.responses import SecretsManagerResponse
from moto.ssm.responses import SimpleSystemManagerResponse
from werkzeug.exceptions import HTTPException

from . import _patches

__all__ = ["calls", "install", "reset_calls"]

_lock = threading.Lock()
_calls: dict[str, Counter[str]] = {}
_MARK = "_awi_secrets_patch"


def calls(state_name: str) -> dict[str, int]:
    """Requests the sandbox named ``state_name`` received, by operation (``secretsmanager:GetSecretValue``)."""
    with _lock:
        return dict(_calls.get(state_name, Counter()))


def reset_calls(state_name: str) -> None:
    with _lock:
        _calls.pop(state_name, None)


def _count(response: Any, service: str) -> None:
    state = _patches.current_state()
    if state is None:
        return
    action = f"{service}:{response._get_action()}"
    with _lock:
        _calls.setdefault(state.name, Counter())[action] += 1


def _secret_resource(self: Any) -> str:
    _count(self, "secretsmanager")
    secret_id = str(self._get_param("SecretId") or "")
    if secret_id.startswith("arn:"):
        return secret_id
    try:  # AWS evaluates an existing secret's full ARN (with its random suffix)
        secret = self.backend.secrets.get(secret_id)
    except Exception:
        secret = None
    if secret is not None:
        return str(secret.arn)
    return f"arn:aws:secretsmanager:{self.region}:{self.current_account}:secret:{secret_id}"


def _parameter_resource(self: Any) -> str:
    _count(self, "ssm")
    name = str(self._get_param("Name") or "")
    if name.startswith("arn:"):
        return name
    return f"arn:aws:ssm:{self.region}:{self.current_account}:parameter/{name.lstrip('/')}"


def _json_denial(original: Any) -> Any:
    def authorize(self: Any, resource: str = "*") -> None:
        try:
            original(self, resource)
        except HTTPException as error:
            if getattr(error, "code", None) != 403 or _patches.current_state() is None:
                raise
            body = getattr(error, "description", "") or ""
            caller = body.split("User: ", 1)[1].split(" is not", 1)[0] if "User: " in body else "the caller"
            action = _action_name(self)
            raise JsonRESTError(
                "AccessDeniedException",
                f"User: {caller} is not authorized to perform: {action} on resource: {resource} "
                f"because no identity-based policy allows the {action} action",
            ) from None

    setattr(authorize, _MARK, True)
    return authorize


def _action_name(response: Any) -> str:
    prefix = "secretsmanager" if isinstance(response, SecretsManagerResponse) else "ssm"
    return f"{prefix}:{response._get_action()}"


def install() -> None:
    """Patch the two moto response classes (idempotent; harmless when IAM enforcement is off)."""
    for cls, resource in (
        (SecretsManagerResponse, _secret_resource),
        (SimpleSystemManagerResponse, _parameter_resource),
    ):
        if getattr(cls.__dict__.get("_authenticate_and_authorize_normal_action"), _MARK, False):
            continue
        setattr(cls, "_determine_resource", resource)  # noqa: B010  (moto reads it when present)
        cls._authenticate_and_authorize_normal_action = _json_denial(  # type: ignore[method-assign]
            cls._authenticate_and_authorize_normal_action
        )


def prefix_policy(account: str, *prefixes: str) -> str:
    """An identity policy allowing reads of secrets and parameters under ``prefixes`` only."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Action": "secretsmanager:GetSecretValue",
                    "Resource": [f"arn:aws:secretsmanager:*:{account}:secret:{p}*" for p in prefixes],
                },
                {
                    "Effect": "Allow",
                    "Action": ["ssm:GetParameter", "ssm:GetParameters"],
                    "Resource": [f"arn:aws:ssm:*:{account}:parameter/{p}*" for p in prefixes],
                },
            ],
        }
    )
