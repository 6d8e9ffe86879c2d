"""Check latchkey's own .proto files against the installed `modal` client package.

The `modal` package ships no .proto, only compiled descriptors in
`modal_proto.api_pb2` and `modal_proto.task_command_router_pb2`. We keep our own
subsets in `crates/proto/proto/modal/client/api.proto` and
`crates/proto/proto/modal/task_command_router/task_command_router.proto`. This
test compiles them with `grpc_tools.protoc` into a FileDescriptorSet and checks,
for every message (nested ones included), enum and RPC we declare, that the
installed package has one with the same full name and the same wire shape.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

REPO = Path(__file__).resolve().parents[2]
PROTO_ROOT = REPO / "crates" / "proto" / "proto"
PROTO_FILE = "modal/client/api.proto"
SERVICE = "ModalClient"
ROUTER_PROTO_FILE = "modal/task_command_router/task_command_router.proto"
ROUTER_SERVICE = "TaskCommandRouter"

FDP = descriptor_pb2.FieldDescriptorProto
TYPE_NAMES = {v: k for k, v in FDP.Type.items()}
LABEL_NAMES = {v: k for k, v in FDP.Label.items()}


def compile_ours() -> descriptor_pb2.FileDescriptorSet:
    """Compile our .proto (with imports) into a FileDescriptorSet."""
    import grpc_tools

    wkt_include = Path(grpc_tools.__file__).resolve().parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.pb"
        cmd = [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{wkt_include}",
            f"--descriptor_set_out={out}",
            "--include_imports",
            PROTO_FILE,
            ROUTER_PROTO_FILE,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
        assert proc.returncode == 0, f"protoc failed ({' '.join(cmd)}):\n{proc.stderr}"
        fds = descriptor_pb2.FileDescriptorSet()
        fds.ParseFromString(out.read_bytes())
    return fds


def installed_file(module=None) -> descriptor_pb2.FileDescriptorProto:
    """An installed package's API file (default: modal.client) as a FileDescriptorProto."""
    if module is None:
        from modal_proto import api_pb2 as module

    fd = descriptor_pb2.FileDescriptorProto()
    module.DESCRIPTOR.CopyToProto(fd)
    return fd


def our_file(fds: descriptor_pb2.FileDescriptorSet, name: str = PROTO_FILE) -> descriptor_pb2.FileDescriptorProto:
    for f in fds.file:
        if f.name == name:
            return f
    raise AssertionError(f"{name} not in compiled descriptor set")


def index(fd: descriptor_pb2.FileDescriptorProto):
    """Map full name -> message / enum descriptor proto (nested included)."""
    messages: dict[str, descriptor_pb2.DescriptorProto] = {}
    enums: dict[str, descriptor_pb2.EnumDescriptorProto] = {}

    def walk_msg(m, prefix):
        full = f"{prefix}.{m.name}"
        messages[full] = m
        for n in m.nested_type:
            walk_msg(n, full)
        for e in m.enum_type:
            enums[f"{full}.{e.name}"] = e

    prefix = f".{fd.package}" if fd.package else ""
    for m in fd.message_type:
        walk_msg(m, prefix)
    for e in fd.enum_type:
        enums[f"{prefix}.{e.name}"] = e
    return messages, enums


def field_shape(m: descriptor_pb2.DescriptorProto, f: FDP) -> dict:
    """Everything about a field that matters on the wire and to codegen."""
    oneof = None
    if f.HasField("oneof_index") and not f.proto3_optional:
        oneof = m.oneof_decl[f.oneof_index].name
    return {
        "number": f.number,
        "type": TYPE_NAMES[f.type],
        "type_name": f.type_name if f.type_name else None,
        "label": LABEL_NAMES[f.label],
        "proto3_optional": bool(f.proto3_optional),
        "oneof": oneof,
    }


