"""Environments: `modal environment list|create|update|delete` and the RPCs behind them."""

import json

import modal
import modal.exception
import pytest
from google.protobuf.empty_pb2 import Empty
from google.protobuf.wrappers_pb2 import StringValue
from modal_proto import api_pb2

from support import rpc, secret_keys, unique

IMAGE_BUILDER_VERSIONS = {"2023.12", "2024.04", "2024.10", "2025.06", "2026.10", "PREVIEW"}


def _env_rows(cli):
    return {row["name"]: row for row in json.loads(cli("environment", "list", "--json").stdout)}


def test_list_has_default_main(cli):
    rows = _env_rows(cli)
    assert "main" in rows
    assert rows["main"]["active"] == "True"
    assert set(rows["main"]) == {"name", "web_suffix", "image_builder_version", "active"}


def test_environment_list_rpc(server):
    items = {item.name: item for item in rpc("EnvironmentList", Empty()).items}
    main = items["main"]
    assert main.default is True
    assert main.environment_id.startswith("en-")
    assert main.created_at > 0
    assert sum(1 for item in items.values() if item.default) == 1


def test_create_list_delete(cli):
    name = unique("cenv")
    out = cli("environment", "create", name).flat()
    assert f"Environment created: {name}" in out
    rows = _env_rows(cli)
    assert name in rows
    assert rows[name]["active"] == "False"
    cli("environment", "delete", name, "--yes")
    assert name not in _env_rows(cli)


def test_create_duplicate(cli):
    name = unique("dupenv")
    cli("environment", "create", name)
    result = cli("environment", "create", name, check=False)
    assert name in result.flat()
    with pytest.raises(modal.exception.AlreadyExistsError):
        modal.Environment.objects.create(name)


def test_python_api(server):
    name = unique("pyenv")
    modal.Environment.objects.create(name)
    assert name in [e.name for e in modal.Environment.objects.list()]
    env = modal.Environment.from_name(name).hydrate()
    assert env.object_id.startswith("en-")
    assert env.name == name
    modal.Environment.objects.delete(name)
    assert name not in [e.name for e in modal.Environment.objects.list()]


def test_an_environment_is_named_by_its_id_too(server):
    """Modal's client resolves references by name or id: an `en-...` id is taken
    wherever an environment is named."""
    name = unique("idenv")
    modal.Environment.objects.create(name)
    env_id = modal.Environment.from_name(name).hydrate().object_id
    secret = unique("by-id")
    modal.Secret.objects.create(secret, {"V": "1"}, environment_name=env_id)
    assert [s.name for s in modal.Secret.objects.list(environment_name=name)] == [secret]
    found = modal.Secret.from_name(secret, environment_name=env_id, required_keys=["V"]).hydrate()
    assert found.object_id.startswith("st-")
    assert [s.name for s in modal.Secret.objects.list(environment_name=env_id)] == [secret]
    by_id = rpc("EnvironmentGetOrCreate", api_pb2.EnvironmentGetOrCreateRequest(deployment_name=env_id))
    assert (by_id.environment_id, by_id.metadata.name) == (env_id, name)
    modal.Secret.objects.delete(secret, environment_name=env_id)
    modal.Environment.objects.delete(name)


def test_options_latchkey_does_not_keep_are_refused_not_dropped(cli):
    """A restricted environment, a default role, an image builder version: refused,
    naming the option, and nothing is created or changed."""
    name = unique("restricted")
    result = cli("environment", "create", name, "--restricted", check=False)
    assert result.returncode != 0
    assert "restricted environments" in result.flat()
    assert name not in _env_rows(cli)
    before = _env_rows(cli)["main"]
    result = cli("environment", "update", "main", "--set-image-builder-version", "2024.10", check=False)
    assert result.returncode != 0
    assert "image builder version" in result.flat()
    renamed = unique("renamed")
    result = cli(
        "environment", "update", "main", "--set-name", renamed, "--set-image-builder-version", "2024.10", check=False
    )
    assert result.returncode != 0
    rows = _env_rows(cli)
    assert renamed not in rows and rows["main"] == before


def test_get_or_create(server):
    resp = rpc("EnvironmentGetOrCreate", api_pb2.EnvironmentGetOrCreateRequest(deployment_name="main"))
    assert resp.environment_id.startswith("en-")
    assert resp.metadata.name == "main"
    assert resp.metadata.settings.image_builder_version in IMAGE_BUILDER_VERSIONS
    # An empty name means the workspace default.
    default = rpc("EnvironmentGetOrCreate", api_pb2.EnvironmentGetOrCreateRequest(deployment_name=""))
    assert default.environment_id == resp.environment_id
    assert default.metadata.name == "main"
    ctx = modal.Environment.from_context().hydrate()
    assert ctx.object_id == resp.environment_id

    missing = unique("gocenv")
    with pytest.raises(modal.exception.NotFoundError) as exc:
        rpc("EnvironmentGetOrCreate", api_pb2.EnvironmentGetOrCreateRequest(deployment_name=missing))
    assert missing in str(exc.value)
    created = modal.Environment.from_name(missing, create_if_missing=True).hydrate()
    assert created.object_id.startswith("en-")
    assert missing in [e.name for e in modal.Environment.objects.list()]
    again = modal.Environment.from_name(missing).hydrate()
    assert again.object_id == created.object_id


