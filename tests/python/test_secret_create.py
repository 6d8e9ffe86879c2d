"""modal.Secret.objects.create and the named SecretGetOrCreate modes."""

import time

import modal
import modal.exception
import pytest
from modal_proto import api_pb2

from support import rpc, secret_keys, unique


def test_create_then_lookup(server):
    name = unique("create")
    before = time.time()
    modal.Secret.objects.create(name, {"USER": "alice", "PASSWORD": "hunter2"})
    secret = modal.Secret.from_name(name)
    secret.hydrate()
    assert secret.object_id.startswith("st-")
    assert secret.name == name
    assert secret_keys(secret.object_id) == {"USER", "PASSWORD"}
    info = secret.info()
    assert info.name == name
    assert info.created_by == "admin"
    assert info.environment_name == "main"
    assert before - 2 <= info.created_at.timestamp() <= time.time() + 2


def test_create_existing_fails_and_keeps_contents(server):
    name = unique("dup")
    modal.Secret.objects.create(name, {"A": "1"})
    with pytest.raises(modal.exception.AlreadyExistsError) as exc:
        modal.Secret.objects.create(name, {"B": "2"})
    assert name in str(exc.value)
    secret = modal.Secret.from_name(name)
    secret.hydrate()
    assert secret_keys(secret.object_id) == {"A"}


def test_create_allow_existing_is_a_noop(server):
    name = unique("allow")
    modal.Secret.objects.create(name, {"A": "1"})
    first = modal.Secret.from_name(name).hydrate().object_id
    modal.Secret.objects.create(name, {"B": "2"}, allow_existing=True)
    second = modal.Secret.from_name(name).hydrate().object_id
    assert first == second
    assert secret_keys(first) == {"A"}


def test_create_if_missing_returns_the_existing_id(server):
    name = unique("ifmissing")
    created = rpc(
        "SecretGetOrCreate",
        api_pb2.SecretGetOrCreateRequest(
            deployment_name=name,
            object_creation_type=api_pb2.OBJECT_CREATION_TYPE_CREATE_IF_MISSING,
            env_dict={"A": "1"},
        ),
    )
    assert created.secret_id.startswith("st-")
    assert created.metadata.name == name
    assert set(created.metadata.keys) == {"A"}
    again = rpc(
        "SecretGetOrCreate",
        api_pb2.SecretGetOrCreateRequest(
            deployment_name=name,
            object_creation_type=api_pb2.OBJECT_CREATION_TYPE_CREATE_IF_MISSING,
            env_dict={"B": "2"},
        ),
    )
    assert again.secret_id == created.secret_id
    assert set(again.metadata.keys) == {"A"}


def test_create_fail_if_exists_response_metadata(server):
    name = unique("meta")
    resp = rpc(
        "SecretGetOrCreate",
        api_pb2.SecretGetOrCreateRequest(
            deployment_name=name,
            object_creation_type=api_pb2.OBJECT_CREATION_TYPE_CREATE_FAIL_IF_EXISTS,
            env_dict={"K1": "v", "K2": "w"},
        ),
    )
    md = resp.metadata
    assert resp.secret_id.startswith("st-")
    assert md.name == name
    assert set(md.keys) == {"K1", "K2"}
    assert md.environment_name == "main"
    assert md.creation_info.created_by == "admin"
    assert abs(md.creation_info.created_at - time.time()) < 60
    assert md.last_used_at == 0


def test_overwrite_if_exists_replaces_contents(server):
    name = unique("overwrite")
    modal.Secret.objects.create(name, {"OLD": "1", "KEEP": "x"})
    secret_id = modal.Secret._create_deployed(name, {"NEW": "2"}, overwrite=True)
    assert secret_id.startswith("st-")
    current = modal.Secret.from_name(name).hydrate()
    assert current.object_id == secret_id
    assert secret_keys(secret_id) == {"NEW"}


def test_overwrite_if_exists_creates_when_missing(server):
    name = unique("overwrite-new")
    secret_id = modal.Secret._create_deployed(name, {"NEW": "2"}, overwrite=True)
    assert modal.Secret.from_name(name).hydrate().object_id == secret_id


def test_create_in_environment(server, env_name):
    name = unique("envsecret")
    modal.Secret.objects.create(name, {"A": "1"}, environment_name=env_name)
    with pytest.raises(modal.exception.NotFoundError):
        modal.Secret.from_name(name).hydrate()
    secret = modal.Secret.from_name(name, environment_name=env_name).hydrate()
    assert secret.info().environment_name == env_name
    # The same name is free in another environment.
    modal.Secret.objects.create(name, {"B": "2"})
    in_main = modal.Secret.from_name(name).hydrate()
    assert in_main.object_id != secret.object_id
    assert secret_keys(in_main.object_id) == {"B"}
    assert secret_keys(secret.object_id) == {"A"}


def test_create_in_unknown_environment(server):
    env = unique("noenv")
    name = unique("orphan")
    with pytest.raises(modal.exception.NotFoundError) as exc:
        modal.Secret.objects.create(name, {"A": "1"}, environment_name=env)
    assert env in str(exc.value)


def test_empty_secret_is_allowed(server):
    name = unique("empty")
    modal.Secret.objects.create(name, {})
    secret = modal.Secret.from_name(name).hydrate()
    assert secret_keys(secret.object_id) == set()


def test_values_may_be_empty_unicode_and_multiline(server):
    name = unique("values")
    modal.Secret.objects.create(name, {"EMPTY": "", "UNI": "héllo ✓ 🚀", "PEM": "-----BEGIN-----\nabc\n-----END-----\n"})
    secret = modal.Secret.from_name(name, required_keys=["EMPTY", "UNI", "PEM"]).hydrate()
    assert secret_keys(secret.object_id) == {"EMPTY", "UNI", "PEM"}
