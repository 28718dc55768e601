"""Wire shapes of the Google fakes (REFERENCE 3.3): error bodies, Google's HTML error page, time formats.

Private to ``dev.sandbox.gcp``; every body here is what the real service sends, byte for byte where known.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
CLOUD_PLATFORM_READ_ONLY_SCOPE = "https://www.googleapis.com/auth/cloud-platform.read-only"
IAM_SCOPE = "https://www.googleapis.com/auth/iam"
USERINFO_EMAIL_SCOPE = "https://www.googleapis.com/auth/userinfo.email"
DEVSTORAGE_READ_ONLY_SCOPE = "https://www.googleapis.com/auth/devstorage.read_only"
DEVSTORAGE_READ_WRITE_SCOPE = "https://www.googleapis.com/auth/devstorage.read_write"
DEVSTORAGE_FULL_CONTROL_SCOPE = "https://www.googleapis.com/auth/devstorage.full_control"

GOOGLE_ISSUER = "https://accounts.google.com"
JSON_UTF8 = "application/json; charset=UTF-8"
BEARER_REALM = 'Bearer realm="https://accounts.google.com/"'

_AUTH_HELP = (
    "Expected OAuth 2 access token, login cookie or other valid authentication credential. "
    "See https://developers.google.com/identity/sign-in/web/devconsole-project."
)
MESSAGE_INVALID_CREDENTIALS = f"Request had invalid authentication credentials. {_AUTH_HELP}"
MESSAGE_MISSING_CREDENTIALS = f"Request is missing required authentication credential. {_AUTH_HELP}"

# Google's status names per HTTP status (google.rpc.Code as ESF maps it)
_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_FAULT_MESSAGES = {
    429: "Resource has been exhausted (e.g. check quota).",
    500: "Internal error encountered.",
    502: "Bad Gateway",
    503: "The service is currently unavailable.",
    504: "The request timed out. Please try again.",
}
_REASON_PHRASES = {429: "Too Many Requests", 500: "Server Error", 502: "Server Error", 503: "Service Unavailable"}


def dumps(body: Any) -> bytes:
    """JSON as Google's front ends print error bodies (two-space indent)."""
    return json.dumps(body, indent=2).encode()


