"""Secret versions seen from the Modal client: every update() and overwrite makes a version,
and the client sees the current one after updates and rollbacks."""

import modal
import modal.exception
import pytest

from modal_proto import api_pb2

from support import api, rpc, unique


def remove_keys(secret, *keys: str) -> None:
    """What the wire allows and `update()` does not offer: an update without a value removes the key."""
    updates = [api_pb2.SecretUpdateRequest.Update(key=k) for k in keys]
    rpc("SecretUpdate", api_pb2.SecretUpdateRequest(secret_id=secret.object_id, updates=updates))


def history(server, name: str) -> list[dict]:
    status, body = api(server, "GET", f"/secrets/{name}/versions")
    assert status == 200, body
    return body["items"]


def rollback(server, name: str, to: int) -> dict:
    status, body = api(server, "POST", f"/secrets/{name}/rollback", {"to": to})
    assert status == 200, body
    return body


def test_every_update_and_overwrite_makes_a_version(server):
    name = unique("ver")
    modal.Secret.objects.create(name, {"A": "value-a-1", "B": "value-b-2"})
    secret = modal.Secret.from_name(name)
    secret.update({"A": "value-a-10", "C": "value-c-3"})
    remove_keys(secret, "B")
    modal.Secret.objects.create(name, {"Z": "z"}, allow_existing=True)  # kept: no version
    modal.Secret._create_deployed(name, {"Z": "z"}, overwrite=True)  # a version
    items = history(server, name)
    assert [(v["version"], v["action"]) for v in items] == [
        (4, "overwritten"),
        (3, "updated"),
        (2, "updated"),
        (1, "created"),
    ]
    assert items[2]["keys_added"] == ["C"] and items[2]["keys_changed"] == ["A"]
    assert items[1]["keys_removed"] == ["B"]
    assert all(v["created_by"] for v in items)
    assert "value-" not in str(items), "no value is in the history"


def test_the_client_sees_the_rolled_back_contents(server):
    name = unique("ver")
    modal.Secret.objects.create(name, {"OLD": "o", "SHARED": "1"})
    secret = modal.Secret.from_name(name)
    secret.update({"NEW": "n"})
    remove_keys(secret, "OLD")
    assert secret_keys(name) == {"NEW", "SHARED"}
    with pytest.raises(modal.exception.ConflictError) as exc:
        modal.Secret.from_name(name, required_keys=["OLD"]).hydrate()
    assert "OLD" in str(exc.value)

    rolled = rollback(server, name, 1)
    assert rolled["version"] == 4 and rolled["keys"] == ["OLD", "SHARED"]
    # from_name and required keys see version 4 = version 1's contents.
    modal.Secret.from_name(name, required_keys=["OLD", "SHARED"]).hydrate()
    with pytest.raises(modal.exception.ConflictError):
        modal.Secret.from_name(name, required_keys=["NEW"]).hydrate()
    assert secret_keys(name) == {"OLD", "SHARED"}
    # update() after a rollback builds on the rolled-back contents.
    modal.Secret.from_name(name).update({"AFTER": "a"})
    assert secret_keys(name) == {"OLD", "SHARED", "AFTER"}
    assert [v["action"] for v in history(server, name)] == [
        "updated",
        "rolled back to 1",
        "updated",
        "updated",
        "created",
    ]


def test_a_rollback_to_the_current_or_a_destroyed_version_is_refused(server):
    name = unique("ver")
    modal.Secret.objects.create(name, {"A": "1"})
    status, body = api(server, "POST", f"/secrets/{name}/rollback", {"to": 1})
    assert status == 412, body
    assert body["error"]["message"] == f"Secret '{name}' is at version 1 already; nothing was rolled back"
    status, body = api(server, "POST", f"/secrets/{name}/rollback", {"to": 7})
    assert status == 404, body
    assert body["error"]["message"] == (
        f"Secret '{name}' has no version 7 (it was destroyed or never existed); only version 1 is kept"
    )
    status, body = api(server, "POST", f"/secrets/{name}/rollback", {"to": 0})
    assert status == 400, body
    assert body["error"]["message"] == "Invalid version 0: versions are numbered from 1"
    status, body = api(server, "GET", f"/secrets/{name}?version=abc")
    assert status == 400, body
    assert "Invalid version 'abc'" in body["error"]["message"]
    assert len(history(server, name)) == 1, "nothing was written"


def secret_keys(name: str) -> set[str]:
    """The keys the server reports for a named secret, through the Modal client."""
    from support import secret_keys as keys_of

    return keys_of(modal.Secret.from_name(name).hydrate().object_id)
