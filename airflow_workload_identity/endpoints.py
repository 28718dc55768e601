"""Endpoint overrides in connections are a security boundary.

Whoever can edit a connection could point its STS, IAM Credentials or Entra endpoint at a host they
control and collect the deployment's web identity token, source access token or federated client
assertion. A suffix such as ``amazonaws.com`` or ``googleapis.com`` is not "the cloud": hosts under it
belong to whoever runs them (EC2 instances, API Gateway, load balancers, S3 buckets and websites, Cloud
Storage buckets). So an override set in a connection (``sts_endpoint_url``, ``iam_endpoint_url``,
``authority_host``; Google's STS ``sts_endpoint_url`` of ``gcp_workload_identity`` as cloud ``gcp_sts``) is
honoured only when it is

* exactly one of the cloud's token endpoints (:data:`ENDPOINT_FORMS`), over ``https`` on port 443, or
* a host the deployment lists in its Airflow configuration (any port; ``http`` allowed)::

    [workload_identity]
    allowed_endpoint_hosts = sts.internal.example.com, *.proxy.example.com, 127.0.0.1

  (comma-separated host names, IP addresses or ``*.suffix`` patterns; a pattern matches hosts under the
  suffix, not the suffix itself).

URLs are parsed strictly, and anything ambiguous is refused rather than interpreted: user info
(``user@host``), non-ASCII host names (IDN look-alikes) and ``xn--`` labels outside the allow-list, a
trailing dot, IP literals not listed (including the numeric forms ``2130706433``, ``127.1``, ``0x7f.1``),
spaces, backslashes, ``%``, a path other than ``/``, a query or a fragment. Host names are compared in
lower case. Every refusal is a :class:`~airflow_workload_identity.errors.ConfigError` naming the field and
the fix, raised by the hooks when they read the connection, before any network call.

Endpoints set by the deployment's own environment (``AWS_ENDPOINT_URL_STS``, ``GCE_METADATA_HOST``,
``AZURE_AUTHORITY_HOST``) are not connection data and are trusted as before.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from airflow_workload_identity.errors import ConfigError

__all__ = [
    "ENDPOINT_FORMS",
    "ENV",
    "SETTING",
    "ParsedEndpoint",
    "allowed_endpoint_hosts",
    "check_override",
    "cloud_endpoint",
    "host_allowed",
    "parse_endpoint",
]

SETTING = "[workload_identity] allowed_endpoint_hosts"
ENV = "AIRFLOW__WORKLOAD_IDENTITY__ALLOWED_ENDPOINT_HOSTS"

#: The token endpoints accepted without any configuration, as documented in docs/security.md.
ENDPOINT_FORMS: Mapping[str, tuple[str, ...]] = {
    "aws": (
        "sts.amazonaws.com",
        "sts.<region>.<partition suffix>",
        "sts-fips.<region>.<partition suffix>",
        "sts.<region>.<partition dual-stack suffix>",
        "sts-fips.<region>.<partition dual-stack suffix>",
        "vpce-<id>-<suffix>[-<zone>].sts.<region>.vpce.<partition suffix>",
    ),
    "gcp": (
        "iamcredentials.googleapis.com",
        "iamcredentials.mtls.googleapis.com",
        "private.googleapis.com",
        "restricted.googleapis.com",
        "iamcredentials-<endpoint>.p.googleapis.com",
    ),
    # Google's Security Token Service (workload identity federation's token exchange): its own list, so that
    # an IAM Credentials override cannot name it and the reverse.
    "gcp_sts": (
        "sts.googleapis.com",
        "sts.mtls.googleapis.com",
        "private.googleapis.com",
        "restricted.googleapis.com",
        "sts-<endpoint>.p.googleapis.com",
    ),
    "azure": (
        "login.microsoftonline.com",
        "login.microsoftonline.us",
        "login.chinacloudapi.cn",
        "login.partner.microsoftonline.cn",
    ),
}

_GCP_HOSTS = frozenset(ENDPOINT_FORMS["gcp"][:4])
#: Private Service Connect for Google APIs: ``SERVICE-ENDPOINT.p.googleapis.com``; the endpoint name is
#: 1-20 lower-case letters and digits starting with a letter.
_GCP_PSC = re.compile(r"iamcredentials-[a-z][a-z0-9]{0,19}\.p\.googleapis\.com", re.ASCII)
_GCP_STS_HOSTS = frozenset(ENDPOINT_FORMS["gcp_sts"][:4])
_GCP_STS_PSC = re.compile(r"sts-[a-z][a-z0-9]{0,19}\.p\.googleapis\.com", re.ASCII)
_AZURE_HOSTS = frozenset(ENDPOINT_FORMS["azure"])

#: A region label: ``us-east-1``, ``us-gov-west-1``, ``cn-northwest-1``, ``us-isob-east-1``,
#: ``eusc-de-east-1``. One DNS label, lower-case letters, hyphens, a final number.
_REGION = re.compile(r"[a-z]{2,4}(?:-[a-z]{2,10}){1,3}-\d{1,2}", re.ASCII)
#: ``vpce-<17 hex>-<8 alphanumerics>`` and optionally ``-<availability zone>`` (zonal DNS names).
_VPCE_LABEL = re.compile(r"vpce-[0-9a-f]{8,17}-[a-z0-9]{8}(?:-(?P<zone>[a-z0-9-]+))?", re.ASCII)
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?", re.ASCII)
_PORT = re.compile(r"[1-9][0-9]{0,4}", re.ASCII)
_NETLOC = re.compile(r"(?P<host>\[[^\[\]]*\]|[^:\[\]]*)(?::(?P<port>.*))?", re.ASCII)
#: Characters refused anywhere in an endpoint URL: parsers disagree about them, or they hide a host.
_FORBIDDEN = re.compile(r"[\x00-\x20\x7f\\%]", re.ASCII)

_FIX_LISTED = f"or, if the deployment trusts that host, list it in {SETTING} ({ENV})"


@dataclass(frozen=True)
class _Partition:
    name: str
    region: re.Pattern[str]
    suffixes: tuple[str, ...]  # dnsSuffix, dualStackDnsSuffix
    dns_suffix: str


@functools.cache
def _aws_partitions() -> tuple[_Partition, ...]:
    """botocore's own partition data (the same file its endpoint resolver reads): every partition's DNS
    suffixes and region pattern, so new regions and partitions need no change here."""
    from botocore.loaders import create_loader

    data = create_loader().load_data("partitions")
    partitions = []
    for item in data["partitions"]:
        outputs = item["outputs"]
        suffixes = tuple(dict.fromkeys(s for s in (outputs["dnsSuffix"], outputs.get("dualStackDnsSuffix")) if s))
        partitions.append(
            _Partition(
                name=item["id"],
                region=re.compile(item["regionRegex"], re.ASCII),
                suffixes=suffixes,
                dns_suffix=outputs["dnsSuffix"],
            )
        )
    return tuple(partitions)


def _aws_region(label: str, partition: _Partition) -> bool:
    return bool(_REGION.fullmatch(label)) and bool(partition.region.fullmatch(label))


def _aws_endpoint(host: str) -> bool:
    if host == "sts.amazonaws.com":
        return True
    first, _, rest = host.partition(".")
    for partition in _aws_partitions():
        for suffix in partition.suffixes:
            if first in ("sts", "sts-fips") and rest.endswith("." + suffix):
                region = rest[: -len(suffix) - 1]
                if _aws_region(region, partition):
                    return True
        # Interface VPC endpoints: vpce-<id>-<suffix>[-<zone>].sts.<region>.vpce.<dnsSuffix>
        vpce = _VPCE_LABEL.fullmatch(first)
        tail = ".vpce." + partition.dns_suffix
        if vpce and rest.startswith("sts.") and rest.endswith(tail):
            region = rest[len("sts.") : -len(tail)]
            zone = vpce.group("zone")
            if _aws_region(region, partition) and (zone is None or re.fullmatch(re.escape(region) + "[a-z]", zone)):
                return True
    return False


def cloud_endpoint(host: str, cloud: str) -> bool:
    """Whether ``host`` (lower-case ASCII, no trailing dot) is exactly one of ``cloud``'s token endpoints."""
    if cloud == "aws":
        return _aws_endpoint(host)
    if cloud == "gcp":
        return host in _GCP_HOSTS or bool(_GCP_PSC.fullmatch(host))
    if cloud == "gcp_sts":
        return host in _GCP_STS_HOSTS or bool(_GCP_STS_PSC.fullmatch(host))
    if cloud == "azure":
        return host in _AZURE_HOSTS
    raise ValueError(f"unknown cloud {cloud!r}")


