"""The host credential cache on real files: keys, configuration, permissions, symlinks, bad entries, locks."""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import logging
import os
import shutil
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_workload_identity import cache
from airflow_workload_identity.cache import HostTokenStore, configured_store, store_key
from airflow_workload_identity.errors import ConfigError

IDENTITY = ("aws", "arn:aws:iam::222222222222:role/customer-reader", "ext-7f3a9c", 3600)
SOURCE_A = {"kind": "web_identity", "role": "arn:aws:iam::111111111111:role/pod-a"}
SOURCE_B = {"kind": "web_identity", "role": "arn:aws:iam::111111111111:role/pod-b"}
PAYLOAD = {"access_key": "ASIAEXAMPLE", "secret_key": "s3cr3t-value", "token": "session-token-value"}
ROOT = os.geteuid() == 0


@pytest.fixture(autouse=True)
def _fresh_module_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(cache.ENV, raising=False)
    monkeypatch.delenv(cache.DIR_ENV, raising=False)
    cache._stores.clear()
    cache._warned.clear()
    yield
    for store in cache._stores.values():
        if store is not None:
            store.close()
    cache._stores.clear()
    cache._warned.clear()


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def store(directory: Path) -> Iterator[HostTokenStore]:
    s = HostTokenStore(str(directory))
    yield s
    s.close()


def key_for(source: object = SOURCE_A) -> str:
    return store_key(*IDENTITY, source)


def entry_path(directory: Path, key: str) -> Path:
    return directory / f"{key}.json"


def warnings_in(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == cache.__name__ and r.levelno == logging.WARNING]


# -- keys -----------------------------------------------------------------------------------------------


class Kind(enum.Enum):
    WEB = "web_identity"


@dataclasses.dataclass(frozen=True)
class Hop:
    role_arn: str
    external_id: str | None = None


def test_store_key_is_a_sha256_of_canonical_json() -> None:
    key = store_key("aws", {"b": 1, "a": [1, 2]}, None)
    assert key == hashlib.sha256(b'["aws",{"a":[1,2],"b":1},null]').hexdigest()
    assert key == store_key("aws", {"a": (1, 2), "b": 1}, None)  # dict order and tuple vs list do not matter


def test_store_key_distinguishes_every_part_and_reveals_none() -> None:
    keys = {key_for(SOURCE_A), key_for(SOURCE_B), store_key(*IDENTITY), store_key(*IDENTITY[:-1], 900)}
    assert len(keys) == 4
    for key in keys:
        assert len(key) == 64 and set(key) <= set("0123456789abcdef")
        assert "arn" not in key and "222222222222" not in key


def test_store_key_accepts_dataclasses_enums_and_sets_and_refuses_the_rest() -> None:
    assert store_key(Hop("r"), Kind.WEB, {"x", "y"}) == store_key(Hop("r"), Kind.WEB, frozenset({"y", "x"}))
    assert store_key(Hop("r")) != store_key(Hop("r", "e"))
    with pytest.raises(TypeError, match="object"):
        store_key(object())
    with pytest.raises(TypeError, match="NaN"):
        store_key(float("nan"))


def test_operations_refuse_a_key_that_is_not_from_store_key(store: HostTokenStore) -> None:
    for bad in ("../../etc/passwd", "arn:aws:iam::1:role/x", "A" * 64, ""):
        with pytest.raises(ValueError, match="store_key"):
            store.load(bad)
        with pytest.raises(ValueError, match="store_key"):
            store.save(bad, {}, time.time() + 60)


# -- round trip and what is on disk --------------------------------------------------------------------


def test_save_then_load_round_trips_and_the_disk_holds_only_hashes(store: HostTokenStore, directory: Path) -> None:
    key = key_for()
    expires = time.time() + 600
    assert store.load(key) is None
    store.save(key, PAYLOAD, expires)
    assert store.load(key) == (PAYLOAD, expires)
    assert sorted(os.listdir(directory)) == [f"{key}.json"]
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    path = entry_path(directory, key)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    entry = json.loads(path.read_text())
    assert set(entry) == {"format", "version", "key", "expires_at", "written_at", "payload"}
    assert (entry["format"], entry["version"], entry["key"]) == (cache.FORMAT, cache.FORMAT_VERSION, key)
    assert "s3cr3t-value" not in repr(store)


def test_entries_are_0600_even_with_a_permissive_umask(store: HostTokenStore, directory: Path) -> None:
    old = os.umask(0)
    try:
        store.save(key_for(), PAYLOAD, time.time() + 600)
    finally:
        os.umask(old)
    assert stat.S_IMODE(entry_path(directory, key_for()).stat().st_mode) == 0o600


