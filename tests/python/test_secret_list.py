"""modal.Secret.objects.list: order, max_objects, created_before, environments, paging."""

import asyncio
import json
import time
from datetime import datetime

import modal
import modal.exception
import pytest
from modal_proto import api_pb2

from support import rpc, unique


def _names(secrets):
    return [s.name for s in secrets]


def _create_in_order(env, names, gap=0.0):
    for name in names:
        modal.Secret.objects.create(name, {"K": name}, environment_name=env)
        if gap:
            time.sleep(gap)


def test_newest_first(server, env_name):
    names = [unique(f"order{i}") for i in range(4)]
    _create_in_order(env_name, names)
    listed = modal.Secret.objects.list(environment_name=env_name)
    assert _names(listed) == list(reversed(names))
    for s in listed:
        assert s.object_id.startswith("st-")
        info = s.info()
        assert info.created_by == "admin"
        assert info.environment_name == env_name
    created = [s.info().created_at for s in listed]
    assert created == sorted(created, reverse=True)
    assert len(set(created)) == len(created), "creation times must be unique"


def test_max_objects(server, env_name):
    names = [unique(f"max{i}") for i in range(5)]
    _create_in_order(env_name, names)
    assert _names(modal.Secret.objects.list(max_objects=2, environment_name=env_name)) == [names[4], names[3]]
    assert _names(modal.Secret.objects.list(max_objects=5, environment_name=env_name)) == list(reversed(names))
    assert _names(modal.Secret.objects.list(max_objects=50, environment_name=env_name)) == list(reversed(names))
    assert modal.Secret.objects.list(max_objects=0, environment_name=env_name) == []


def test_created_before(server, env_name):
    old = [unique(f"old{i}") for i in range(2)]
    new = [unique(f"new{i}") for i in range(2)]
    _create_in_order(env_name, old)
    time.sleep(0.3)
    cutoff = datetime.now()  # naive: the client reads it as local time
    time.sleep(0.3)
    _create_in_order(env_name, new)

    as_datetime = modal.Secret.objects.list(created_before=cutoff, environment_name=env_name)
    assert _names(as_datetime) == list(reversed(old))
    as_aware = modal.Secret.objects.list(created_before=cutoff.astimezone(), environment_name=env_name)
    assert _names(as_aware) == list(reversed(old))
    as_string = modal.Secret.objects.list(created_before=cutoff.isoformat(), environment_name=env_name)
    assert _names(as_string) == list(reversed(old))
    limited = modal.Secret.objects.list(created_before=cutoff, max_objects=1, environment_name=env_name)
    assert _names(limited) == [old[1]]
    assert modal.Secret.objects.list(created_before="2001-01-01", environment_name=env_name) == []


def test_created_before_is_exclusive(server, env_name):
    names = [unique(f"excl{i}") for i in range(3)]
    _create_in_order(env_name, names)
    listed = modal.Secret.objects.list(environment_name=env_name)
    middle = listed[1]
    ts = middle._get_metadata().creation_info.created_at
    resp = rpc(
        "SecretList",
        api_pb2.SecretListRequest(
            environment_name=env_name, pagination=api_pb2.ListPagination(max_objects=10, created_before=ts)
        ),
    )
    assert [item.label for item in resp.items] == [names[0]]


def test_list_item_fields(server, env_name):
    name = unique("fields")
    modal.Secret.objects.create(name, {"A": "1", "B": "2"}, environment_name=env_name)
    resp = rpc(
        "SecretList",
        api_pb2.SecretListRequest(
            environment_name=env_name, pagination=api_pb2.ListPagination(max_objects=10, created_before=time.time() + 5)
        ),
    )
    assert len(resp.items) == 1
    item = resp.items[0]
    assert item.label == name
    assert item.secret_id.startswith("st-")
    assert item.environment_name == env_name
    assert item.last_used_at == 0
    assert abs(item.created_at - time.time()) < 60
    md = item.metadata
    assert md.name == name
    assert set(md.keys) == {"A", "B"}
    assert md.environment_name == env_name
    assert md.creation_info.created_by == "admin"
    assert md.creation_info.created_at == item.created_at
    assert rpc("SecretGetInfo", api_pb2.SecretGetInfoRequest(secret_id=item.secret_id)).metadata.name == name


def test_list_without_pagination_lists_everything(server, env_name):
    names = [unique(f"nopage{i}") for i in range(3)]
    _create_in_order(env_name, names)
    resp = rpc("SecretList", api_pb2.SecretListRequest(environment_name=env_name))
    assert [item.label for item in resp.items] == list(reversed(names))


def test_list_is_per_environment(server, env_name):
    in_env = unique("inenv")
    in_main = unique("inmain")
    modal.Secret.objects.create(in_env, {"A": "1"}, environment_name=env_name)
    modal.Secret.objects.create(in_main, {"A": "1"})
    assert _names(modal.Secret.objects.list(environment_name=env_name)) == [in_env]
    main_names = _names(modal.Secret.objects.list())
    assert in_main in main_names
    assert in_env not in main_names
    assert in_main in _names(modal.Secret.objects.list(environment_name="main"))


def test_list_unknown_environment(server):
    env = unique("noenv")
    with pytest.raises(modal.exception.NotFoundError) as exc:
        modal.Secret.objects.list(environment_name=env)
    assert env in str(exc.value)


def test_list_excludes_deleted(server, env_name):
    keep, gone = unique("keep"), unique("gone")
    _create_in_order(env_name, [keep, gone])
    modal.Secret.objects.delete(gone, environment_name=env_name)
    assert _names(modal.Secret.objects.list(environment_name=env_name)) == [keep]


def test_paging_260_secrets(server, env_name, cli):
    total = 260
    names = [f"page-{i:04d}-{unique('p')}" for i in range(total)]

    async def create_all():
        sem = asyncio.Semaphore(32)

        async def one(name):
            async with sem:
                await modal.Secret.objects.create.aio(name, {"INDEX": name}, environment_name=env_name)

        await asyncio.gather(*(one(n) for n in names))

    asyncio.run(create_all())

    listed = modal.Secret.objects.list(environment_name=env_name)
    listed_names = _names(listed)
    assert len(listed_names) == total, "paging lost or repeated items"
    assert len(set(listed_names)) == total
    assert set(listed_names) == set(names)
    created = [s._get_metadata().creation_info.created_at for s in listed]
    assert all(a > b for a, b in zip(created, created[1:])), "not strictly newest first"

    # The first N of a limited listing are the N newest.
    assert _names(modal.Secret.objects.list(max_objects=150, environment_name=env_name)) == listed_names[:150]

    # Manual paging with small pages by created_before: no loss, no repetition.
    seen = []
    before = time.time() + 5
    while True:
        resp = rpc(
            "SecretList",
            api_pb2.SecretListRequest(
                environment_name=env_name, pagination=api_pb2.ListPagination(max_objects=7, created_before=before)
            ),
        )
        assert len(resp.items) <= 7
        seen.extend(item.label for item in resp.items)
        if len(resp.items) < 7:
            break
        before = resp.items[-1].metadata.creation_info.created_at
    assert seen == listed_names

    # The CLI pages too (100 at a time, from "now").
    result = cli("secret", "list", "--json", "--env", env_name)
    rows = json.loads(result.stdout)
    assert [r["name"] for r in rows] == listed_names
