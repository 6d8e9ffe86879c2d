"""Anonymous secrets: from_dict / from_dotenv / from_local_environ, EPHEMERAL and ANONYMOUS_OWNED_BY_APP."""

import time

import modal
import modal.exception
from modal_proto import api_pb2

from support import client_for, fake_app_id, hydrate_in_app, rpc, secret_keys


def _listed_ids(env="", client=None):
    return {s.object_id for s in modal.Secret.objects.list(environment_name=env, client=client)}


def test_from_dict_ephemeral(server):
    secret = modal.Secret.from_dict({"FOO": "bar", "EMPTY": "", "DROPPED": None})
    secret.hydrate()
    assert secret.object_id.startswith("st-")
    assert secret_keys(secret.object_id) == {"FOO", "EMPTY"}
    info = secret.info()
    assert info.name is None
    assert secret.object_id not in _listed_ids()


def test_from_dict_each_hydration_is_its_own_secret(server):
    a = modal.Secret.from_dict({"SAME": "1"}).hydrate()
    b = modal.Secret.from_dict({"SAME": "1"}).hydrate()
    assert a.object_id != b.object_id


def test_from_dotenv(server, tmp_path):
    (tmp_path / ".env").write_text("DB_USER=alice\nDB_PASS='s3cret value'\n# comment\nEMPTY=\n")
    secret = modal.Secret.from_dotenv(tmp_path)
    secret.hydrate()
    assert secret_keys(secret.object_id) == {"DB_USER", "DB_PASS", "EMPTY"}
    assert secret.object_id not in _listed_ids()


def test_from_dotenv_custom_filename(server, tmp_path):
    (tmp_path / ".env-dev").write_text("DEV_ONLY=1\n")
    secret = modal.Secret.from_dotenv(tmp_path, filename=".env-dev").hydrate()
    assert secret_keys(secret.object_id) == {"DEV_ONLY"}


def test_from_local_environ(server, monkeypatch):
    monkeypatch.setenv("LATCHKEY_E2E_ONE", "1")
    monkeypatch.setenv("LATCHKEY_E2E_TWO", "two")
    secret = modal.Secret.from_local_environ(["LATCHKEY_E2E_ONE", "LATCHKEY_E2E_TWO"]).hydrate()
    assert secret_keys(secret.object_id) == {"LATCHKEY_E2E_ONE", "LATCHKEY_E2E_TWO"}
    assert secret.object_id not in _listed_ids()


def test_owned_by_app_via_client_loader(server):
    """The path `app.run()` takes: the load context carries the app id."""
    app_id = fake_app_id()
    secret = hydrate_in_app(modal.Secret.from_dict({"APP_KEY": "v"}), app_id)
    assert secret.object_id.startswith("st-")
    assert secret_keys(secret.object_id) == {"APP_KEY"}
    assert secret.object_id not in _listed_ids()


def test_owned_by_app_via_stub(server, env_name):
    app_id = fake_app_id()
    resp = rpc(
        "SecretGetOrCreate",
        api_pb2.SecretGetOrCreateRequest(
            object_creation_type=api_pb2.OBJECT_CREATION_TYPE_ANONYMOUS_OWNED_BY_APP,
            env_dict={"X": "1", "Y": "2"},
            app_id=app_id,
            environment_name=env_name,
        ),
    )
    assert resp.secret_id.startswith("st-")
    assert set(resp.metadata.keys) == {"X", "Y"}
    assert resp.metadata.name == ""
    assert modal.Secret.objects.list(environment_name=env_name) == []
    assert secret_keys(resp.secret_id) == {"X", "Y"}


def test_ephemeral_via_stub_in_environment(server, env_name):
    resp = rpc(
        "SecretGetOrCreate",
        api_pb2.SecretGetOrCreateRequest(
            object_creation_type=api_pb2.OBJECT_CREATION_TYPE_EPHEMERAL,
            env_dict={"E": "1"},
            environment_name=env_name,
        ),
    )
    assert resp.secret_id.startswith("st-")
    assert set(resp.metadata.keys) == {"E"}
    assert resp.metadata.name == ""
    assert modal.Secret.objects.list(environment_name=env_name) == []


def test_anonymous_secrets_expire(start_server):
    srv = start_server(args=["--anonymous-ttl", "2", "--sweep-interval", "1"])
    client = client_for(srv)
    try:
        ephemeral = modal.Secret.from_dict({"EPH": "1"}).hydrate(client=client)
        owned = hydrate_in_app(modal.Secret.from_dict({"OWNED": "1"}), fake_app_id(), client=client)
        modal.Secret.objects.create("named-survivor", {"N": "1"}, client=client)
        named = modal.Secret.from_name("named-survivor", client=client).hydrate()
        assert secret_keys(ephemeral.object_id, client) == {"EPH"}
        assert secret_keys(owned.object_id, client) == {"OWNED"}
        assert _listed_ids(client=client) == {named.object_id}

        deadline = time.monotonic() + 15
        remaining = {ephemeral.object_id, owned.object_id}
        while remaining and time.monotonic() < deadline:
            time.sleep(0.5)
            for secret_id in list(remaining):
                try:
                    rpc("SecretGetInfo", api_pb2.SecretGetInfoRequest(secret_id=secret_id), client)
                except modal.exception.NotFoundError:
                    remaining.discard(secret_id)
        assert not remaining, "anonymous secrets still present 15s after a 2s TTL"
        # Named secrets have no TTL.
        assert secret_keys(named.object_id, client) == {"N"}
        modal.Secret.from_name("named-survivor", required_keys=["N"], client=client).hydrate()
    finally:
        client.close()