def compare(ours: descriptor_pb2.FileDescriptorProto, theirs: descriptor_pb2.FileDescriptorProto) -> list[str]:
    """Every difference between our declarations and the installed package."""
    diffs: list[str] = []
    if ours.package != theirs.package:
        diffs.append(f"package: ours {ours.package!r}, installed {theirs.package!r}")
    our_msgs, our_enums = index(ours)
    their_msgs, their_enums = index(theirs)

    for name, m in our_msgs.items():
        t = their_msgs.get(name)
        if t is None:
            diffs.append(f"message {name}: not in the installed package")
            continue
        if m.options.map_entry != t.options.map_entry:
            diffs.append(f"message {name}: map_entry ours {m.options.map_entry}, installed {t.options.map_entry}")
        theirs_by_name = {f.name: f for f in t.field}
        ours_by_name = {f.name: f for f in m.field}
        for fname, f in ours_by_name.items():
            tf = theirs_by_name.get(fname)
            if tf is None:
                diffs.append(f"message {name}: field {fname} = {f.number} not in the installed package")
                continue
            a, b = field_shape(m, f), field_shape(t, tf)
            for key in a:
                if a[key] != b[key]:
                    diffs.append(f"message {name}: field {fname}: {key} ours {a[key]!r}, installed {b[key]!r}")
        for fname, tf in theirs_by_name.items():
            if fname not in ours_by_name:
                diffs.append(f"message {name}: missing field {fname} = {tf.number} of the installed package")
        numbers = [f.number for f in m.field]
        if len(numbers) != len(set(numbers)):
            diffs.append(f"message {name}: duplicate field numbers {sorted(numbers)}")

    for name, e in our_enums.items():
        t = their_enums.get(name)
        if t is None:
            diffs.append(f"enum {name}: not in the installed package")
            continue
        ours_vals = {v.name: v.number for v in e.value}
        their_vals = {v.name: v.number for v in t.value}
        for vname, num in their_vals.items():
            if vname not in ours_vals:
                diffs.append(f"enum {name}: missing value {vname} = {num} of the installed package")
            elif ours_vals[vname] != num:
                diffs.append(f"enum {name}: value {vname}: number ours {ours_vals[vname]}, installed {num}")
        for vname, num in ours_vals.items():
            if vname not in their_vals:
                diffs.append(f"enum {name}: value {vname} = {num} not in the installed package")

    their_svcs = {s.name: s for s in theirs.service}
    for svc in ours.service:
        tsvc = their_svcs.get(svc.name)
        if tsvc is None:
            diffs.append(f"service {svc.name}: not in the installed package")
            continue
        their_methods = {m.name: m for m in tsvc.method}
        for meth in svc.method:
            tm = their_methods.get(meth.name)
            where = f"rpc {svc.name}.{meth.name}"
            if tm is None:
                diffs.append(f"{where}: not in the installed package")
                continue
            for key in ("input_type", "output_type", "client_streaming", "server_streaming"):
                a, b = getattr(meth, key), getattr(tm, key)
                if a != b:
                    diffs.append(f"{where}: {key} ours {a!r}, installed {b!r}")
    return diffs


@pytest.fixture(scope="module")
def compiled() -> descriptor_pb2.FileDescriptorSet:
    return compile_ours()


@pytest.fixture(scope="module")
def ours(compiled) -> descriptor_pb2.FileDescriptorProto:
    return our_file(compiled)


@pytest.fixture(scope="module")
def ours_router(compiled) -> descriptor_pb2.FileDescriptorProto:
    return our_file(compiled, ROUTER_PROTO_FILE)


@pytest.fixture(scope="module")
def theirs_router() -> descriptor_pb2.FileDescriptorProto:
    from modal_proto import task_command_router_pb2

    return installed_file(task_command_router_pb2)


@pytest.fixture(scope="module")
def theirs() -> descriptor_pb2.FileDescriptorProto:
    return installed_file()


def test_our_proto_matches_installed_package(ours, theirs):
    diffs = compare(ours, theirs)
    assert not diffs, (
        f"{len(diffs)} difference(s) between {PROTO_FILE} and the installed modal_proto.api_pb2:\n  "
        + "\n  ".join(diffs)
    )


def test_declares_the_served_rpcs(ours):
    expected = {
        "ClientHello", "SecretGetOrCreate", "SecretList", "SecretDelete", "SecretUpdate",
        "SecretGetInfo", "EnvironmentList", "EnvironmentCreate", "EnvironmentDelete",
        "EnvironmentUpdate", "EnvironmentGetOrCreate", "WorkspaceNameLookup", "TokenInfoGet",
        # Sandboxes (`latchkey serve --sandboxes`), Modal's V2 flow.
        "AppGetOrCreate", "ImageGetOrCreate", "AuthTokenGet", "SandboxCreateV2", "SandboxWaitV2",
        "SandboxTerminateV2", "SandboxGetTaskIdV2", "SandboxGetCommandRouterAccess",
        # Functions (`latchkey serve --functions`): apps, mounts, calls, containers, blobs.
        "AppCreate", "AppHeartbeat", "AppGetLogs", "AppClientDisconnect", "AppPublish",
        "AppGetByDeploymentName", "AppGetLayout", "AppList", "AppStop",
        "FunctionPrecreate", "FunctionCreate", "FunctionGet", "FunctionMap", "FunctionPutInputs",
        "FunctionGetOutputs", "FunctionFinishInputs", "FunctionCallCancel",
        "MountGetOrCreate", "MountBatchedCheckExistence", "MountPutFile",
        "ContainerHello", "ContainerHeartbeat", "FunctionGetInputs", "FunctionPutOutputs",
        "TaskResult", "BlobCreate", "BlobGet",
    }
    [svc] = [s for s in ours.service if s.name == SERVICE]
    assert {m.name for m in svc.method} == expected
    assert ours.package == "modal.client"


