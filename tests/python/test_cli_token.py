"""`modal token info`, `modal token set` and the RPCs behind them."""

import tomllib

import pytest
from google.protobuf.empty_pb2 import Empty
from modal_proto import api_pb2

from support import rpc


def test_token_info_rpc(server):
    resp = rpc("TokenInfoGet", api_pb2.TokenInfoGetRequest())
    assert resp.token_id == server.token_id
    assert resp.token_name == "admin"
    assert resp.workspace_name == "default"
    assert resp.workspace_id


def test_workspace_name_lookup_rpc(server):
    resp = rpc("WorkspaceNameLookup", Empty())
    assert resp.workspace_name == "default"
    # Modal's client takes `username` for the workspace's name (profiles are named after it).
    assert resp.username == "default"


def test_client_hello_rpc(server):
    resp = rpc("ClientHello", Empty())
    assert resp.warning == ""
    assert not resp.server_warnings


def test_token_info_cli(cli, server):
    out = cli("token", "info").flat()
    assert f"Token: {server.token_id}" in out
    assert "Name: admin" in out
    assert "Workspace: default" in out
    assert server.token_secret not in out


def test_token_set_writes_config(cli, server, home):
    config_path = home / ".modal.toml"
    result = cli(
        "token",
        "set",
        "--token-id",
        server.token_id,
        "--token-secret",
        server.token_secret,
        unset=("MODAL_TOKEN_ID", "MODAL_TOKEN_SECRET"),
    )
    assert "Token verified successfully" in result.flat()
    profile = rpc("WorkspaceNameLookup", Empty()).username
    assert profile == "default", "the profile is named after the workspace, not the token"
    assert f"in profile {profile}" in result.flat()
    config = tomllib.loads(config_path.read_text())
    assert config == {
        profile: {
            "token_id": server.token_id,
            "token_secret": server.token_secret,
            "server_url": server.url,
            "active": True,
        }
    }
    # The written profile alone is enough to talk to the server.
    out = cli("token", "info", unset=("MODAL_TOKEN_ID", "MODAL_TOKEN_SECRET", "MODAL_SERVER_URL")).flat()
    assert f"Token: {server.token_id}" in out
    assert "Name: admin" in out


@pytest.mark.parametrize("which", ["secret", "id"])
def test_token_set_with_wrong_credentials(cli, server, home, which):
    token_id = server.token_id if which == "secret" else "ak-" + "x" * 22
    token_secret = "as-" + "y" * 22 if which == "secret" else server.token_secret
    result = cli(
        "token",
        "set",
        "--token-id",
        token_id,
        "--token-secret",
        token_secret,
        unset=("MODAL_TOKEN_ID", "MODAL_TOKEN_SECRET"),
        check=False,
    )
    assert "Token verified successfully" not in result.output
    assert "token" in result.output.lower()
    assert not (home / ".modal.toml").exists()
