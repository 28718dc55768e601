"""Masking state and per-log-line cost after 1 vs 10,000 refreshes, and the cold single-hook rows.

    uv run python dev/bench/masking_bench.py [--refreshes 10000] [--identities 10] [--old-way-budget 60]
                                             [--hooks] [--repeat 5]

1. The package's redaction (``airflow_workload_identity.redaction``): 10 identities (4 AWS, 3 Google,
   3 Azure) refresh in turn, 10,000 refreshes in all, each handing its listener what the shared
   credentials hand it (AWS: a new secret key and session token; Google, Azure: a new access token).
   Reported after the first round and after the last: identities and live values held, the size of the
   live-values expression, the cost of one refresh's registration and the cost of redacting one log line
   (median over representative SDK DEBUG lines: botocore's request dict and XML response, its canonical
   request, an http.client wire dump, an azure-core header dump, an ordinary line).
2. Airflow's secrets masker fed the old way (``add_mask`` of every new secret on every refresh, as the
   package did before) for comparison, on a private ``SecretsMasker`` so nothing else is affected: the
   values held, the mean cost of the last round of ``add_mask`` and of redacting a line, at 1, 10, 100, 1,000 ...
   refreshes until ``--old-way-budget`` seconds are spent (the cost of an addition grows with the values
   held, so 10,000 refreshes the old way take hours; the table says where it stopped).
3. ``--hooks``: the cold single-hook row of each cloud's benchmark (``aws_bench.py``, ``gcp_bench.py``,
   ``azure_bench.py``, run as they are, ``--repeat``), against the official hook.

A measurement, never a test assertion: ``tests/unit/test_redaction.py`` asserts the bounded state.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import gc
import os
import re
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from dev.bench._setup import isolate_airflow  # noqa: E402

isolate_airflow()


def _jwt() -> str:
    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).decode().rstrip("=")

    header = part(b'{"alg":"RS256","typ":"JWT","kid":"k1"}')
    return f"{header}.{part(secrets.token_bytes(600))}.{part(secrets.token_bytes(256))}"


def _aws_secret_key() -> str:
    return base64.b64encode(secrets.token_bytes(30)).decode()


def _aws_session_token() -> str:
    return "IQoJb3JpZ2luX2VjE" + base64.b64encode(secrets.token_bytes(600)).decode()


def _google_token() -> str:
    return "ya29.c." + secrets.token_urlsafe(180)


def representative_lines() -> list[str]:
    """Log lines shaped like the SDKs' DEBUG output (see tests/unit/test_redaction.py for real ones)."""
    key, token, jwt, gtoken = _aws_secret_key(), _aws_session_token(), _jwt(), _google_token()
    return [
        "Making request for OperationModel(name=AssumeRoleWithWebIdentity) with params: {'url_path': '/', "
        "'query_string': '', 'method': 'POST', 'headers': {'Content-Type': 'application/x-www-form-urlencoded; "
        f"charset=utf-8'}}, 'body': {{'Action': 'AssumeRoleWithWebIdentity', 'Version': '2011-06-15', "
        f"'RoleArn': 'arn:aws:iam::111111111111:role/pod-base', 'WebIdentityToken': '{jwt}'}}}}",
        "Response body:\nb'<AssumeRoleResponse><AssumeRoleResult><Credentials><AccessKeyId>ASIAEXAMPLE123"
        f"</AccessKeyId><SecretAccessKey>{key}</SecretAccessKey><SessionToken>{token}</SessionToken>"
        "<Expiration>2026-12-02T02:00:00Z</Expiration></Credentials></AssumeRoleResult></AssumeRoleResponse>'",
        "CanonicalRequest:\nPOST\n/\n\ncontent-type:application/x-www-form-urlencoded; charset=utf-8\n"
        f"host:sts.eu-west-1.amazonaws.com\nx-amz-date:20261202T010000Z\nx-amz-security-token:{token}\n\n"
        "content-type;host;x-amz-date;x-amz-security-token\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        f"send: b'GET /storage/v1/b/bucket/o/key HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\nAuthorization: Bearer "
        f"{gtoken}\\r\\nAccept-Encoding: gzip\\r\\n\\r\\n'",
        "Request headers:\n    'x-ms-version': '2026-10-06'\n    'Accept': 'application/xml'\n"
        f"    'Authorization': 'Bearer {jwt}'\n    'x-ms-client-request-id': '0d6c4f2e-1111-2222-3333-444455556666'",
        "Event before-call.s3.GetObject: calling handler <function add_expect_header at 0x7f00deadbeef>",
    ]


def _median_us(fn: Callable[[], Any], *, rounds: int = 7, number: int = 50) -> float:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        samples.append((time.perf_counter() - start) / number * 1e6)
    return statistics.median(samples)


def _secrets_for(cloud: str) -> dict[str, Any] | str:
    expiry = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    if cloud == "aws":
        return {
            "access_key": "ASIA" + secrets.token_hex(8).upper(),
            "secret_key": _aws_secret_key(),
            "token": _aws_session_token(),
            "expiry_time": expiry,
        }
    return _google_token() if cloud == "gcp" else _jwt()