def test_router_proto_matches_installed_package(ours_router, theirs_router):
    diffs = compare(ours_router, theirs_router)
    assert not diffs, (
        f"{len(diffs)} difference(s) between {ROUTER_PROTO_FILE} and the installed "
        "modal_proto.task_command_router_pb2:\n  " + "\n  ".join(diffs)
    )


def test_router_declares_the_served_rpcs(ours_router):
    [svc] = [s for s in ours_router.service if s.name == ROUTER_SERVICE]
    assert {m.name for m in svc.method} == {"SandboxStdioReadV2", "SandboxStdinWriteV2", "SandboxWaitUntilReady"}
    assert ours_router.package == "modal.task_command_router"
    [read] = [m for m in svc.method if m.name == "SandboxStdioReadV2"]
    assert read.server_streaming and not read.client_streaming


def test_router_file_is_self_contained(ours_router):
    msgs, enums = index(ours_router)
    known = set(msgs) | set(enums)
    refs = [f.type_name for m in msgs.values() for f in m.field if f.type_name]
    refs += [t for s in ours_router.service for m in s.method for t in (m.input_type, m.output_type)]
    missing = sorted({r for r in refs if r.startswith(".modal.") and r not in known})
    assert not missing, f"referenced but not declared: {missing}"


def test_comparison_detects_router_differences(ours_router, theirs_router):
    baseline = set(compare(ours_router, theirs_router))
    bad = copy.deepcopy(ours_router)
    field = next(f for m in bad.message_type if m.name == "SandboxStdioReadV2Response" for f in m.field
                 if f.name == "starting_offset")
    field.type = FDP.TYPE_INT64
    assert set(compare(bad, theirs_router)) - baseline
    bad = copy.deepcopy(ours_router)
    next(e for e in bad.enum_type if e.name == "SandboxStdioFileDescriptor").value[0].number = 5
    assert set(compare(bad, theirs_router)) - baseline


def test_every_referenced_type_is_declared_in_our_file(ours):
    """Self-contained: every modal.client type we use is declared in our file."""
    msgs, enums = index(ours)
    known = set(msgs) | set(enums)
    refs = [f.type_name for m in msgs.values() for f in m.field if f.type_name]
    refs += [t for s in ours.service for m in s.method for t in (m.input_type, m.output_type)]
    missing = sorted({r for r in refs if r.startswith(".modal.") and r not in known})
    assert not missing, f"referenced but not declared: {missing}"


def _mutations(ours):
    """Deliberately wrong copies of our file, each with the change it makes."""
    def mutate(desc, fn):
        bad = copy.deepcopy(ours)
        fn(bad)
        return desc, bad

    def msg(bad, name):
        return next(m for m in bad.message_type if m.name == name)

    def field(bad, m, f):
        return next(x for x in msg(bad, m).field if x.name == f)

    yield mutate("field number", lambda b: setattr(field(b, "SecretListRequest", "pagination"), "number", 9))
    yield mutate("field type", lambda b: setattr(field(b, "ListPagination", "max_objects"), "type", FDP.TYPE_INT64))
    yield mutate("repeated", lambda b: setattr(field(b, "SecretMetadata", "keys"), "label", FDP.LABEL_OPTIONAL))
    yield mutate("proto3 optional", lambda b: setattr(
        field(b, "EnvironmentListItem", "max_concurrent_tasks"), "proto3_optional", False))
    yield mutate("field name", lambda b: setattr(field(b, "SecretDeleteRequest", "secret_id"), "name", "id"))
    yield mutate("missing field", lambda b: msg(b, "WorkspaceNameLookupResponse").field.pop())
    yield mutate("type_name", lambda b: setattr(
        field(b, "EnvironmentListItem", "environment_type"), "type_name", ".modal.client.EnvironmentRole"))
    yield mutate("enum number", lambda b: setattr(
        next(e for e in b.enum_type if e.name == "EnvironmentRole").value[1], "number", 7))
    yield mutate("missing enum value", lambda b: next(e for e in b.enum_type if e.name == "EnvironmentType").value.pop())
    yield mutate("rpc output", lambda b: setattr(
        next(m for m in b.service[0].method if m.name == "SecretDelete"), "output_type", ".modal.client.SecretGetInfoResponse"))
    yield mutate("rpc streaming", lambda b: setattr(
        next(m for m in b.service[0].method if m.name == "SecretList"), "server_streaming", True))
    yield mutate("unknown message", lambda b: b.message_type.add(name="NoSuchLatchkeyMessage"))


def test_comparison_detects_differences(ours, theirs):
    """Negative check: the comparison must report each deliberate mistake."""
    baseline = set(compare(ours, theirs))
    undetected = []
    for desc, bad in _mutations(ours):
        if not set(compare(bad, theirs)) - baseline:
            undetected.append(desc)
    assert not undetected, f"compare() missed deliberate mistakes: {undetected}"