def rfc3339_z(epoch: float) -> str:
    """``YYYY-MM-DDTHH:MM:SSZ``: IAM Credentials' ``expireTime`` (google-auth rejects fractional seconds)."""
    return datetime.fromtimestamp(int(epoch), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def status_name(status: int) -> str:
    return _STATUS_NAMES.get(status, "UNKNOWN")


# --- ESF (IAM Credentials) errors ------------------------------------------------------------------------


def esf_error(status: int, message: str, details: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": status, "message": message, "status": status_name(status)}
    if details:
        error["details"] = details
    return {"error": error}


def error_info(reason: str, domain: str = "googleapis.com", metadata: dict[str, str] | None = None) -> dict[str, Any]:
    info: dict[str, Any] = {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason, "domain": domain}
    if metadata:
        info["metadata"] = metadata
    return info


def unauthenticated(reason: str) -> dict[str, Any]:
    """401: ``ACCESS_TOKEN_EXPIRED`` (expired/unknown ``ya29.``), ``ACCESS_TOKEN_TYPE_UNSUPPORTED`` (not an
    access token at all), ``CREDENTIALS_MISSING`` (no ``Authorization``)."""
    message = MESSAGE_MISSING_CREDENTIALS if reason == "CREDENTIALS_MISSING" else MESSAGE_INVALID_CREDENTIALS
    return esf_error(401, message, [error_info(reason)])


def scope_insufficient() -> dict[str, Any]:
    return esf_error(
        403, "Request had insufficient authentication scopes.", [error_info("ACCESS_TOKEN_SCOPE_INSUFFICIENT")]
    )


def iam_permission_denied(permission: str) -> dict[str, Any]:
    """``permission`` is the full name, e.g. ``iam.serviceAccounts.getAccessToken``."""
    return esf_error(
        403,
        f"Permission '{permission}' denied on resource (or it may not exist).",
        [error_info("IAM_PERMISSION_DENIED", "iam.googleapis.com", {"permission": permission})],
    )


def gaia_not_found(email: str) -> dict[str, Any]:
    return esf_error(404, f"Not found; Gaia id not found for email {email}")


def lifetime_too_long(email: str) -> dict[str, Any]:
    return esf_error(
        400,
        f"Access tokens for service account {email} can not have lifetimes of more than 1 hour. Use the Org "
        "Policy Constraint constraints/iam.allowServiceAccountCredentialLifetimeExtension to allow up to 12 hours.",
    )


def invalid_argument(message: str = "Request contains an invalid argument.") -> dict[str, Any]:
    return esf_error(400, message)


def esf_fault(status: int, message: str | None = None) -> dict[str, Any]:
    return esf_error(status, message or _FAULT_MESSAGES.get(status, "Injected fault."))


# --- GCS JSON API errors ---------------------------------------------------------------------------------


def gcs_error(status: int, message: str, reason: str, **extra: str) -> dict[str, Any]:
    return {
        "error": {
            "code": status,
            "message": message,
            "errors": [{"message": message, "domain": "global", "reason": reason, **extra}],
        }
    }


def gcs_invalid_credentials() -> dict[str, Any]:
    return gcs_error(401, "Invalid Credentials", "authError", locationType="header", location="Authorization")


def gcs_denied_message(caller: str, permission: str, resource: str) -> str:
    """``resource``: ``object``, ``bucket`` or ``project`` (as in "... access to the Google Cloud Storage X")."""
    where = "Google Cloud project" if resource == "project" else f"Google Cloud Storage {resource}"
    return (
        f"{caller} does not have {permission} access to the {where}. "
        f"Permission '{permission}' denied on resource (or it may not exist)."
    )


def gcs_anonymous(permission: str, resource: str) -> dict[str, Any]:
    message = gcs_denied_message("Anonymous caller", permission, resource)
    return gcs_error(401, message, "required", locationType="header", location="Authorization")


def gcs_forbidden(principal: str, permission: str, resource: str) -> dict[str, Any]:
    return gcs_error(403, gcs_denied_message(principal, permission, resource), "forbidden")


def gcs_scope_insufficient() -> dict[str, Any]:
    return gcs_error(403, "Provided scope(s) are not authorized", "forbidden")


def gcs_fault(status: int, message: str | None = None) -> dict[str, Any]:
    reason = {429: "rateLimitExceeded", 503: "backendError", 500: "backendError"}.get(status, "backendError")
    return gcs_error(status, message or _FAULT_MESSAGES.get(status, "Injected fault."), reason)


def gcs_xml_error(code: str, message: str, details: str | None = None) -> bytes:
    detail = f"<Details>{details}</Details>" if details else ""
    head = "<?xml version='1.0' encoding='UTF-8'?>"
    return f"{head}<Error><Code>{code}</Code><Message>{message}</Message>{detail}</Error>".encode()


# --- Google front end's HTML error page -----------------------------------------------------------------

_HTML_STYLE = (
    "*{margin:0;padding:0}html,code{font:15px/22px arial,sans-serif}html{background:#fff;color:#222;padding:15px}"
    "body{margin:7% auto 0;max-width:390px;min-height:180px;padding:30px 0 15px}* > body{background:url(//www.google"
    ".com/images/errors/robot.png) 100% 5px no-repeat;padding-right:205px}p{margin:11px 0 22px;overflow:hidden}"
    "ins{color:#777;text-decoration:none}a img{border:0}@media screen and (max-width:772px){body{background:none;"
    "margin-top:0;max-width:none;padding-right:0}}#logo{background:url(//www.google.com/images/branding/googlelogo/"
    "1x/googlelogo_color_150x54dp.png) no-repeat;margin-left:-5px}#logo{display:inline-block;height:54px;width:150px}"
)


def google_html_error(status: int) -> bytes:
    """The page Google's front end serves for a 502 (and friends) instead of the API's JSON."""
    phrase = _REASON_PHRASES.get(status, "Server Error")
    text = (
        "The server encountered a temporary error and could not complete your request.<p>Please try again in 30 "
        "seconds."
    )
    return (
        "<!DOCTYPE html>\n<html lang=en>\n  <meta charset=utf-8>\n"
        '  <meta name=viewport content="initial-scale=1, minimum-scale=1, width=device-width">\n'
        f"  <title>Error {status} ({phrase})!!1</title>\n  <style>\n    {_HTML_STYLE}\n  </style>\n"
        "  <a href=//www.google.com/><span id=logo aria-label=Google></span></a>\n"
        f"  <p><b>{status}.</b> <ins>That\u2019s an error.</ins>\n"
        f"  <p>{text}  <ins>That\u2019s all we know.</ins>\n"
    ).encode()
