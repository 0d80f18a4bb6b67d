"""Route building from descriptors, without a server: path templates, and annotations the
edge refuses at start rather than serving wrongly."""

from __future__ import annotations

import uuid

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool

from edge.app import Router
from edge.transcoding import (
    PathTemplate,
    RouteConfigError,
    TranscodingError,
    bindings_for,
    decode_request,
    load_contracts,
)


@pytest.mark.parametrize(
    ("template", "path", "expected"),
    [
        ("/v1/echoes", "/v1/echoes", {}),
        ("/v1/echoes:relay", "/v1/echoes:relay", {}),
        ("/v1/players/{player_id}/balance", "/v1/players/p-1/balance", {"player_id": "p-1"}),
        ("/v1/{name=mirrors/*}:mirror", "/v1/mirrors/m:mirror", {"name": "mirrors/m"}),
        ("/v1/{name=shelves/*/books/*}", "/v1/shelves/s/books/b", {"name": "shelves/s/books/b"}),
        ("/v1/{path=files/**}", "/v1/files/a/b/c", {"path": "files/a/b/c"}),
        ("/v1/mirrors/{note.title}/note", "/v1/mirrors/t/note", {"note.title": "t"}),
    ],
)
def test_path_templates_match_and_bind(template: str, path: str, expected: dict[str, str]) -> None:
    assert PathTemplate.parse(template).match(path) == expected


@pytest.mark.parametrize(
    ("template", "path"),
    [
        ("/v1/echoes", "/v1/echoes/"),
        ("/v1/echoes:relay", "/v1/echoes"),
        ("/v1/players/{player_id}/balance", "/v1/players/a/b/balance"),
        ("/v1/{name=mirrors/*}", "/v1/other/m"),
        ("/v1/{name=mirrors/*}:mirror", "/v1/mirrors/m"),
    ],
)
def test_path_templates_refuse_other_paths(template: str, path: str) -> None:
    assert PathTemplate.parse(template).match(path) is None


def test_openapi_form_names_one_segment_per_parameter() -> None:
    t = PathTemplate.parse("/v1/{name=shelves/*/books/*}:read")
    assert t.openapi_path == "/v1/shelves/{name_1}/books/{name_2}:read"
    assert PathTemplate.parse("/v1/x/{note.title}").openapi_path == "/v1/x/{note_title}"


def test_bad_templates_are_refused() -> None:
    for bad in ("v1/no-slash", "/v1/{name=a/{b}}"):
        with pytest.raises(RouteConfigError):
            PathTemplate.parse(bad)


def test_every_annotated_public_rpc_is_routed_once() -> None:
    load_contracts()
    bindings = [
        b
        for service in (
            "casino.echo.v1.EchoService",
            "casino.wallet.v1.WalletService",
            "casino.compliance.v1.ComplianceService",
        )
        for b in bindings_for(service)
    ]
    Router(bindings)  # raises on two RPCs bound to one method and path
    methods = {b.method.full_name for b in bindings}
    assert "casino.echo.v1.EchoService.Mirror" in methods
    assert "casino.wallet.v1.WalletService.GetBalance" in methods
    # RPCs without an http annotation are not reachable from HTTP.
    assert "casino.wallet.v1.WalletService.PlaceBet" not in methods
    mirror = [b for b in bindings if b.method.name == "Mirror"]
    assert [(b.http_method, b.body) for b in mirror] == [
        ("POST", "note"),
        ("GET", ""),
        ("PUT", "*"),
    ]


def _service_with(
    rule: str, *, endpoint_class: int = 3, allowed_callers: tuple[str, ...] = ("edge",)
) -> str:
    """A throwaway service in its own pool file whose one RPC carries `rule`."""
    from google.api import annotations_pb2
    from google.protobuf import text_format

    from casino.common.v1 import options_pb2

    name = f"t{uuid.uuid4().hex}"
    file = descriptor_pb2.FileDescriptorProto(
        name=f"{name}.proto",
        package=name,
        syntax="proto3",
    )
    file.message_type.add(name="Req").field.add(
        name="id", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING
    )
    method = file.service.add(name="Svc").method.add(
        name="Do", input_type=f".{name}.Req", output_type=f".{name}.Req"
    )
    text_format.Parse(rule, method.options.Extensions[annotations_pb2.http])
    method.options.Extensions[options_pb2.access].endpoint_class = endpoint_class  # type: ignore[assignment]
    method.options.Extensions[options_pb2.access].allowed_callers.extend(allowed_callers)
    descriptor_pool.Default().Add(file)
    return f"{name}.Svc"


@pytest.mark.parametrize(
    "rule",
    [
        'get: "/v1/things" body: "*"',  # GET with a body
        'get: "/v1/things/{nope}"',  # a variable naming no field
        'post: "/v1/things" body: "nope"',  # a body field that does not exist
        'custom { kind: "HEAD" path: "/v1/things" }',
        'get: "/v1/things" response_body: "id"',
    ],
)
def test_annotations_the_edge_cannot_serve_are_refused_at_start(rule: str) -> None:
    load_contracts()
    with pytest.raises(RouteConfigError):
        bindings_for(_service_with(rule))


def test_a_routed_rpc_needs_an_endpoint_class() -> None:
    load_contracts()
    with pytest.raises(RouteConfigError):
        bindings_for(_service_with('get: "/v1/things"', endpoint_class=0))


def test_a_routed_rpc_must_allow_the_edge() -> None:
    # Its every request would end upstream in CALLER_NOT_ALLOWED (as the admin routes did
    # while their RPCs allowed only the back-office service): refused when the edge starts.
    load_contracts()
    with pytest.raises(RouteConfigError, match="does not allow the edge"):
        bindings_for(_service_with('get: "/v1/things"', allowed_callers=("backoffice",)))


def test_path_variables_fill_their_field_and_the_query_cannot_rebind_it() -> None:
    load_contracts()
    (binding,) = bindings_for(_service_with('get: "/v1/things/{id}"'))
    request = decode_request(binding, {"id": "from-path"}, [], b"")
    assert request.id == "from-path"  # type: ignore[attr-defined]
    with pytest.raises(TranscodingError, match="bound by the path"):
        decode_request(binding, {"id": "from-path"}, [("id", "from-query")], b"")
