"""`modal secret create|list|delete` against latchkey."""

import json

import modal
import modal.exception
import pytest

from support import secret_keys, unique


def _keys(name, env=None):
    return secret_keys(modal.Secret.from_name(name, environment_name=env).hydrate().object_id)


def test_create_with_key_values(cli):
    name = unique("cli")
    result = cli("secret", "create", name, "USER=alice", "PASSWORD=p=ss word", "EMPTY=")
    assert f"Created a new secret '{name}' with the keys 'USER', 'PASSWORD', 'EMPTY'" in result.flat()
    assert _keys(name) == {"USER", "PASSWORD", "EMPTY"}


def test_create_existing_fails_then_force_overwrites(cli):
    name = unique("cliforce")
    cli("secret", "create", name, "OLD=1")
    result = cli("secret", "create", name, "NEW=2", check=False)
    assert name in result.flat()
    assert "exist" in result.flat().lower()
    assert _keys(name) == {"OLD"}
    cli("secret", "create", name, "NEW=2", "--force")
    assert _keys(name) == {"NEW"}


def test_create_from_dotenv(cli, home):
    name = unique("clidotenv")
    env_file = home / "vars.env"
    env_file.write_text("DB_HOST=localhost\nDB_PASS=\"quoted value\"\nexport EXPORTED=1\n")
    cli("secret", "create", name, "EXTRA=x", "--from-dotenv", str(env_file))
    assert _keys(name) == {"DB_HOST", "DB_PASS", "EXPORTED", "EXTRA"}


def test_create_from_json(cli, home):
    name = unique("clijson")
    json_file = home / "vars.json"
    json_file.write_text(json.dumps({"API_KEY": "abc", "MULTI": "line1\nline2"}))
    cli("secret", "create", name, "--from-json", str(json_file))
    assert _keys(name) == {"API_KEY", "MULTI"}


def test_create_in_environment(cli, env_name):
    name = unique("clienv")
    cli("secret", "create", name, "A=1", "--env", env_name)
    assert _keys(name, env=env_name) == {"A"}
    with pytest.raises(modal.exception.NotFoundError):
        modal.Secret.from_name(name).hydrate()


def test_create_in_unknown_environment(cli):
    env = unique("noenv")
    result = cli("secret", "create", unique("x"), "A=1", "--env", env, check=False)
    assert env in result.flat()


def test_create_invalid_key_is_rejected_by_server(cli):
    name = unique("clibadkey")
    result = cli("secret", "create", name, "1BAD=x", check=False)
    assert "1BAD" in result.flat()
    with pytest.raises(modal.exception.NotFoundError):
        modal.Secret.from_name(name).hydrate()


def test_list_json(cli, env_name):
    names = [unique("clilist") for _ in range(3)]
    for n in names:
        cli("secret", "create", n, "A=1", "--env", env_name)
    rows = json.loads(cli("secret", "list", "--json", "--env", env_name).stdout)
    assert [r["name"] for r in rows] == list(reversed(names))
    for row in rows:
        assert set(row) == {"name", "created_at", "created_by", "last_used_at"}
        assert row["created_by"] == "admin"
        assert row["last_used_at"] == "-"
        assert row["created_at"]


def test_list_table(cli, env_name):
    name = unique("clitable")
    cli("secret", "create", name, "A=1", "--env", env_name)
    out = cli("secret", "list", "--env", env_name).flat()
    assert f"Secrets in environment '{env_name}'" in out
    assert name in out
    assert "admin" in out


def test_list_default_environment(cli):
    name = unique("climain")
    cli("secret", "create", name, "A=1")
    rows = json.loads(cli("secret", "list", "--json").stdout)
    assert name in [r["name"] for r in rows]


def test_list_empty_environment(cli, env_name):
    assert json.loads(cli("secret", "list", "--json", "--env", env_name).stdout) == []


def test_delete(cli):
    name = unique("clidel")
    cli("secret", "create", name, "A=1")
    cli("secret", "delete", name, "--yes")
    with pytest.raises(modal.exception.NotFoundError):
        modal.Secret.from_name(name).hydrate()
    result = cli("secret", "delete", name, "--yes", check=False)
    assert f"Secret '{name}' not found" in result.flat()
    cli("secret", "delete", name, "--yes", "--allow-missing")


def test_delete_in_environment(cli, env_name):
    name = unique("clidelenv")
    cli("secret", "create", name, "A=1", "--env", env_name)
    cli("secret", "delete", name, "--yes", "--env", env_name)
    with pytest.raises(modal.exception.NotFoundError):
        modal.Secret.from_name(name, environment_name=env_name).hydrate()
