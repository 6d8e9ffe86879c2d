"""Bad input: the right status, a message that names the problem, and nothing changed.

Requests go straight through the client's stub so that the server's own checks are
tested (the modal client checks some names itself before sending).
"""

import modal
import modal.exception
import pytest
from google.protobuf.wrappers_pb2 import StringValue
from modal_proto import api_pb2

from support import fake_app_id, rpc, secret_keys, unique

Update = api_pb2.SecretUpdateRequest.Update
FAIL_IF_EXISTS = api_pb2.OBJECT_CREATION_TYPE_CREATE_FAIL_IF_EXISTS


def _create(name, env_dict, env="", kind=FAIL_IF_EXISTS, **kw):
    return rpc(
        "SecretGetOrCreate",
        api_pb2.SecretGetOrCreateRequest(
            deployment_name=name, environment_name=env, object_creation_type=kind, env_dict=env_dict, **kw
        ),
    )


def _assert_env_empty(env):
    assert modal.Secret.objects.list(environment_name=env) == []


# ---------------------------------------------------------------- secret names

BAD_SECRET_NAMES = [
    "a" * 65,
    "has space",
    "slash/name",
    "colon:name",
    "ünicode",
    "semi;colon",
    "ap-" + "A1b2C3d4E5f6G7h8I9j0Kl",  # looks like an App ID
    ".",  # path segments no URL can address
    "..",
]


@pytest.mark.parametrize("name", BAD_SECRET_NAMES, ids=lambda n: n[:20])
def test_invalid_secret_name(server, env_name, name):
    with pytest.raises(modal.exception.InvalidError) as exc:
        _create(name, {"A": "1"}, env=env_name)
    assert type(exc.value) is modal.exception.InvalidError
    assert f"Invalid Secret name: '{name}'" in str(exc.value)
    _assert_env_empty(env_name)


@pytest.mark.parametrize("kind", ["CREATE_IF_MISSING", "CREATE_OVERWRITE_IF_EXISTS"])
def test_invalid_secret_name_other_create_modes(server, env_name, kind):
    with pytest.raises(modal.exception.InvalidError) as exc:
        _create("bad name", {"A": "1"}, env=env_name, kind=getattr(api_pb2, f"OBJECT_CREATION_TYPE_{kind}"))
    assert "Invalid Secret name: 'bad name'" in str(exc.value)
    _assert_env_empty(env_name)


def test_empty_secret_name_on_create(server, env_name):
    with pytest.raises(modal.exception.InvalidError):
        _create("", {"A": "1"}, env=env_name)
    _assert_env_empty(env_name)


@pytest.mark.parametrize(
    "name",
    ["a" * 64, "a", "A.b_c-9", "ap-" + "A" * 21, "ap-" + "A" * 23, "ap_" + "A" * 22],
    ids=["64chars", "1char", "punct", "ap-21", "ap-23", "ap_22"],
)
def test_valid_secret_name_edges(server, env_name, name):
    _create(name, {"A": "1"}, env=env_name)
    assert [s.name for s in modal.Secret.objects.list(environment_name=env_name)] == [name]


def test_client_checks_names_too(server):
    with pytest.raises(modal.exception.InvalidError):
        modal.Secret.objects.create("has space", {"A": "1"})


# ---------------------------------------------------------------- keys and values

BAD_KEYS = ["1ABC", "A-B", "A B", "", "ÄB", "A.B", "A=B", "$A"]


@pytest.mark.parametrize("key", BAD_KEYS, ids=lambda k: repr(k))
def test_invalid_key(server, env_name, key):
    name = unique("badkey")
    with pytest.raises(modal.exception.InvalidError) as exc:
        _create(name, {"GOOD": "1", key: "v"}, env=env_name)
    if key:
        assert key in str(exc.value)
    assert "key" in str(exc.value).lower()
    _assert_env_empty(env_name)


def test_key_length_limit(server, env_name):
    ok = "K" * 16384
    _create(unique("longkey"), {ok: "v"}, env=env_name)
    name = unique("toolongkey")
    with pytest.raises(modal.exception.InvalidError):
        _create(name, {"K" * 16385: "v"}, env=env_name)
    assert len(modal.Secret.objects.list(environment_name=env_name)) == 1


def test_value_with_nul(server, env_name):
    marker = "nul-" + unique("v")
    with pytest.raises(modal.exception.InvalidError) as exc:
        _create(unique("nul"), {"TOKEN": f"{marker}\x00tail"}, env=env_name)
    assert "TOKEN" in str(exc.value)
    assert marker not in str(exc.value), "the error echoes the secret value"
    _assert_env_empty(env_name)