# -- parsing ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParsedEndpoint:
    """An endpoint URL that passed the strict parse. ``host`` is lower-case; IPv6 without brackets."""

    scheme: str
    host: str
    port: int | None
    ip: bool


class _Refused(Exception):
    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.fix = fix


def _shown(host: str) -> str:
    """A host as it may appear in a message: escaped, so a look-alike shows what it really is."""
    return ascii(host)[1:-1]


def _dns_name(host: str) -> bool:
    labels = host.split(".")
    return (
        len(host) <= 253
        and all(_LABEL.fullmatch(label) for label in labels)
        and not labels[-1].isdigit()  # no top-level domain is numeric: "127.1" is an address, not a name
    )


def _parse_host(raw: str) -> tuple[str, bool]:
    """(normalised host, is an IP literal), or refused."""
    if raw.startswith("["):
        try:
            return str(ipaddress.IPv6Address(raw[1:-1])), True
        except ValueError:
            raise _Refused(f"has an invalid IPv6 address [{_shown(raw[1:-1])}]", "write a valid address") from None
    if not raw:
        raise _Refused("has no host", "write an absolute URL such as https://<host>")
    if not raw.isascii():
        raise _Refused(
            f"has a non-ASCII host name ({_shown(raw)}); internationalised names are refused because a "
            "look-alike of a cloud host would reach someone else",
            "type the host in plain ASCII",
        )
    host = raw.lower()
    if host.endswith("."):
        raise _Refused(f"has a host with a trailing dot ({_shown(host)})", "write the host without the trailing dot")
    try:
        return str(ipaddress.IPv4Address(host)), True
    except ValueError:
        pass
    try:
        socket.inet_aton(host)
    except OSError:
        pass
    else:  # 2130706433, 127.1, 0x7f000001, 0177.0.0.1: what the resolver turns into an address
        raise _Refused(
            f"has an IP address in a non-standard form ({_shown(host)})",
            "write IPv4 addresses as four decimal numbers (and list them in " + SETTING + ")",
        )
    if not _dns_name(host):
        raise _Refused(f"has an invalid host name ({_shown(host)})", "write a DNS host name")
    return host, False