def test_lock_files_are_0600_and_removed_with_the_expired_entry(store: HostTokenStore, directory: Path) -> None:
    key = key_for()
    with store.lock(key, timeout=1):
        store.save(key, PAYLOAD, time.time() + 0.3)
    assert stat.S_IMODE((directory / f"{key}.lock").stat().st_mode) == 0o600
    time.sleep(0.4)
    assert store.load(key) is None
    assert os.listdir(directory) == []


def test_remove_deletes_the_entry_and_its_lock_file(store: HostTokenStore, directory: Path) -> None:
    key = key_for()
    with store.lock(key, timeout=1):
        store.save(key, PAYLOAD, time.time() + 600)
    store.remove(key)
    assert store.load(key) is None
    assert os.listdir(directory) == []


# -- configuration --------------------------------------------------------------------------------------


def test_configured_store_is_host_by_default_and_shared_per_directory(
    directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(cache.DIR_ENV, str(directory))
    store = configured_store()
    assert isinstance(store, HostTokenStore)
    assert configured_store(None) is store
    assert configured_store("host") is store
    assert store.directory == str(directory)


@pytest.mark.parametrize(("setting", "conn"), [("process", None), ("off", None), ("host", "process"), ("host", "off")])
def test_process_or_off_anywhere_means_no_host_store(
    setting: str, conn: str | None, directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(cache.ENV, setting)
    monkeypatch.setenv(cache.DIR_ENV, str(directory))
    assert configured_store(conn) is None
    assert not directory.exists()


def test_a_connection_cannot_turn_the_host_cache_on(directory: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cache.ENV, "off")
    monkeypatch.setenv(cache.DIR_ENV, str(directory))
    assert configured_store("host") is None


def test_bad_settings_are_config_errors_naming_the_setting(directory: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cache.DIR_ENV, str(directory))
    with pytest.raises(ConfigError) as conn_error:
        configured_store("shared")
    assert conn_error.value.field == "credential_cache"
    monkeypatch.setenv(cache.ENV, "disk")
    with pytest.raises(ConfigError) as global_error:
        configured_store()
    assert global_error.value.field == cache.SETTING
    assert cache.ENV in global_error.value.fix
    monkeypatch.setenv(cache.ENV, "HOST")
    monkeypatch.setenv(cache.DIR_ENV, "relative/cache")
    with pytest.raises(ConfigError) as dir_error:
        configured_store()
    assert dir_error.value.field == cache.DIR_SETTING
    assert not Path("relative").exists()


def test_configuration_is_read_from_airflow_when_the_environment_is_silent(
    directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.configuration import conf

    assert cache.cache_mode() == "host"
    if not conf.has_section("workload_identity"):
        conf.add_section("workload_identity")
    conf.set("workload_identity", "credential_cache", "process")
    conf.set("workload_identity", "credential_cache_dir", str(directory))
    try:
        assert cache.cache_mode() == "process"
        assert cache._configured_directory() == str(directory)
        monkeypatch.setenv(cache.ENV, "host")  # the environment wins, as in Airflow
        assert cache.cache_mode() == "host"
        assert configured_store().directory == str(directory)  # type: ignore[union-attr]
    finally:
        conf.remove_option("workload_identity", "credential_cache")
        conf.remove_option("workload_identity", "credential_cache_dir")


def test_default_directory_is_per_user(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert cache.default_directory() == str(tmp_path / "airflow-workload-identity")
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)
    assert cache.default_directory() == str(tmp_path / f"awi-{os.geteuid()}")


def test_the_default_directory_is_created_private(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    store = configured_store()
    assert isinstance(store, HostTokenStore)
    made = tmp_path / "airflow-workload-identity"
    assert stat.S_IMODE(made.stat().st_mode) == 0o700 and made.stat().st_uid == os.geteuid()


# -- an unsafe directory: refused, one warning, in-process only ---------------------------------------------


def test_a_group_or_world_readable_directory_is_refused_with_one_warning(
    directory: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    directory.mkdir(mode=0o700)
    directory.chmod(0o755)
    monkeypatch.setenv(cache.DIR_ENV, str(directory))
    with caplog.at_level(logging.DEBUG, logger=cache.__name__):
        assert configured_store() is None
        assert configured_store() is None
        assert configured_store("host") is None
    warnings = warnings_in(caplog)
    assert len(warnings) == 1
    assert "0755" in warnings[0] and str(directory) in warnings[0] and "this process only" in warnings[0]
    assert os.listdir(directory) == []
    assert stat.S_IMODE(directory.stat().st_mode) == 0o755  # refused, not silently "fixed"


def test_a_symlinked_directory_is_refused_and_never_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    link = tmp_path / "cache"
    link.symlink_to(target)
    monkeypatch.setenv(cache.DIR_ENV, str(link))
    with caplog.at_level(logging.WARNING, logger=cache.__name__):
        assert configured_store() is None
    assert "symbolic link" in warnings_in(caplog)[0]
    assert os.listdir(target) == []


@pytest.mark.skipif(not ROOT, reason="needs root to chown to another uid")
def test_a_directory_owned_by_another_user_is_refused(
    directory: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    directory.mkdir(mode=0o700)
    os.chown(directory, 65534, 65534)
    monkeypatch.setenv(cache.DIR_ENV, str(directory))
    with caplog.at_level(logging.WARNING, logger=cache.__name__):
        assert configured_store() is None
    assert "owned by uid 65534" in warnings_in(caplog)[0]


def test_a_directory_opened_up_later_stops_serving(
    store: HostTokenStore, directory: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key = key_for()
    store.save(key, PAYLOAD, time.time() + 600)
    directory.chmod(0o750)
    with caplog.at_level(logging.WARNING, logger=cache.__name__):
        assert store.load(key) is None
        store.save(key_for(SOURCE_B), PAYLOAD, time.time() + 600)
        with store.lock(key, timeout=1):
            pass
    assert len(warnings_in(caplog)) == 1
    assert sorted(os.listdir(directory)) == [f"{key}.json"]


def test_an_unusable_directory_path_falls_back_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv(cache.DIR_ENV, str(blocker / "cache"))
    assert configured_store() is None


# -- entries that must not be served --------------------------------------------------------------------------


def test_a_symlinked_entry_is_refused_never_followed_and_removed(
    store: HostTokenStore, directory: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key = key_for()
    store.save(key, PAYLOAD, time.time() + 600)
    outside = tmp_path / "outside.json"
    shutil.copy(entry_path(directory, key), outside)
    outside.chmod(0o600)
    entry_path(directory, key).unlink()
    entry_path(directory, key).symlink_to(outside)
    with caplog.at_level(logging.WARNING, logger=cache.__name__):
        assert store.load(key) is None
    assert "symbolic link" in warnings_in(caplog)[0]
    assert not entry_path(directory, key).is_symlink()
    assert outside.exists()
    # Writing over a symlink replaces the link, never the file it points at.
    entry_path(directory, key).symlink_to(outside)
    before = outside.read_bytes()
    store.save(key, {"token": "new"}, time.time() + 600)
    assert outside.read_bytes() == before
    assert not entry_path(directory, key).is_symlink()
    assert store.load(key) == ({"token": "new"}, pytest.approx(time.time() + 600, abs=5))


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_group_or_world_accessible_entry_is_refused_and_removed(
    store: HostTokenStore, directory: Path, mode: int, caplog: pytest.LogCaptureFixture
) -> None:
    key = key_for()
    store.save(key, PAYLOAD, time.time() + 600)
    entry_path(directory, key).chmod(mode)
    with caplog.at_level(logging.WARNING, logger=cache.__name__):
        assert store.load(key) is None
    assert f"{mode:04o}" in warnings_in(caplog)[0]
    assert not entry_path(directory, key).exists()


@pytest.mark.skipif(not ROOT, reason="needs root to chown to another uid")
def test_an_entry_owned_by_another_user_is_refused_and_removed(store: HostTokenStore, directory: Path) -> None:
    key = key_for()
    store.save(key, PAYLOAD, time.time() + 600)
    os.chown(entry_path(directory, key), 65534, 65534)
    assert store.load(key) is None
    assert not entry_path(directory, key).exists()


def test_an_entry_for_another_source_identity_is_not_served(store: HostTokenStore, directory: Path) -> None:
    key_a, key_b = key_for(SOURCE_A), key_for(SOURCE_B)
    store.save(key_a, PAYLOAD, time.time() + 600)
    shutil.copy(entry_path(directory, key_a), entry_path(directory, key_b))
    entry_path(directory, key_b).chmod(0o600)
    assert store.load(key_b) is None
    assert not entry_path(directory, key_b).exists()
    assert store.load(key_a) == (PAYLOAD, pytest.approx(time.time() + 600, abs=5))


def _write_raw(directory: Path, key: str, data: bytes) -> None:
    path = entry_path(directory, key)
    path.write_bytes(data)
    path.chmod(0o600)


def _entry(key: str, **changes: object) -> bytes:
    entry: dict[str, object] = {
        "format": cache.FORMAT,
        "version": cache.FORMAT_VERSION,
        "key": key,
        "expires_at": time.time() + 600,
        "written_at": time.time(),
        "payload": PAYLOAD,
    }
    entry.update(changes)
    return json.dumps(entry).encode()


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda key: b"{not json", id="corrupt-json"),
        pytest.param(lambda key: _entry(key)[: len(_entry(key)) // 2], id="truncated"),
        pytest.param(lambda key: b"", id="empty"),
        pytest.param(lambda key: b"\xff\xfe\x00garbage", id="not-utf8"),
        pytest.param(lambda key: b"[1, 2, 3]", id="not-an-object"),
        pytest.param(lambda key: _entry(key, version=cache.FORMAT_VERSION + 1), id="other-version"),
        pytest.param(lambda key: _entry(key, format="botocore-jsonfilecache"), id="other-format"),
        pytest.param(lambda key: _entry(key, payload="token"), id="payload-not-object"),
        pytest.param(lambda key: _entry(key, expires_at="tomorrow"), id="expiry-not-number"),
        pytest.param(lambda key: _entry(key, expires_at=True), id="expiry-boolean"),
        pytest.param(lambda key: b"[" * 100000 + b"]" * 100000, id="deeply-nested"),
        pytest.param(lambda key: b" " * (cache.MAX_ENTRY_BYTES + 1), id="oversized"),
    ],
)
def test_bad_entries_are_ignored_then_replaced_never_a_crash(
    store: HostTokenStore, directory: Path, damage: object
) -> None:
    key = key_for()
    assert callable(damage)
    _write_raw(directory, key, damage(key))
    assert store.load(key) is None
    store.save(key, PAYLOAD, time.time() + 600)
    assert store.load(key) == (PAYLOAD, pytest.approx(time.time() + 600, abs=5))


def test_an_expired_entry_is_removed_on_load_with_its_lock_file(store: HostTokenStore, directory: Path) -> None:
    key = key_for()
    with store.lock(key, timeout=1):
        _write_raw(directory, key, _entry(key, expires_at=time.time() - 1))
    assert sorted(os.listdir(directory)) == [f"{key}.json", f"{key}.lock"]
    assert store.load(key) is None
    assert os.listdir(directory) == []


def test_an_already_expired_token_is_not_written(store: HostTokenStore, directory: Path) -> None:
    store.save(key_for(), PAYLOAD, time.time() - 1)
    assert os.listdir(directory) == []


def test_expiry_follows_the_stores_clock(directory: Path) -> None:
    now = [1_000_000.0]
    store = HostTokenStore(str(directory), clock=lambda: now[0])
    key = key_for()
    store.save(key, PAYLOAD, 1_000_100.0)
    assert store.load(key) == (PAYLOAD, 1_000_100.0)
    now[0] = 1_000_100.0
    assert store.load(key) is None
    store.close()


def test_a_directory_entry_in_place_of_a_file_is_not_a_crash(store: HostTokenStore, directory: Path) -> None:
    key = key_for()
    entry_path(directory, key).mkdir()
    assert store.load(key) is None


# -- sweeping ---------------------------------------------------------------------------------------------------


def test_sweeping_removes_expired_entries_a_bounded_batch_at_a_time(store: HostTokenStore, directory: Path) -> None:
    expired = [store_key("expired", n) for n in range(3 * cache.SWEEP_BATCH)]
    live = [store_key("live", n) for n in range(5)]
    for key in expired:
        store.save(key, PAYLOAD, time.time() - 1)
    for key in live:
        store.save(key, PAYLOAD, time.time() + 600)
    stale_temp = directory / f".{live[0]}.0123456789abcdef.tmp"
    stale_temp.write_bytes(b"{")
    os.utime(stale_temp, (time.time() - 2 * cache.STALE_TEMP_SECONDS,) * 2)
    store._sweep_iter, store._next_sweep = None, 0.0
    before = len(os.listdir(directory))
    store._maybe_sweep()
    assert before - len(os.listdir(directory)) <= cache.SWEEP_BATCH
    for _ in range(20):
        store._next_sweep = 0.0
        store._maybe_sweep()
    assert sorted(os.listdir(directory)) == sorted(f"{key}.json" for key in live)


def test_the_store_holds_nothing_per_token(store: HostTokenStore) -> None:
    names = set(vars(store))
    for n in range(300):
        key = store_key("identity", n)
        store.save(key, PAYLOAD, time.time() + 600)
        store.load(key)
        with store.lock(key, timeout=1):
            pass
    assert set(vars(store)) == names
    sized = [value for value in vars(store).values() if isinstance(value, list | dict | set | tuple)]
    assert sized == []


# -- locks ---------------------------------------------------------------------------------------------------


def test_lock_excludes_other_threads(store: HostTokenStore) -> None:
    key = key_for()
    counter = {"value": 0}

    def bump() -> None:
        for _ in range(20):
            with store.lock(key, timeout=30):
                value = counter["value"]
                time.sleep(0.001)
                counter["value"] = value + 1

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert counter["value"] == 80


def test_lock_timeout_proceeds_without_the_lock_and_says_so_at_debug(
    store: HostTokenStore, caplog: pytest.LogCaptureFixture
) -> None:
    key = key_for()
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with store.lock(key, timeout=5):
            held.set()
            release.wait(30)

    thread = threading.Thread(target=holder)
    thread.start()
    assert held.wait(10)
    entered = False
    with caplog.at_level(logging.DEBUG, logger=cache.__name__):
        start = time.monotonic()
        with store.lock(key, timeout=0.2):
            entered = True
        waited = time.monotonic() - start
    release.set()
    thread.join(10)
    assert entered and waited >= 0.2
    assert any("proceeding without it" in r.getMessage() and r.levelno == logging.DEBUG for r in caplog.records)
    assert not warnings_in(caplog)


def test_a_lock_file_removed_under_a_waiter_does_not_let_two_holders_in(store: HostTokenStore, directory: Path) -> None:
    key = key_for()
    name = f"{key}.lock"
    first = store._acquire(name, timeout=1)
    assert first is not None
    waiter_in, waiter_out = threading.Event(), threading.Event()

    def waiter() -> None:
        with store.lock(key, timeout=30):
            waiter_in.set()
            waiter_out.wait(30)

    thread = threading.Thread(target=waiter)
    thread.start()
    time.sleep(0.5)  # the waiter has opened the current lock file and polls it
    os.unlink(directory / name)  # the holder removes the lock file (as cleanup does, while holding it)
    second = store._acquire(name, timeout=1)  # someone else locks the new lock file
    assert second is not None
    os.close(first)  # the old holder lets go: the waiter's lock is on a file no longer in the directory
    assert not waiter_in.wait(0.5)
    os.close(second)
    assert waiter_in.wait(10)
    waiter_out.set()
    thread.join(10)


# -- atomic writes --------------------------------------------------------------------------------------------


def test_a_reader_never_sees_a_partial_entry_while_a_writer_rewrites(store: HostTokenStore, directory: Path) -> None:
    key = key_for()
    store.save(key, {"n": 0, "blob": "", "digest": hashlib.sha256(b"").hexdigest()}, time.time() + 600)
    stop = threading.Event()
    seen: list[int] = []
    problems: list[str] = []

    def writer() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            blob = str(n) * (1 + (n * 7919) % 20000)
            store.save(
                key, {"n": n, "blob": blob, "digest": hashlib.sha256(blob.encode()).hexdigest()}, time.time() + 600
            )

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        # at least 400 reads, and on until the writer has been seen rewriting (a busy machine may not schedule
        # the writer thread during the first reads); bounded so a writer that never writes fails below
        deadline = time.monotonic() + 60
        reads = 0
        while reads < 400 or (len(set(seen)) < 3 and time.monotonic() < deadline):
            reads += 1
            hit = store.load(key)
            if hit is None:
                problems.append("miss")
                continue
            payload = hit[0]
            if hashlib.sha256(payload["blob"].encode()).hexdigest() != payload["digest"]:
                problems.append("torn")
            seen.append(payload["n"])
    finally:
        stop.set()
        thread.join(30)
    assert problems == []
    assert len(set(seen)) > 1  # the writer really was rewriting while we read
    assert [name for name in os.listdir(directory) if name.endswith(".tmp")] == []


def test_async_callers_through_to_thread_share_one_mint(store: HostTokenStore) -> None:
    import asyncio

    key = key_for()
    mints: list[int] = []

    def get_or_mint() -> dict[str, str]:
        hit = store.load(key)
        if hit is not None:
            return hit[0]
        with store.lock(key, timeout=30):
            hit = store.load(key)
            if hit is not None:
                return hit[0]
            mints.append(1)
            time.sleep(0.1)
            payload = {"token": f"t{len(mints)}"}
            store.save(key, payload, time.time() + 600)
            return payload

    async def main() -> list[dict[str, str]]:
        return await asyncio.gather(*(asyncio.to_thread(get_or_mint) for _ in range(10)))

    results = asyncio.run(main())
    assert len(mints) == 1
    assert results == [{"token": "t1"}] * 10
