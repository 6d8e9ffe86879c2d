"""Two real `latchkey serve` replicas on one PostgreSQL database, driven by the real modal
client and CLI: what one acknowledges, the other reads next; concurrent writes through
both lose nothing; one of two concurrent creates of a name wins; paging stays exact while
the other replica writes.

Needs PostgreSQL: LATCHKEY_TEST_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/test,
which scripts/ensure-postgres provides). The test fails, never skips, without it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import modal
import modal.exception
import pytest
from modal_proto import api_pb2

from support import api, http_get, open_client, random_master_key, rpc, run_cli, unique

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/test"


def _psql(url: str, sql: str) -> str:
    psql = shutil.which("psql") or next((str(p) for p in sorted(Path("/usr/lib/postgresql").glob("*/bin/psql"))), None)
    if psql is None:
        pytest.fail("psql not found: install PostgreSQL's client (scripts/ensure-postgres does)", pytrace=False)
    proc = subprocess.run([psql, url, "-XAtq", "-c", sql], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        pytest.fail(
            f"PostgreSQL at {url} refused `{sql}`: {proc.stderr.strip()}\n"
            "Run scripts/ensure-postgres or set LATCHKEY_TEST_DATABASE_URL to a server where this user may "
            "create databases.",
            pytrace=False,
        )
    return proc.stdout


def _with_database(url: str, name: str) -> str:
    head, sep, query = url.partition("?")
    scheme, _, rest = head.partition("://")
    authority = rest.split("/", 1)[0]
    return f"{scheme}://{authority}/{name}{sep}{query}"


@pytest.fixture(scope="module")
def database_url():
    """A new database on the test server for this module, dropped afterwards."""
    base = os.environ.get("LATCHKEY_TEST_DATABASE_URL") or DEFAULT_URL
    name = f"lk_e2e_{uuid.uuid4().hex[:12]}"
    _psql(base, f"CREATE DATABASE {name}")
    yield _with_database(base, name)
    _psql(base, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


class Replica:
    """A running server plus a modal client aimed at it."""

    def __init__(self, server, token_id: str, token_secret: str):
        self.server = server
        self.token_id = token_id
        self.token_secret = token_secret
        self.client = open_client(server.url, token_id, token_secret)

    def cli(self, home, *args, **kwargs):
        env = {"MODAL_TOKEN_ID": self.token_id, "MODAL_TOKEN_SECRET": self.token_secret}
        return run_cli(self.server, home, *args, with_token=False, env=env, **kwargs)


@pytest.fixture(scope="module")
def replicas(start_server, database_url):
    """Two replicas started at the same time on one new database with one master key."""
    key = random_master_key()
    args = ["--database", database_url, "--database-pool-size", "4"]
    servers = [start_server(args=args, env={"LATCHKEY_MASTER_KEY": key}, wait=False) for _ in range(2)]
    for server in servers:
        server.wait_ready()
    # Exactly one replica bootstrapped the empty database and wrote the admin token.
    tokens = [s.data_dir / "admin-token" for s in servers if (s.data_dir / "admin-token").exists()]
    assert len(tokens) == 1, "one of two replicas starting together bootstraps the store"
    token = servers[0].admin_token if tokens[0].parent == servers[0].data_dir else servers[1].admin_token
    for server in servers:
        assert not (server.data_dir / "master.key").exists(), "the given key is used, none generated"
    return [Replica(s, token["LATCHKEY_TOKEN_ID"], token["LATCHKEY_TOKEN_SECRET"]) for s in servers]


def _keys_rpc(secret, client) -> set[str]:
    resp = rpc("SecretGetInfo", api_pb2.SecretGetInfoRequest(secret_id=secret.object_id), client)
    return set(resp.metadata.keys)


def _hydrated(name: str, client, env: str | None = None):
    secret = modal.Secret.from_name(name, environment_name=env, client=client)
    secret.hydrate(client)
    return secret


def test_both_ready_and_sharing_one_store(replicas):
    for r in replicas:
        status, body = http_get(f"{r.server.url}/readyz")
        assert status == 200, body


def test_a_write_on_one_is_read_next_on_the_other(replicas):
    a, b = replicas
    for i in range(10):
        writer, reader = (a, b) if i % 2 == 0 else (b, a)
        name = unique("ryw")
        modal.Secret.objects.create(name, {"FIRST": "1"}, client=writer.client)
        secret = _hydrated(name, reader.client)
        assert _keys_rpc(secret, reader.client) == {"FIRST"}

        _hydrated(name, reader.client).update({"SECOND": "2"})
        assert _keys_rpc(_hydrated(name, writer.client), writer.client) == {"FIRST", "SECOND"}

        modal.Secret.objects.delete(name, client=writer.client)
        with pytest.raises(modal.exception.NotFoundError):
            _hydrated(name, reader.client)


def test_concurrent_updates_of_different_keys_through_both_survive(replicas):
    a, b = replicas
    name = unique("upd")
    modal.Secret.objects.create(name, {"BASE": "0"}, client=a.client)
    handles = [_hydrated(name, r.client) for r in replicas]
    barrier = threading.Barrier(16)

    def update(i: int):
        barrier.wait()
        handles[i % 2].update({f"K{i}": str(i)})

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(update, range(16)))
    expected = {"BASE"} | {f"K{i}" for i in range(16)}
    for r in replicas:
        assert _keys_rpc(_hydrated(name, r.client), r.client) == expected


def test_concurrent_create_of_one_name_gives_one_already_exists(replicas):
    for _ in range(5):
        name = unique("race")
        barrier = threading.Barrier(2)

        def create(replica):
            barrier.wait()
            try:
                modal.Secret.objects.create(name, {"BY": replica.server.url}, client=replica.client)
                return "ok"
            except modal.exception.AlreadyExistsError as exc:
                assert name in str(exc)
                return "exists"

        with ThreadPoolExecutor(2) as pool:
            outcomes = sorted(pool.map(create, replicas))
        assert outcomes == ["exists", "ok"]


def test_list_paging_is_exact_while_the_other_replica_writes(replicas, home):
    a, b = replicas
    env = unique("busy")
    modal.Environment.objects.create(env, client=a.client)
    old = [f"old-{i:03d}" for i in range(90)]
    for name in old:
        modal.Secret.objects.create(name, {"K": "v"}, environment_name=env, client=a.client)

    stop = threading.Event()
    written: list[str] = []

    def writer():
        i = 0
        while not stop.is_set() and i < 200:
            name = f"new-{i:03d}"
            modal.Secret.objects.create(name, {"K": "v"}, environment_name=env, client=b.client)
            written.append(name)
            i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        seen: list[str] = []
        created: list[float] = []
        before = time.time() + 60
        while True:
            resp = rpc(
                "SecretList",
                api_pb2.SecretListRequest(
                    environment_name=env, pagination=api_pb2.ListPagination(max_objects=7, created_before=before)
                ),
                a.client,
            )
            seen.extend(item.label for item in resp.items)
            created.extend(item.metadata.creation_info.created_at for item in resp.items)
            if len(resp.items) < 7:
                break
            before = resp.items[-1].metadata.creation_info.created_at
            time.sleep(0.02)  # let the other replica write between pages
    finally:
        stop.set()
        thread.join(timeout=60)
    assert written, "the other replica wrote during the listing"
    assert len(seen) == len(set(seen)), "a secret was listed twice"
    assert set(old) <= set(seen), f"lost while the other replica wrote: {sorted(set(old) - set(seen))}"
    assert all(x > y for x, y in zip(created, created[1:])), "newest first, creation times unique"

    # The CLI through the other replica lists everything both wrote.
    result = b.cli(home, "secret", "list", "--json", "--env", env)
    listed = {row["name"] for row in json.loads(result.stdout)}
    assert listed == set(old) | set(written)


def test_cli_on_one_replica_sees_the_other(replicas, home):
    a, b = replicas
    name = unique("cli")
    a.cli(home, "secret", "create", name, "API_KEY=abc", "OTHER=1")
    assert name in b.cli(home, "secret", "list").flat()
    assert _keys_rpc(_hydrated(name, b.client), b.client) == {"API_KEY", "OTHER"}


def _api(replica, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    return api(replica.server, method, path, body, token=(replica.token_id, replica.token_secret))


def test_both_replicas_append_to_one_audit_chain(replicas):
    """Issue 14 on PostgreSQL: events from both replicas, written concurrently, form one
    gapless chain that verifies, and each replica's reads are recorded."""
    a, b = replicas
    name = unique("audit")
    modal.Secret.objects.create(name, {"V": "pg-value-0"}, client=a.client)

    def read(replica):
        for _ in range(10):
            status, body = _api(replica, "POST", f"/secrets/{name}/resolve", {})
            assert status == 200, body

    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(read, [a, b]))
    status, log = _api(a, "GET", f"/audit?secret={name}&action=secret.read")
    assert status == 200, log
    assert len(log["items"]) == 20, log
    status, everything = _api(b, "GET", "/audit")
    seqs = [e["seq"] for e in everything["items"]]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "one gapless chain"
    assert "pg-value" not in json.dumps(everything)
    for replica in (a, b):
        status, verdict = _api(replica, "POST", "/audit/verify")
        assert (status, verdict["intact"]) == (200, True), verdict