def parse_endpoint(url: str) -> ParsedEndpoint:
    """Parse an endpoint URL strictly: ``http(s)://host[:port][/]`` and nothing else.

    Raises ``ValueError`` with the problem; :func:`check_override` turns it into a ``ConfigError``."""
    try:
        return _parse(url)
    except _Refused as exc:
        raise ValueError(exc.problem) from None


def _parse(url: str) -> ParsedEndpoint:
    if _FORBIDDEN.search(url):
        raise _Refused("contains spaces, control characters, backslashes or '%'", "write a plain https://<host> URL")
    try:
        parts = urlsplit(url)
    except ValueError:
        raise _Refused("is not a valid URL", "write an absolute URL such as https://<host>") from None
    if parts.scheme not in ("http", "https") or not url[: len(parts.scheme) + 3].lower().endswith("://"):
        raise _Refused("is not an absolute http(s) URL", "write an absolute URL such as https://<host>")
    if "@" in parts.netloc:
        # Never echo it: the part before '@' may be a password, and the host is not the one it looks like.
        raise _Refused("has a user-info part ('user@host')", "remove everything up to and including '@'")
    rest = url[len(parts.scheme) + 3 + len(parts.netloc) :]
    if rest not in ("", "/"):
        raise _Refused("has a path, query or fragment", "write only the scheme and host (https://<host>), with no path")
    match = _NETLOC.fullmatch(parts.netloc)
    if match is None:
        raise _Refused("has an invalid host or port", "write https://<host> or https://<host>:<port>")
    host, ip = _parse_host(match.group("host"))
    port_text = match.group("port")
    port: int | None = None
    if port_text is not None:
        if not _PORT.fullmatch(port_text) or int(port_text) > 65535:
            raise _Refused("has an invalid port", "write a port between 1 and 65535, or none")
        port = int(port_text)
    return ParsedEndpoint(scheme=parts.scheme, host=host, port=port, ip=ip)


