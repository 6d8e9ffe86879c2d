"""Authentication on every RPC, and UNIMPLEMENTED for RPCs latchkey does not serve."""

import modal
import modal.exception
import pytest
from google.protobuf.empty_pb2 import Empty
from google.protobuf.wrappers_pb2 import StringValue
from grpclib import GRPCError, Status
from modal_proto import api_pb2

from support import fake_secret_id, open_client, raw_call, rpc, unique

SERVED = {
    "ClientHello": lambda: Empty(),
    "SecretGetOrCreate": lambda: api_pb2.SecretGetOrCreateRequest(
        deployment_name=unique("noauth"),
        object_creation_type=api_pb2.OBJECT_CREATION_TYPE_CREATE_FAIL_IF_EXISTS,
        env_dict={"A": "1"},
    ),
    "SecretList": lambda: api_pb2.SecretListRequest(),
    "SecretDelete": lambda: api_pb2.SecretDeleteRequest(secret_id=fake_secret_id()),
    "SecretUpdate": lambda: api_pb2.SecretUpdateRequest(secret_id=fake_secret_id()),
    "SecretGetInfo": lambda: api_pb2.SecretGetInfoRequest(secret_id=fake_secret_id()),
    "EnvironmentList": lambda: Empty(),
    "EnvironmentCreate": lambda: api_pb2.EnvironmentCreateRequest(name=unique("noauth")),
    "EnvironmentDelete": lambda: api_pb2.EnvironmentDeleteRequest(name="main"),
    "EnvironmentUpdate": lambda: api_pb2.EnvironmentUpdateRequest(
        current_name="main", web_suffix=StringValue(value="x")
    ),
    "EnvironmentGetOrCreate": lambda: api_pb2.EnvironmentGetOrCreateRequest(deployment_name="main"),
    "WorkspaceNameLookup": lambda: Empty(),
    "TokenInfoGet": lambda: api_pb2.TokenInfoGetRequest(),
}


def _how_to_get_a_token(message: str) -> bool:
    lowered = message.lower()
    return "token" in lowered and ("admin-token" in lowered or "modal_token_id" in lowered)


@pytest.fixture(scope="module")
def anonymous_client(server):
    client = open_client(server.url, None, None)
    yield client
    client.close()


@pytest.fixture(scope="module")
def wrong_secret_client(server):
    client = open_client(server.url, server.token_id, "as-" + "W" * 22)
    yield client
    client.close()


@pytest.fixture(scope="module")
def unknown_id_client(server):
    client = open_client(server.url, "ak-" + "U" * 22, server.token_secret)
    yield client
    client.close()


@pytest.mark.parametrize("method", sorted(SERVED))
def test_missing_token(anonymous_client, method):
    with pytest.raises(modal.exception.AuthError) as exc:
        rpc(method, SERVED[method](), anonymous_client)
    assert exc.value._grpc_status == Status.UNAUTHENTICATED
    assert _how_to_get_a_token(str(exc.value)), f"message does not say how to get a token: {exc.value}"


@pytest.mark.parametrize("method", sorted(SERVED))
def test_wrong_secret(wrong_secret_client, method):
    with pytest.raises(modal.exception.AuthError) as exc:
        rpc(method, SERVED[method](), wrong_secret_client)
    assert _how_to_get_a_token(str(exc.value)), f"message does not say how to get a token: {exc.value}"
    assert "W" * 22 not in str(exc.value)


@pytest.mark.parametrize("method", ["SecretList", "ClientHello", "EnvironmentCreate"])
def test_unknown_token_id(unknown_id_client, server, method):
    with pytest.raises(modal.exception.AuthError) as exc:
        rpc(method, SERVED[method](), unknown_id_client)
    assert server.token_secret not in str(exc.value)


@pytest.mark.parametrize("which", ["id only", "secret only", "neither"])
def test_partial_headers(server, which):
    metadata = {}
    if which == "id only":
        metadata["x-modal-token-id"] = server.token_id
    if which == "secret only":
        metadata["x-modal-token-secret"] = server.token_secret
    with pytest.raises(GRPCError) as exc:
        raw_call(server.url, "SecretList", api_pb2.SecretListRequest(), metadata)
    assert exc.value.status == Status.UNAUTHENTICATED
    assert _how_to_get_a_token(exc.value.message or "")


def test_rejected_requests_change_nothing(wrong_secret_client):
    env = unique("noauthenv")
    name = unique("noauthsecret")
    with pytest.raises(modal.exception.AuthError):
        rpc("EnvironmentCreate", api_pb2.EnvironmentCreateRequest(name=env), wrong_secret_client)
    with pytest.raises(modal.exception.AuthError):
        rpc(
            "SecretGetOrCreate",
            api_pb2.SecretGetOrCreateRequest(
                deployment_name=name,
                object_creation_type=api_pb2.OBJECT_CREATION_TYPE_CREATE_FAIL_IF_EXISTS,
                env_dict={"A": "1"},
            ),
            wrong_secret_client,
        )
    assert env not in [e.name for e in modal.Environment.objects.list()]
    with pytest.raises(modal.exception.NotFoundError):
        modal.Secret.from_name(name).hydrate()


def test_cli_with_wrong_token(cli, server):
    result = cli("secret", "list", env={"MODAL_TOKEN_SECRET": "as-" + "Z" * 22}, check=False)
    assert _how_to_get_a_token(result.output), result
    assert "Z" * 22 not in result.output


@pytest.mark.parametrize(
    "method, request_factory",
    [
        ("AppCreate", lambda: api_pb2.AppCreateRequest()),
        ("AppGetOrCreate", lambda: api_pb2.AppGetOrCreateRequest()),
        ("FunctionGet", lambda: api_pb2.FunctionGetRequest()),
        ("VolumeList", lambda: api_pb2.VolumeListRequest()),
        ("DictGetOrCreate", lambda: api_pb2.DictGetOrCreateRequest()),
        ("QueueList", lambda: api_pb2.QueueListRequest()),
    ],
)
def test_unimplemented_rpc(server, method, request_factory):
    with pytest.raises(modal.exception.UnimplementedError) as exc:
        rpc(method, request_factory())
    assert exc.value._grpc_status == Status.UNIMPLEMENTED
    assert method in str(exc.value)
