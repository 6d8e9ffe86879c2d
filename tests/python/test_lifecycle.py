"""First start, restart on the same data dir, wrong master key, health endpoints, signals."""

import base64
import signal
import stat
import subprocess
import time

import modal
import modal.exception
import pytest

from support import (
    client_for,
    http_get,
    latchkey_bin,
    random_master_key,
    secret_keys,
    server_env,
    snapshot_dir,
)


def _mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def test_first_start_bootstrap(start_server):
    srv = start_server()
    master = srv.data_dir / "master.key"
    token_file = srv.data_dir / "admin-token"
    assert _mode(master) == 0o600
    assert _mode(token_file) == 0o600
    key = master.read_text().strip()
    assert len(master.read_text().strip().splitlines()) == 1
    assert len(base64.b64decode(key, validate=True)) == 32

    token = srv.admin_token
    assert set(token) == {"LATCHKEY_SERVER_URL", "LATCHKEY_TOKEN_ID", "LATCHKEY_TOKEN_SECRET"}
    assert token["LATCHKEY_SERVER_URL"] == srv.url
    assert token["LATCHKEY_TOKEN_ID"].startswith("ak-")
    assert token["LATCHKEY_TOKEN_SECRET"].startswith("as-")
    assert token["LATCHKEY_TOKEN_SECRET"] not in srv.log(), "the token secret was printed to the log"


def test_health_endpoints(server):
    for path in ("/healthz", "/readyz"):
        status, _ = http_get(server.url + path)
        assert status == 200, path


def test_restart_reuses_everything(start_server):
    srv = start_server()
    client = client_for(srv)
    try:
        modal.Secret.objects.create("survivor", {"A": "1", "B": "2"}, client=client)
        modal.Environment.objects.create("staging", client=client)
        modal.Secret.objects.create("in-staging", {"S": "1"}, environment_name="staging", client=client)
        before = modal.Secret.from_name("survivor", client=client).hydrate()
        before_info = before.info()
    finally:
        client.close()
    master_before = (srv.data_dir / "master.key").read_bytes()
    token_before = (srv.data_dir / "admin-token").read_bytes()
    assert srv.stop() == 0

    again = start_server(data_dir=srv.data_dir, port=srv.port)
    assert (srv.data_dir / "master.key").read_bytes() == master_before
    assert (srv.data_dir / "admin-token").read_bytes() == token_before
    client = client_for(again)  # the same token still works
    try:
        after = modal.Secret.from_name("survivor", required_keys=["A", "B"], client=client).hydrate()
        assert after.object_id == before.object_id
        assert secret_keys(after.object_id, client) == {"A", "B"}
        info = after.info()
        assert info.created_at == before_info.created_at
        assert info.created_by == "admin"
        assert [s.name for s in modal.Secret.objects.list(client=client)] == ["survivor"]
        modal.Secret.from_name("in-staging", environment_name="staging", required_keys=["S"], client=client).hydrate()
    finally:
        client.close()
    assert again.stop() == 0


def _run_expecting_refusal(srv, env_extra=None, extra_args=()):
    cmd = [
        str(latchkey_bin()),
        "serve",
        "--listen",
        f"127.0.0.1:{srv.port}",
        "--data-dir",
        str(srv.data_dir),
        *extra_args,
    ]
    try:
        proc = subprocess.run(cmd, env=server_env(env_extra), capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"latchkey kept running with a wrong master key: {exc.stdout} {exc.stderr}")
    return proc


@pytest.fixture
def stopped_server_with_data(start_server):
    srv = start_server()
    client = client_for(srv)
    try:
        modal.Secret.objects.create("keep-me", {"A": "1"}, client=client)
        modal.Secret.from_dict({"E": "1"}).hydrate(client=client)
    finally:
        client.close()
    assert srv.stop() == 0
    return srv


@pytest.mark.parametrize("how", ["env", "file"])
def test_wrong_master_key_refuses_and_changes_nothing(stopped_server_with_data, tmp_path, how):
    srv = stopped_server_with_data
    before = snapshot_dir(srv.data_dir)
    wrong = random_master_key()
    if how == "env":
        proc = _run_expecting_refusal(srv, env_extra={"LATCHKEY_MASTER_KEY": wrong})
    else:
        key_file = tmp_path / "wrong.key"
        key_file.write_text(wrong + "\n")
        key_file.chmod(0o600)
        proc = _run_expecting_refusal(srv, extra_args=["--master-key-file", str(key_file)])
    assert proc.returncode != 0
    output = (proc.stdout + proc.stderr).lower()
    assert "master key" in output, output
    assert snapshot_dir(srv.data_dir) == before, "the data dir changed"


@pytest.mark.parametrize("bad", ["not base64 !!", base64.b64encode(b"short").decode()])
def test_malformed_master_key_refuses(stopped_server_with_data, bad):
    srv = stopped_server_with_data
    before = snapshot_dir(srv.data_dir)
    proc = _run_expecting_refusal(srv, env_extra={"LATCHKEY_MASTER_KEY": bad})
    assert proc.returncode != 0
    assert "master key" in (proc.stdout + proc.stderr).lower()
    assert snapshot_dir(srv.data_dir) == before


def test_right_master_key_from_env_and_file(stopped_server_with_data, start_server, tmp_path):
    srv = stopped_server_with_data
    key = (srv.data_dir / "master.key").read_text().strip()
    for args, env in (([], {"LATCHKEY_MASTER_KEY": key}), (["--master-key-file", str(srv.data_dir / "master.key")], None)):
        again = start_server(data_dir=srv.data_dir, port=srv.port, args=args, env=env)
        client = client_for(again)
        try:
            modal.Secret.from_name("keep-me", required_keys=["A"], client=client).hydrate()
        finally:
            client.close()
        assert again.stop() == 0


def test_explicit_master_key_on_first_start(start_server, tmp_path):
    key = random_master_key()
    srv = start_server(env={"LATCHKEY_MASTER_KEY": key})
    assert not (srv.data_dir / "master.key").exists(), "master.key written although a key was given"
    client = client_for(srv)
    try:
        modal.Secret.objects.create("with-given-key", {"A": "1"}, client=client)
    finally:
        client.close()
    assert srv.stop() == 0
    proc = _run_expecting_refusal(srv, env_extra={"LATCHKEY_MASTER_KEY": random_master_key()})
    assert proc.returncode != 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_graceful_shutdown(start_server, sig):
    srv = start_server()
    client = client_for(srv)
    try:
        modal.Secret.objects.create("before-signal", {"A": "1"}, client=client)
    finally:
        client.close()
    started = time.monotonic()
    assert srv.stop(sig) == 0
    assert time.monotonic() - started < 10
    status = None
    try:
        status, _ = http_get(srv.url + "/healthz", timeout=0.5)
    except OSError:
        pass
    assert status is None, "still serving after exit"