def test_value_size_limit(server, env_name):
    """32,768 characters, as Modal documents: not bytes."""
    _create(unique("max-ascii"), {"V": "x" * 32768}, env=env_name)
    _create(unique("max-utf8"), {"V": "é" * 32768}, env=env_name)  # 65,536 bytes
    _create(unique("wide"), {"V": "é" * 20000}, env=env_name)  # refused when bytes counted
    assert len(modal.Secret.objects.list(environment_name=env_name)) == 3
    for value in ("x" * 32769, "é" * 32769):
        with pytest.raises(modal.exception.InvalidError) as exc:
            _create(unique("too-big"), {"BIG": value}, env=env_name)
        assert "BIG" in str(exc.value)
        assert value not in str(exc.value)
    assert len(modal.Secret.objects.list(environment_name=env_name)) == 3


def test_key_count_limit(server, env_name):
    _create(unique("k1000"), {f"K{i}": "v" for i in range(1000)}, env=env_name)
    with pytest.raises(modal.exception.InvalidError) as exc:
        _create(unique("k1001"), {f"K{i}": "v" for i in range(1001)}, env=env_name)
    assert "1000" in str(exc.value) or "1,000" in str(exc.value)
    assert len(modal.Secret.objects.list(environment_name=env_name)) == 1


def test_anonymous_secrets_are_validated_too(server):
    with pytest.raises(modal.exception.InvalidError):
        modal.Secret.from_dict({"BAD-KEY": "1"}).hydrate()
    with pytest.raises(modal.exception.InvalidError):
        modal.Secret.from_dict({"K": "a\x00b"}).hydrate()
    with pytest.raises(modal.exception.InvalidError):
        rpc(
            "SecretGetOrCreate",
            api_pb2.SecretGetOrCreateRequest(
                object_creation_type=api_pb2.OBJECT_CREATION_TYPE_ANONYMOUS_OWNED_BY_APP,
                env_dict={"K": "x" * 32769},
                app_id=fake_app_id(),
            ),
        )


# ---------------------------------------------------------------- updates


def _secret_with(keys):
    name = unique("upd")
    modal.Secret.objects.create(name, {k: "v" for k in keys})
    return modal.Secret.from_name(name).hydrate().object_id


@pytest.mark.parametrize(
    "updates",
    [
        [Update(key="GOOD", value="1"), Update(key="1BAD", value="1")],
        [Update(key="GOOD", value="1"), Update(key="NUL", value="a\x00b")],
        [Update(key="GOOD", value="1"), Update(key="BIG", value="x" * 32769)],
        [Update(key="GOOD", value="1"), Update(key="", value="1")],
    ],
    ids=["bad-key", "nul", "too-big", "empty-key"],
)
def test_invalid_update_changes_nothing(server, updates):
    secret_id = _secret_with(["A"])
    with pytest.raises(modal.exception.InvalidError):
        rpc("SecretUpdate", api_pb2.SecretUpdateRequest(secret_id=secret_id, updates=updates))
    assert secret_keys(secret_id) == {"A"}


def test_update_past_key_limit(server):
    secret_id = _secret_with([f"K{i}" for i in range(999)])
    rpc("SecretUpdate", api_pb2.SecretUpdateRequest(secret_id=secret_id, updates=[Update(key="K999", value="v")]))
    assert len(secret_keys(secret_id)) == 1000
    with pytest.raises(modal.exception.InvalidError):
        rpc(
            "SecretUpdate", api_pb2.SecretUpdateRequest(secret_id=secret_id, updates=[Update(key="K1000", value="v")])
        )
    assert len(secret_keys(secret_id)) == 1000
    # Replacing and removing keys at the limit is fine.
    rpc(
        "SecretUpdate",
        api_pb2.SecretUpdateRequest(
            secret_id=secret_id, updates=[Update(key="K0"), Update(key="NEW", value="v"), Update(key="K1", value="w")]
        ),
    )
    keys = secret_keys(secret_id)
    assert len(keys) == 1000 and "K0" not in keys and "NEW" in keys


def test_client_update_rejects_bad_key(server):
    name = unique("cupd")
    modal.Secret.objects.create(name, {"A": "1"})
    secret = modal.Secret.from_name(name)
    with pytest.raises(modal.exception.InvalidError):
        secret.update({"NOT VALID": "1"})
    assert secret_keys(secret.object_id) == {"A"}


# ---------------------------------------------------------------- unknown things and malformed requests