CLOUDS = ("aws",) * 4 + ("gcp",) * 3 + ("azure",) * 3


def bench_ours(refreshes: int, identities: int) -> list[tuple[str, str, str, str, str]]:
    from airflow_workload_identity import redaction

    class Identity:  # stands for one shared credential object
        pass

    redaction.reset()
    owners = [Identity() for _ in range(identities)]
    clouds = [CLOUDS[i % len(CLOUDS)] for i in range(identities)]
    listeners = [redaction.listener_for(owner) for owner in owners]
    lines = representative_lines()
    rows = []
    done = 0
    checkpoints = sorted({identities, refreshes})
    for checkpoint in checkpoints:
        spent = 0.0
        count = 0
        while done < checkpoint:
            i = done % identities
            data = _secrets_for(clouds[i])
            start = time.perf_counter()
            listeners[i](data)
            spent += time.perf_counter() - start
            count += 1
            done += 1
        state = redaction.state()
        per_line = statistics.median(_median_us(lambda line=line: redaction.redact(line)) for line in lines)
        rows.append(
            (
                f"{done:,}",
                f"{state['identities']} identities, {state['live_values']} live values",
                f"{redaction.live_pattern_size():,} chars",
                f"{spent / max(count, 1) * 1e6:.1f} µs",
                f"{per_line:.1f} µs",
            )
        )
    del owners, listeners
    gc.collect()
    return rows


def bench_airflow_old_way(
    refreshes: int, identities: int, budget: float
) -> tuple[list[tuple[str, str, str, str, str]], int]:
    from airflow.sdk._shared.secrets_masker.secrets_masker import SecretsMasker

    masker = SecretsMasker()
    masker.sensitive_variables_fields = []
    clouds = [CLOUDS[i % len(CLOUDS)] for i in range(identities)]
    lines = representative_lines()
    rows = []
    done = 0
    began = time.perf_counter()
    checkpoint = identities
    while done < refreshes:
        recent: list[float] = []
        while done < checkpoint:
            data = _secrets_for(clouds[done % identities])
            start = time.perf_counter()
            if isinstance(data, dict):
                masker.add_mask(data["secret_key"])
                masker.add_mask(data["token"])
            else:
                masker.add_mask(data)
            recent = [*recent[-(identities - 1) :], time.perf_counter() - start]
            done += 1
            if time.perf_counter() - began > budget:
                break
        per_line = statistics.median(
            _median_us(lambda line=line: masker.redact(line), rounds=3, number=5) for line in lines
        )
        rows.append(
            (
                f"{done:,}",
                f"{len(masker.patterns):,} values",
                f"{len(masker.replacer.pattern) if masker.replacer else 0:,} chars",
                f"{statistics.mean(recent) * 1e3:.2f} ms",
                f"{per_line:.1f} µs",
            )
        )
        if time.perf_counter() - began > budget:
            break
        checkpoint = min(refreshes, checkpoint * 10)
    return rows, done


_ROW = {
    "aws": re.compile(r"^\| first-client latency, cold.*$", re.M),
    "gcp": re.compile(r"^\| 1 hook: upload \+ download \+ exists \| cold .*$", re.M),
    "azure": re.compile(r"^\| 1 hook: `check_for_blob` \+ `read_file` \| cold .*$", re.M),
}


def bench_hooks(repeat: int) -> list[tuple[str, str]]:
    out = []
    for cloud, pattern in _ROW.items():
        script = ROOT / "dev" / "bench" / f"{cloud}_bench.py"
        done = subprocess.run(
            [sys.executable, str(script), "--repeat", str(repeat)],
            capture_output=True,
            text=True,
            timeout=1800,
            cwd=ROOT,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
        match = pattern.search(done.stdout)
        out.append((cloud, match.group(0) if match else f"(no row; exit {done.returncode}: {done.stderr[-300:]})"))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--refreshes", type=int, default=10_000)
    parser.add_argument("--identities", type=int, default=10)
    parser.add_argument("--old-way-budget", type=float, default=60.0, help="seconds for Airflow's masker rows")
    parser.add_argument("--hooks", action="store_true", help="also run the cold single-hook rows per cloud")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    header = (
        "| refreshes | state held | expression matched per line | cost of one refresh's registration "
        "| cost per log line (median) |"
    )
    print(f"### airflow-workload-identity redaction ({args.identities} identities)\n")
    print(header)
    print("|---|---|---|---|---|")
    for row in bench_ours(args.refreshes, args.identities):
        print("| " + " | ".join(row) + " |")
    print()
    rows, reached = bench_airflow_old_way(args.refreshes, args.identities, args.old_way_budget)
    print(f"### Airflow's secrets masker fed every new secret (the old way; stopped at {reached:,} refreshes)\n")
    print(
        header.replace(
            "cost of one refresh's registration", f"cost of one refresh's `add_mask` (last {args.identities})"
        )
    )
    print("|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()
    if args.hooks:
        print("### Cold single hook per cloud (rows of the clouds' benchmarks)\n")
        for cloud, row in bench_hooks(args.repeat):
            print(f"{cloud}: {row}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