def test_delete_without_yes_looks_up_then_aborts(cli):
    name = unique("askenv")
    cli("environment", "create", name)
    result = cli("environment", "delete", name, check=False)
    assert "--yes" in result.flat()
    assert name in _env_rows(cli)
    missing = unique("nosuchenv")
    result = cli("environment", "delete", missing, check=False)
    assert missing in result.flat()


def test_delete_unknown(server):
    name = unique("nosuchenv")
    with pytest.raises(modal.exception.NotFoundError) as exc:
        modal.Environment.objects.delete(name)
    assert name in str(exc.value)


def test_delete_default_environment_is_refused(cli):
    result = cli("environment", "delete", "main", "--yes", check=False)
    assert "main" in result.flat()
    assert "main" in _env_rows(cli)


def test_delete_removes_its_secrets(server):
    env = unique("dropenv")
    modal.Environment.objects.create(env)
    name = unique("insideenv")
    modal.Secret.objects.create(name, {"A": "1"}, environment_name=env)
    secret_id = modal.Secret.from_name(name, environment_name=env).hydrate().object_id
    modal.Environment.objects.delete(env)
    with pytest.raises(modal.exception.NotFoundError):
        rpc("SecretGetInfo", api_pb2.SecretGetInfoRequest(secret_id=secret_id))
    modal.Environment.objects.create(env)
    assert modal.Secret.objects.list(environment_name=env) == []
    with pytest.raises(modal.exception.NotFoundError):
        modal.Secret.from_name(name, environment_name=env).hydrate()


def test_update_rename_keeps_secrets(cli):
    old, new = unique("oldenv"), unique("newenv")
    cli("environment", "create", old)
    name = unique("follows")
    modal.Secret.objects.create(name, {"A": "1"}, environment_name=old)
    cli("environment", "update", old, "--set-name", new)
    rows = _env_rows(cli)
    assert new in rows and old not in rows
    secret = modal.Secret.from_name(name, environment_name=new).hydrate()
    assert secret_keys(secret.object_id) == {"A"}
    assert secret.info().environment_name == new
    with pytest.raises(modal.exception.NotFoundError):
        modal.Secret.from_name(name, environment_name=old).hydrate()


def test_update_web_suffix(cli):
    name = unique("sfxenv")
    cli("environment", "create", name)
    cli("environment", "update", name, "--set-web-suffix", "sfx")
    assert _env_rows(cli)[name]["web_suffix"] == "sfx"
    cli("environment", "update", name, "--set-web-suffix", "")
    assert _env_rows(cli)[name]["web_suffix"] in ("", None)


def test_update_image_builder_version(cli):
    name = unique("ibvenv")
    cli("environment", "create", name)
    cli("environment", "update", name, "--set-image-builder-version", "2025.06")
    assert _env_rows(cli)[name]["image_builder_version"] == "2025.06"
    resp = rpc("EnvironmentGetOrCreate", api_pb2.EnvironmentGetOrCreateRequest(deployment_name=name))
    assert resp.metadata.settings.image_builder_version == "2025.06"


def test_update_returns_list_item(server):
    name = unique("retenv")
    modal.Environment.objects.create(name)
    new = unique("retenv2")
    item = rpc(
        "EnvironmentUpdate",
        api_pb2.EnvironmentUpdateRequest(current_name=name, name=StringValue(value=new)),
    )
    assert item.name == new
    assert item.environment_id.startswith("en-")


def test_update_unknown(cli):
    name = unique("nosuchenv")
    result = cli("environment", "update", name, "--set-name", unique("x"), check=False)
    assert name in result.flat()
    with pytest.raises(modal.exception.NotFoundError):
        rpc(
            "EnvironmentUpdate",
            api_pb2.EnvironmentUpdateRequest(current_name=name, web_suffix=StringValue(value="x")),
        )


def test_update_rename_to_existing(server):
    a, b = unique("enva"), unique("envb")
    modal.Environment.objects.create(a)
    modal.Environment.objects.create(b)
    with pytest.raises(modal.exception.AlreadyExistsError) as exc:
        rpc("EnvironmentUpdate", api_pb2.EnvironmentUpdateRequest(current_name=a, name=StringValue(value=b)))
    assert b in str(exc.value)
    names = [e.name for e in modal.Environment.objects.list()]
    assert a in names and b in names