def test_unknown_environment_everywhere(server):
    env = unique("noenv")
    with pytest.raises(modal.exception.NotFoundError) as exc:
        _create(unique("x"), {"A": "1"}, env=env)
    assert env in str(exc.value)
    with pytest.raises(modal.exception.NotFoundError) as exc:
        rpc(
            "SecretGetOrCreate",
            api_pb2.SecretGetOrCreateRequest(
                object_creation_type=api_pb2.OBJECT_CREATION_TYPE_EPHEMERAL, env_dict={"A": "1"}, environment_name=env
            ),
        )
    assert env in str(exc.value)
    with pytest.raises(modal.exception.NotFoundError) as exc:
        modal.Secret.objects.list(environment_name=env)
    assert env in str(exc.value)
    with pytest.raises(modal.exception.NotFoundError) as exc:
        modal.Secret.objects.delete("x", environment_name=env)
    assert env in str(exc.value)
    assert env not in [e.name for e in modal.Environment.objects.list()]


def test_unknown_creation_type(server, env_name):
    with pytest.raises(modal.exception.InvalidError):
        _create(unique("x"), {"A": "1"}, env=env_name, kind=99)
    _assert_env_empty(env_name)


def test_app_owned_without_app_id(server):
    with pytest.raises(modal.exception.InvalidError):
        rpc(
            "SecretGetOrCreate",
            api_pb2.SecretGetOrCreateRequest(
                object_creation_type=api_pb2.OBJECT_CREATION_TYPE_ANONYMOUS_OWNED_BY_APP, env_dict={"A": "1"}
            ),
        )


def test_lookup_without_name(server):
    with pytest.raises((modal.exception.InvalidError, modal.exception.NotFoundError)):
        rpc("SecretGetOrCreate", api_pb2.SecretGetOrCreateRequest(deployment_name=""))


@pytest.mark.parametrize("method", ["SecretGetInfo", "SecretDelete", "SecretUpdate"])
@pytest.mark.parametrize("secret_id", ["", "not-an-id", "st-", "en-" + "A" * 22])
def test_malformed_secret_ids(server, method, secret_id):
    request = getattr(api_pb2, f"{method}Request")(secret_id=secret_id)
    with pytest.raises((modal.exception.InvalidError, modal.exception.NotFoundError)):
        rpc(method, request)


def test_negative_max_objects(server):
    with pytest.raises(modal.exception.InvalidError):
        rpc("SecretList", api_pb2.SecretListRequest(pagination=api_pb2.ListPagination(max_objects=-1)))


# ---------------------------------------------------------------- environment names

BAD_ENV_NAMES = ["a" * 65, "-lead", "_lead", "has space", "dot.ted", "en-reserved", "EN-upper", "slash/x", "ünï", ""]


@pytest.mark.parametrize("name", BAD_ENV_NAMES, ids=lambda n: repr(n[:20]))
def test_invalid_environment_name_on_create(server, name):
    with pytest.raises(modal.exception.InvalidError) as exc:
        rpc("EnvironmentCreate", api_pb2.EnvironmentCreateRequest(name=name))
    if name:
        assert name in str(exc.value)
    assert name not in [e.name for e in modal.Environment.objects.list()]


def test_invalid_environment_name_on_rename(server):
    name = unique("renbad")
    modal.Environment.objects.create(name)
    for bad in ["has space", "en-x", "a" * 65]:
        with pytest.raises(modal.exception.InvalidError):
            rpc("EnvironmentUpdate", api_pb2.EnvironmentUpdateRequest(current_name=name, name=StringValue(value=bad)))
    assert name in [e.name for e in modal.Environment.objects.list()]


@pytest.mark.parametrize("name", ["a" * 64, "A", "9x", "a_b-C"], ids=["64chars", "1char", "digit", "mixed"])
def test_valid_environment_name_edges(server, name):
    # Make names unique per run where length allows.
    if len(name) < 40:
        name = f"{name}{unique('')[1:9]}"
    rpc("EnvironmentCreate", api_pb2.EnvironmentCreateRequest(name=name))
    assert name in [e.name for e in modal.Environment.objects.list()]
    rpc("EnvironmentDelete", api_pb2.EnvironmentDeleteRequest(name=name))


def test_request_over_4_mb_is_accepted(server, env_name):
    """130 keys of 32,768 bytes (~4.3 MB, over gRPC's common 4 MB default) is within the rules."""
    big = {f"K{i:04d}": chr(ord("a") + i % 26) * 32768 for i in range(130)}
    name = unique("large")
    resp = _create(name, big, env=env_name)
    assert len(resp.metadata.keys) == 130
    assert len(secret_keys(resp.secret_id)) == 130
