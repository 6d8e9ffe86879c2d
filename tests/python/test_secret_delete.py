"""modal.Secret.objects.delete and SecretDelete."""

import asyncio

import modal
import modal.exception
import pytest
from modal_proto import api_pb2

from support import fake_secret_id, rpc, unique


def test_delete(server):
    name = unique("del")
    modal.Secret.objects.create(name, {"A": "1"})
    secret_id = modal.Secret.from_name(name).hydrate().object_id
    modal.Secret.objects.delete(name)
    with pytest.raises(modal.exception.NotFoundError) as exc:
        modal.Secret.from_name(name).hydrate()
    assert str(exc.value) == f"Secret '{name}' not found"
    with pytest.raises(modal.exception.NotFoundError):
        rpc("SecretGetInfo", api_pb2.SecretGetInfoRequest(secret_id=secret_id))
    assert name not in [s.name for s in modal.Secret.objects.list()]


def test_delete_is_awaitable(server):
    name = unique("adel")
    modal.Secret.objects.create(name, {"A": "1"})

    async def go():
        await modal.Secret.objects.delete.aio(name)

    asyncio.run(go())
    with pytest.raises(modal.exception.NotFoundError):
        modal.Secret.from_name(name).hydrate()


def test_delete_missing(server):
    name = unique("missing")
    with pytest.raises(modal.exception.NotFoundError) as exc:
        modal.Secret.objects.delete(name)
    assert str(exc.value) == f"Secret '{name}' not found"
    modal.Secret.objects.delete(name, allow_missing=True)


def test_delete_in_environment(server, env_name):
    name = unique("envdel")
    modal.Secret.objects.create(name, {"A": "1"}, environment_name=env_name)
    modal.Secret.objects.create(name, {"B": "1"})
    with pytest.raises(modal.exception.NotFoundError):
        modal.Secret.objects.delete(unique("other"), environment_name=env_name)
    modal.Secret.objects.delete(name, environment_name=env_name)
    with pytest.raises(modal.exception.NotFoundError):
        modal.Secret.from_name(name, environment_name=env_name).hydrate()
    # The namesake in main is untouched.
    modal.Secret.from_name(name, required_keys=["B"]).hydrate()
    modal.Secret.objects.delete(name, environment_name=env_name, allow_missing=True)


def test_delete_then_recreate_gets_a_new_id(server):
    name = unique("recreate")
    modal.Secret.objects.create(name, {"A": "1"})
    first = modal.Secret.from_name(name).hydrate().object_id
    modal.Secret.objects.delete(name)
    modal.Secret.objects.create(name, {"B": "1"})
    second = modal.Secret.from_name(name, required_keys=["B"]).hydrate()
    assert second.object_id != first
    with pytest.raises(modal.exception.ConflictError):
        modal.Secret.from_name(name, required_keys=["A"]).hydrate()


def test_delete_by_unknown_id(server):
    secret_id = fake_secret_id()
    with pytest.raises(modal.exception.NotFoundError) as exc:
        rpc("SecretDelete", api_pb2.SecretDeleteRequest(secret_id=secret_id))
    assert secret_id in str(exc.value)


def test_delete_twice_by_id(server):
    name = unique("twice")
    modal.Secret.objects.create(name, {"A": "1"})
    secret_id = modal.Secret.from_name(name).hydrate().object_id
    rpc("SecretDelete", api_pb2.SecretDeleteRequest(secret_id=secret_id))
    with pytest.raises(modal.exception.NotFoundError):
        rpc("SecretDelete", api_pb2.SecretDeleteRequest(secret_id=secret_id))
    with pytest.raises(modal.exception.NotFoundError):
        rpc(
            "SecretUpdate",
            api_pb2.SecretUpdateRequest(secret_id=secret_id, updates=[api_pb2.SecretUpdateRequest.Update(key="A", value="2")]),
        )
