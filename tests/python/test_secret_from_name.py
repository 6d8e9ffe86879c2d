"""Secret.from_name hydration, required_keys, info() and update()."""

import asyncio
import time
from datetime import datetime

import modal
import modal.exception
import pytest
from modal_proto import api_pb2

from support import fake_secret_id, rpc, secret_keys, unique

Update = api_pb2.SecretUpdateRequest.Update


def _make(keys=("A", "B"), env=None):
    name = unique("fn")
    modal.Secret.objects.create(name, {k: f"value-of-{k}" for k in keys}, environment_name=env)
    return name


def test_hydrate(server):
    name = _make()
    secret = modal.Secret.from_name(name)
    assert not secret._is_hydrated
    secret.hydrate()
    assert secret._is_hydrated
    assert secret.object_id.startswith("st-")
    assert secret.name == name
    # Looking the same name up again gives the same id.
    assert modal.Secret.from_name(name).hydrate().object_id == secret.object_id


def test_required_keys_present(server):
    name = _make(("A", "B", "C"))
    modal.Secret.from_name(name, required_keys=["A", "C"]).hydrate()
    modal.Secret.from_name(name, required_keys=[]).hydrate()


def test_required_keys_missing(server):
    name = _make(("PRESENT",))
    with pytest.raises(modal.exception.ConflictError) as exc:
        modal.Secret.from_name(name, required_keys=["PRESENT", "A", "B"]).hydrate()
    # FAILED_PRECONDITION maps to ConflictError (an InvalidError) in modal 1.6.4.
    assert isinstance(exc.value, modal.exception.InvalidError)
    assert str(exc.value) == "Secret is missing key(s): A, B"


def test_required_key_missing_single(server):
    name = _make(("X",))
    with pytest.raises(modal.exception.ConflictError) as exc:
        modal.Secret.from_name(name, required_keys=["Y"]).hydrate()
    assert str(exc.value) == "Secret is missing key(s): Y"


def test_unknown_name(server):
    name = unique("nosuch")
    with pytest.raises(modal.exception.NotFoundError) as exc:
        modal.Secret.from_name(name).hydrate()
    assert str(exc.value) == f"Secret '{name}' not found"
    # required_keys does not change which error comes first.
    with pytest.raises(modal.exception.NotFoundError):
        modal.Secret.from_name(name, required_keys=["A"]).hydrate()


def test_from_name_in_environment(server, env_name):
    name = _make(("E",), env=env_name)
    secret = modal.Secret.from_name(name, environment_name=env_name, required_keys=["E"]).hydrate()
    assert secret.info().environment_name == env_name
    with pytest.raises(modal.exception.NotFoundError) as exc:
        modal.Secret.from_name(name, environment_name="main").hydrate()
    assert name in str(exc.value)


def test_from_name_unknown_environment(server):
    env = unique("noenv")
    with pytest.raises(modal.exception.NotFoundError) as exc:
        modal.Secret.from_name(unique("x"), environment_name=env).hydrate()
    assert env in str(exc.value)


def test_lookup_by_id(server):
    name = _make(("A",))
    secret_id = modal.Secret.from_name(name).hydrate().object_id
    by_id = modal.Secret._from_id(secret_id).hydrate()
    assert by_id.info().name == name


def test_info(server):
    before = time.time()
    name = _make()
    after = time.time()
    secret = modal.Secret.from_name(name)
    info = secret.info()  # hydrates lazily
    assert info.name == name
    assert info.created_by == "admin"
    assert info.environment_name == "main"
    assert info.last_used is None
    assert isinstance(info.created_at, datetime)
    assert info.created_at.tzinfo is not None
    assert before - 2 <= info.created_at.timestamp() <= after + 2
    refreshed = secret.info(refresh=True)
    assert refreshed.name == name
    assert refreshed.created_at == info.created_at


def test_secret_get_info_unknown_id(server):
    secret_id = fake_secret_id()
    with pytest.raises(modal.exception.NotFoundError) as exc:
        rpc("SecretGetInfo", api_pb2.SecretGetInfoRequest(secret_id=secret_id))
    assert secret_id in str(exc.value)


def test_update_merges(server):
    name = _make(("A", "B"))
    secret = modal.Secret.from_name(name)
    secret.update({"B": "new-b", "C": "c"})
    assert secret_keys(secret.object_id) == {"A", "B", "C"}
    # The server's view, through a fresh lookup.
    modal.Secret.from_name(name, required_keys=["A", "B", "C"]).hydrate()
    fresh = modal.Secret.from_name(name).hydrate()
    assert fresh.object_id == secret.object_id
    # info is unchanged by an update.
    assert fresh.info().created_by == "admin"


def test_update_without_value_removes_key(server):
    name = _make(("A", "B", "C"))
    secret_id = modal.Secret.from_name(name).hydrate().object_id
    rpc(
        "SecretUpdate",
        api_pb2.SecretUpdateRequest(
            secret_id=secret_id,
            updates=[Update(key="A"), Update(key="D", value=""), Update(key="NEVER_EXISTED")],
        ),
    )
    # An empty value is a value: D is present; a key without a value is removed.
    assert secret_keys(secret_id) == {"B", "C", "D"}
    with pytest.raises(modal.exception.ConflictError) as exc:
        modal.Secret.from_name(name, required_keys=["A"]).hydrate()
    assert str(exc.value) == "Secret is missing key(s): A"


def test_update_empty_is_a_noop(server):
    name = _make(("A",))
    secret = modal.Secret.from_name(name)
    secret.update({})
    assert secret_keys(secret.object_id) == {"A"}


def test_concurrent_updates_of_different_keys_all_survive(server):
    name = _make(("BASE",))
    secret_id = modal.Secret.from_name(name).hydrate().object_id
    keys = [f"K{i}" for i in range(24)]

    async def go():
        async def one(k):
            s = modal.Secret.from_name(name)
            await s.update.aio({k: f"v-{k}"})

        await asyncio.gather(*(one(k) for k in keys))

    asyncio.run(go())
    assert secret_keys(secret_id) == {"BASE", *keys}


def test_update_unknown_id(server):
    secret_id = fake_secret_id()
    with pytest.raises(modal.exception.NotFoundError) as exc:
        rpc(
            "SecretUpdate",
            api_pb2.SecretUpdateRequest(secret_id=secret_id, updates=[Update(key="A", value="1")]),
        )
    assert secret_id in str(exc.value)


def test_update_after_delete(server):
    name = _make(("A",))
    secret = modal.Secret.from_name(name).hydrate()
    modal.Secret.objects.delete(name)
    with pytest.raises(modal.exception.NotFoundError):
        secret.update({"B": "2"})
