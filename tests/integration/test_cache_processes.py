"""The host credential cache across real processes: single flight, the ``off`` switch, atomic rewrites.

Every worker is a separate Python interpreter, configured only through the environment, as a task
process would be; the single-flight workers wait at a start line (a file appearing) so they all ask at
once. A "mint" stands for a token request: it appends
one byte to a counter file (``O_APPEND``: atomic across processes) and takes a while, as a request does.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from airflow_workload_identity import cache

PROCESSES = 20
MINT_SECONDS = 0.3
IDENTITY = ("aws", "arn:aws:iam::222222222222:role/customer-reader", {"source": "web_identity"})


WORKER = """
import os, secrets, sys, time
from pathlib import Path
from airflow_workload_identity import cache

counter, out, ready, go, mint_seconds = sys.argv[1:6]


def mint():
    fd = os.open(counter, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, b"x")
    finally:
        os.close(fd)
    time.sleep(float(mint_seconds))
    return {"token": secrets.token_hex(16)}


def get_or_mint(store, key):
    # What the credential core does: read, else lock, read again, else mint and save.
    if store is None:
        return mint()
    hit = store.load(key)
    if hit is not None:
        return hit[0]
    with store.lock(key, timeout=60):
        hit = store.load(key)
        if hit is not None:
            return hit[0]
        payload = mint()
        store.save(key, payload, time.time() + 900)
        return payload


store = cache.configured_store()
key = cache.store_key("aws", "arn:aws:iam::222222222222:role/customer-reader", {"source": "web_identity"})
Path(ready).touch()
deadline = time.monotonic() + 120
while not os.path.exists(go):  # the start line: every process is up and waiting
    if time.monotonic() > deadline:
        sys.exit("never started")
    time.sleep(0.001)
Path(out).write_text(get_or_mint(store, key)["token"])
"""


def _run_together(tmp_path: Path, mode: str) -> tuple[int, set[str]]:
    counter, go = tmp_path / "mints", tmp_path / "go"
    ready = [tmp_path / f"ready-{n}" for n in range(PROCESSES)]
    env = {**os.environ, cache.ENV: mode, cache.DIR_ENV: str(tmp_path / "cache")}
    outs = [tmp_path / f"out-{n}" for n in range(PROCESSES)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(counter), str(out), str(flag), str(go), str(MINT_SECONDS)], env=env
        )
        for out, flag in zip(outs, ready, strict=True)
    ]
    deadline = time.monotonic() + 120
    while not all(flag.exists() for flag in ready) and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()  # every process has its store and its key, and waits at the start line
    codes = [proc.wait(240) for proc in procs]
    assert codes == [0] * PROCESSES
    mints = counter.stat().st_size if counter.exists() else 0
    return mints, {out.read_text() for out in outs}


def test_twenty_processes_started_together_mint_once(tmp_path: Path) -> None:
    mints, tokens = _run_together(tmp_path, "host")
    assert mints == 1
    assert len(tokens) == 1
    assert len(os.listdir(tmp_path / "cache")) == 2  # the entry and its lock file


@pytest.mark.parametrize("mode", ["off", "process"])
def test_with_the_host_cache_disabled_every_process_mints(tmp_path: Path, mode: str) -> None:
    mints, tokens = _run_together(tmp_path, mode)
    assert mints == PROCESSES
    assert len(tokens) == PROCESSES
    assert not (tmp_path / "cache").exists()


REWRITER = """
import hashlib, secrets, sys, time
from airflow_workload_identity import cache

import os

directory, key, stop = sys.argv[1], sys.argv[2], sys.argv[3]
store = cache.HostTokenStore(directory)
deadline = time.monotonic() + 120  # bounded even if the test never says stop
n = 0
while time.monotonic() < deadline and not os.path.exists(stop):
    n += 1
    blob = secrets.token_hex(1 + (n * 7919) % 12000)
    store.save(key, {"n": n, "blob": blob, "digest": hashlib.sha256(blob.encode()).hexdigest()}, time.time() + 600)
"""

READER = """
import hashlib, sys
from airflow_workload_identity import cache

directory, key, reads = sys.argv[1], sys.argv[2], int(sys.argv[3])
store = cache.HostTokenStore(directory)
misses = torn = 0
seen = set()
for _ in range(reads):
    hit = store.load(key)
    if hit is None:
        misses += 1
        continue
    payload = hit[0]
    if hashlib.sha256(payload["blob"].encode()).hexdigest() != payload["digest"]:
        torn += 1
    seen.add(payload["n"])
print(misses, torn, len(seen))
"""


def test_readers_in_other_processes_never_see_a_partial_entry(tmp_path: Path) -> None:
    directory = str(tmp_path / "cache")
    store = cache.HostTokenStore(directory)
    key = cache.store_key(*IDENTITY)
    store.save(key, {"n": 0, "blob": "", "digest": hashlib.sha256(b"").hexdigest()}, time.time() + 600)
    stop = str(tmp_path / "stop")
    writers = [subprocess.Popen([sys.executable, "-c", REWRITER, directory, key, stop]) for _ in range(2)]
    deadline = time.monotonic() + 60
    while (store.load(key) or ({"n": 0}, 0))[0]["n"] < 2:  # the writers are rewriting before readers start
        assert time.monotonic() < deadline, "the writers never rewrote the entry"
        time.sleep(0.01)
    readers = [
        subprocess.Popen([sys.executable, "-c", READER, directory, key, "1500"], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = [reader.communicate(timeout=120)[0] for reader in readers]
    Path(stop).touch()  # the writers rewrote for as long as the readers read
    assert [proc.wait(120) for proc in writers + readers] == [0] * 4
    for result in results:
        misses, torn, distinct = (int(part) for part in result.split())
        assert (misses, torn) == (0, 0)
        assert distinct > 1  # the writers really were rewriting while this reader read
    assert [name for name in os.listdir(directory) if name.endswith(".tmp")] == []
    store.close()