# -- the deployment's allow-list -------------------------------------------------------------------------


def allowed_endpoint_hosts() -> tuple[str, ...]:
    """The deployment's allow-list, from Airflow's configuration (environment first, as Airflow does)."""
    raw: str | None = os.environ.get(ENV)
    if raw is None:
        try:
            from airflow.configuration import conf

            raw = conf.get("workload_identity", "allowed_endpoint_hosts", fallback="")
        except ImportError:  # pragma: no cover - outside Airflow
            raw = ""
    return tuple(part.strip() for part in (raw or "").split(",") if part.strip())


def _entry(entry: str) -> tuple[str, bool]:
    """An allow-list entry as (host or '.suffix', is a pattern); ``_Refused`` when it is not one."""
    fix = f"list host names, IP addresses or *.suffix patterns in {SETTING}, without scheme, port or path"
    pattern = entry.startswith("*.")
    body = entry[2:] if pattern else entry
    if body.startswith("[") and body.endswith("]") and not pattern:
        body = body[1:-1]
    try:
        return str(ipaddress.ip_address(body)), False
    except ValueError:
        pass
    if not body.isascii() or body.endswith(".") or not _dns_name(body.lower()):
        raise _Refused(f"{SETTING} has an entry that is not a host or *.suffix pattern ({_shown(entry)})", fix)
    if pattern and "." not in body:
        raise _Refused(f"{SETTING} has a pattern that covers a whole top-level domain ({_shown(entry)})", fix)
    return ("." + body.lower() if pattern else body.lower()), pattern


def _listed(endpoint: ParsedEndpoint, allowed: Sequence[str]) -> bool:
    for item in allowed:
        value, pattern = _entry(item)
        if pattern:
            if not endpoint.ip and endpoint.host.endswith(value):
                return True
        elif endpoint.host == value:
            return True
    return False


def host_allowed(host: str, cloud: str, allowed: Sequence[str]) -> bool:
    """Whether an https override to ``host`` on port 443 would be honoured for ``cloud`` (ignores a bad
    allow-list entry's error: :func:`check_override` reports it)."""
    try:
        endpoint = _parse(f"https://[{host}]" if ":" in host else f"https://{host}")
    except _Refused:
        return False
    if not endpoint.ip and cloud_endpoint(endpoint.host, cloud):
        return True
    try:
        return _listed(endpoint, allowed)
    except _Refused:
        return False


def check_override(url: str | None, *, field: str, conn_type: str, cloud: str) -> None:
    """Refuse a connection's endpoint override unless it is exactly one of ``cloud``'s token endpoints over
    https on port 443, or its host is listed by the deployment; raises ``ConfigError`` naming ``field``."""
    if not url:
        return
    if not isinstance(url, str):  # the specs check types first; this guards any other caller
        raise ConfigError(
            field, f"is a {type(url).__name__}, not a URL", "write the URL as a string", conn_type=conn_type
        )
    forms = ", ".join(ENDPOINT_FORMS[cloud])
    try:
        endpoint = _parse(url)
        public = not endpoint.ip and cloud_endpoint(endpoint.host, cloud)
        if public and endpoint.scheme == "https" and endpoint.port in (None, 443):
            return
        if _listed(endpoint, allowed_endpoint_hosts()):
            return
        shown = _shown(endpoint.host)
        if public and endpoint.scheme != "https":
            raise _Refused(
                f"uses plain http to {shown}, which would send the token unencrypted",
                f"use https://{shown}",
            )
        if public:
            raise _Refused(
                f"uses port {endpoint.port} on {shown}; the cloud's endpoints listen on 443 only",
                f"remove the port (https://{shown}) {_FIX_LISTED}",
            )
        raise _Refused(
            f"points at {shown}, which is not one of the {cloud} token endpoints ({forms}) and is not allowed "
            f"by {SETTING}; hosts under a cloud's domain belong to whoever runs them, and this one would "
            "receive the deployment's identity token",
            f"use the cloud's endpoint or remove the override, {_FIX_LISTED}",
        )
    except _Refused as exc:
        raise ConfigError(field, exc.problem, exc.fix, conn_type=conn_type) from None
