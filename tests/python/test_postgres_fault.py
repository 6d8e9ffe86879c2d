"""PostgreSQL stops under a running `latchkey serve`: requests fail fast with UNAVAILABLE (no
hang), /readyz says 503, and when PostgreSQL is back the same server process recovers by
itself with every acknowledged write intact.

The test starts a private PostgreSQL (initdb into a temp dir, pg_ctl on a port of its own,
Debian's binaries under /usr/lib/postgresql/*/bin; as root they run as the postgres user),
so the machine's shared server is never touched. It fails, never skips, without them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import grpclib
import modal
import pytest
from grpclib.const import Status
from modal_proto import api_pb2

from support import free_port, http_get, metric, open_client, random_master_key, raw_call, scrape_metrics

FAIL_FAST = 5.0  # seconds: acquire timeout (1s) plus generous slack for a loaded CI machine


def _pg_bin() -> Path:
    bins = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name.split(".")[0]))
    bins = [b for b in bins if (b / "initdb").exists() and (b / "pg_ctl").exists()]
    if not bins:
        pytest.fail(
            "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin "
            "(run scripts/ensure-postgres, which installs Debian's postgresql package)",
            pytrace=False,
        )
    return bins[-1]


class PrivatePostgres:
    """A throw-away PostgreSQL cluster on 127.0.0.1:`port`."""

    def __init__(self):
        self.bin = _pg_bin()
        self.root = Path(tempfile.mkdtemp(prefix="latchkey-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = free_port()
        self.as_root = os.geteuid() == 0
        if self.as_root:
            # PostgreSQL refuses to run as root: the cluster belongs to postgres.
            shutil.chown(self.root, "postgres", "postgres")
            self.root.chmod(0o700)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [str(self.bin / tool), *args]
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if check and proc.returncode != 0:
            pytest.fail(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}\n{self.log_text()}", pytrace=False)
        return proc

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def start(self):
        opts = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w", "-t", "60", "start")

    def stop(self, mode: str = "immediate"):
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def destroy(self):
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def private_postgres():
    pg = PrivatePostgres()
    pg.start()
    yield pg
    pg.destroy()


def _create(url: str, metadata: dict[str, str], name: str):
    request = api_pb2.SecretGetOrCreateRequest(
        deployment_name=name,
        object_creation_type=api_pb2.OBJECT_CREATION_TYPE_CREATE_FAIL_IF_EXISTS,
        env_dict={"NAME": name},
    )
    return raw_call(url, "SecretGetOrCreate", request, metadata)


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_database_stops_and_comes_back(start_server, private_postgres):
    pg = private_postgres
    server = start_server(
        args=["--database", pg.url, "--database-acquire-timeout", "1s", "--database-statement-timeout", "2s"],
        env={"LATCHKEY_MASTER_KEY": random_master_key()},
    )
    pid = server.proc.pid
    metadata = {"x-modal-token-id": server.token_id, "x-modal-token-secret": server.token_secret}

    # A client that keeps writing through the whole test, without retries: it records
    # what the server acknowledged and how every failure looked.
    acknowledged: list[str] = []
    failures: list[tuple[Status | str, float]] = []
    stop = threading.Event()

    def writer():
        i = 0
        while not stop.is_set():
            name = f"w-{i:05d}"
            i += 1
            started = time.monotonic()
            try:
                _create(server.url, metadata, name)
                acknowledged.append(name)
            except grpclib.GRPCError as exc:
                failures.append((exc.status, time.monotonic() - started))
            except Exception as exc:  # a hang shows up here as a timeout
                failures.append((repr(exc), time.monotonic() - started))
            time.sleep(0.01)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        _wait_for(lambda: len(acknowledged) >= 20, 30, "writes before the outage")

        pg.stop("immediate")  # as abrupt as a crash
        outage_start = len(acknowledged)
        for _ in range(2):
            started = time.monotonic()
            with pytest.raises(grpclib.GRPCError) as exc:
                raw_call(server.url, "SecretList", api_pb2.SecretListRequest(), metadata)
            elapsed = time.monotonic() - started
            assert exc.value.status == Status.UNAVAILABLE, exc.value
            assert elapsed < FAIL_FAST, f"UNAVAILABLE took {elapsed:.1f}s"
            started = time.monotonic()
            status, body = http_get(f"{server.url}/readyz", timeout=FAIL_FAST)
            assert status == 503, body
            assert time.monotonic() - started < FAIL_FAST
        _wait_for(lambda: len(failures) >= 3, 30, "the writer to see the outage")

        pg.start()
        _wait_for(lambda: http_get(f"{server.url}/readyz")[0] == 200, 30, "/readyz to recover")
        assert server.running() and server.proc.pid == pid, "recovered without a restart"
        _wait_for(lambda: len(acknowledged) >= outage_start + 20, 30, "writes after the outage")
        _, text = scrape_metrics(server)
        assert metric(text, "latchkey_change_feed_reconnects_total") >= 1
        assert metric(text, "latchkey_store_unavailable_total") >= 1
        assert metric(text, "latchkey_requests_total", interface="grpc", status="Unavailable") >= 1
    finally:
        stop.set()
        thread.join(timeout=30)

    print(f"acknowledged {len(acknowledged)}, failed {len(failures)}: slowest failure {max(t for _, t in failures):.2f}s")
    bad = [(status, round(t, 1)) for status, t in failures if status != Status.UNAVAILABLE or t > FAIL_FAST]
    assert not bad, f"failures that were not a fast UNAVAILABLE: {bad}"

    # Nothing acknowledged is lost.
    client = open_client(server.url, server.token_id, server.token_secret)
    listed = {s.name for s in modal.Secret.objects.list(client=client)}
    lost = sorted(set(acknowledged) - listed)
    assert not lost, f"acknowledged but lost: {lost}"
    server.stop()
