"""HTTP/JSON <-> gRPC from the contracts themselves (as grpc-gateway and Envoy's transcoder do).

Routes are read at start from the `google.api.http` option of each method (with its
additional_bindings) in the descriptors of the fronted services. JSON follows the proto3
JSON mapping (google.protobuf.json_format). One field-name style: lowerCamelCase. Responses
and the OpenAPI document use lowerCamelCase only; requests are parsed by json_format, which
(as the proto3 JSON spec requires of parsers) also accepts the original snake_case names,
and query parameters take either spelling too. Unknown fields are refused.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pool, json_format, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message

from casino.common.v1 import options_pb2

HTTP_METHODS = ("get", "put", "post", "delete", "patch")

# Well-known types whose JSON form is a single string (or number/bool): usable as query
# parameters and path variables, and rendered as such in the OpenAPI document.
SCALAR_WELL_KNOWN = frozenset(
    {
        "google.protobuf.Timestamp",
        "google.protobuf.Duration",
        "google.protobuf.FieldMask",
        "google.protobuf.DoubleValue",
        "google.protobuf.FloatValue",
        "google.protobuf.Int64Value",
        "google.protobuf.UInt64Value",
        "google.protobuf.Int32Value",
        "google.protobuf.UInt32Value",
        "google.protobuf.BoolValue",
        "google.protobuf.StringValue",
        "google.protobuf.BytesValue",
    }
)


class TranscodingError(ValueError):
    """The HTTP request cannot become the RPC's request message (400, nothing is called)."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class RouteConfigError(ValueError):
    """An http annotation the edge cannot serve: refused at start, never at request time."""


def load_contracts() -> None:
    """Import every generated *_pb2 module so their descriptors are in the default pool."""
    import casino

    for module in pkgutil.walk_packages(casino.__path__, "casino."):
        if module.name.endswith("_pb2"):
            importlib.import_module(module.name)


# Path templates (google/api/http.proto):
#   Template = "/" Segments [ Verb ] ; Segments = Segment { "/" Segment } ;
#   Segment = "*" | "**" | LITERAL | Variable ; Variable = "{" FieldPath [ "=" Segments ] "}" ;
_TOKEN = re.compile(r"\{([^}=]+)(?:=([^}]*))?\}|([^/{}]+)|/")


def _segments_regex(segments: str, template: str) -> str:
    parts = []
    for segment in segments.split("/"):
        if segment == "*":
            parts.append(r"[^/]+")
        elif segment == "**":
            parts.append(r".+")
        elif segment and "{" not in segment and "}" not in segment:
            parts.append(re.escape(segment))
        else:
            raise RouteConfigError(f"bad segment {segment!r} in path template {template!r}")
    return "/".join(parts)


def openapi_parameter(field_path: str) -> str:
    """The OpenAPI name of a path variable: tools match {name} with \\w+, so a nested
    field path a.b is named a_b (the field path itself is given as x-field-path)."""
    return field_path.replace(".", "_")


@dataclass(frozen=True)
class PathTemplate:
    template: str
    regex: re.Pattern[str]
    # Field paths (dotted, proto names) bound by the variables, in order.
    variables: tuple[str, ...]
    # The template in OpenAPI form: a plain variable {a.b} becomes {a_b}; a variable over
    # segments {name=mirrors/*} keeps its literals and names its wildcards
    # (/v1/mirrors/{name}), so each OpenAPI parameter is exactly one path segment.
    openapi_path: str
    # (OpenAPI parameter, field path, True when the parameter is the whole field value).
    openapi_parameters: tuple[tuple[str, str, bool], ...] = ()

    @classmethod
    def parse(cls, template: str) -> PathTemplate:
        if not template.startswith("/"):
            raise RouteConfigError(f"path template {template!r} must start with /")
        path, verb = template, ""
        last = template.rsplit("/", 1)[-1]
        if ":" in last and "}" not in last.split(":")[-1]:
            path, _, verb = template.rpartition(":")
        pattern: list[str] = []
        variables: list[str] = []
        openapi: list[str] = []
        parameters: list[tuple[str, str, bool]] = []
        pos = 0
        while pos < len(path):
            m = _TOKEN.match(path, pos)
            if m is None:
                raise RouteConfigError(f"cannot parse path template {template!r}")
            pos = m.end()
            var, sub, literal = m.group(1), m.group(2), m.group(3)
            if var is not None:
                var = var.strip()
                group = f"v{len(variables)}"
                inner = _segments_regex(sub, template) if sub else r"[^/]+"
                pattern.append(f"(?P<{group}>{inner})")
                variables.append(var)
                name = openapi_parameter(var)
                if not sub or sub == "*":
                    openapi.append("{" + name + "}")
                    parameters.append((name, var, True))
                else:
                    wildcards = [s for s in sub.split("/") if s in ("*", "**")]
                    parts = []
                    for segment in sub.split("/"):
                        if segment in ("*", "**"):
                            n = sum(1 for p in parameters if p[1] == var)
                            param = name if len(wildcards) == 1 else f"{name}_{n + 1}"
                            parts.append("{" + param + "}")
                            parameters.append((param, var, False))
                        else:
                            parts.append(segment)
                    openapi.append("/".join(parts))
            elif literal is not None:
                pattern.append(_segments_regex(literal, template))
                openapi.append(literal)
            else:
                pattern.append("/")
                openapi.append("/")
        if verb:
            pattern.append(":" + re.escape(verb))
            openapi.append(":" + verb)
        return cls(
            template,
            re.compile("^" + "".join(pattern) + "$"),
            tuple(variables),
            "".join(openapi),
            tuple(parameters),
        )

    def match(self, path: str) -> dict[str, str] | None:
        m = self.regex.match(path)
        if m is None:
            return None
        return {var: m.group(f"v{i}") for i, var in enumerate(self.variables)}


@dataclass(frozen=True)
class Binding:
    """One HTTP route of one RPC: an HttpRule or one of its additional_bindings."""

    http_method: str  # upper case
    path: PathTemplate
    body: str  # "", "*", or a top-level field name
    service: str  # full gRPC service name
    method: MethodDescriptor
    endpoint_class: str  # short name, e.g. CATALOG
    request_class: type[Message]
    response_class: type[Message]
    # Field paths bound by path variables and by the body, for query-parameter checks.
    bound: frozenset[str] = field(default_factory=frozenset)

    @property
    def safe(self) -> bool:
        """A read: the contracts bind to GET only operations that change nothing a client
        could see (HTTP's safe method, RFC 9110 9.2.1; tests/contracts holds them to it)."""
        return self.http_method == "GET"

    @property
    def grpc_path(self) -> str:
        return f"/{self.service}/{self.method.name}"

    @property
    def operation_id(self) -> str:
        return f"{self.service}.{self.method.name}"


def _rules(rule: http_pb2.HttpRule) -> Iterable[http_pb2.HttpRule]:
    yield rule
    for extra in rule.additional_bindings:
        if extra.additional_bindings:
            raise RouteConfigError("additional_bindings may not nest")
        yield extra


def _field_path(message: Descriptor, dotted: str) -> list[FieldDescriptor]:
    fields, current = [], message
    names = dotted.split(".")
    for i, name in enumerate(names):
        f = current.fields_by_name.get(name)
        if f is None:
            raise RouteConfigError(f"{message.full_name} has no field {dotted!r}")
        fields.append(f)
        if i < len(names) - 1:
            if f.message_type is None or _is_repeated(f):
                raise RouteConfigError(f"{dotted!r} crosses a non-message or repeated field")
            current = f.message_type
    return fields


def _is_repeated(f: FieldDescriptor) -> bool:
    return bool(f.is_repeated)


def message_class(descriptor: Descriptor) -> type[Message]:
    return message_factory.GetMessageClass(descriptor)


def bindings_for(service_name: str) -> list[Binding]:
    """Every HTTP binding of the service's annotated RPCs, validated against its messages."""
    service = descriptor_pool.Default().FindServiceByName(service_name)
    out = []
    for method in service.methods:
        options = method.GetOptions()
        if not options.HasExtension(annotations_pb2.http):
            continue
        if method.client_streaming or method.server_streaming:
            raise RouteConfigError(f"{method.full_name}: streaming RPCs are not transcoded")
        access = options.Extensions[options_pb2.access]
        cls = options_pb2.EndpointClass.Name(access.endpoint_class).removeprefix("ENDPOINT_CLASS_")
        if cls == "UNSPECIFIED":
            raise RouteConfigError(f"{method.full_name}: routed RPC without an endpoint_class")
        if "edge" not in access.allowed_callers:
            # Every request would end upstream in CALLER_NOT_ALLOWED: a route that cannot work.
            raise RouteConfigError(f"{method.full_name}: routed RPC does not allow the edge")
        for rule in _rules(options.Extensions[annotations_pb2.http]):
            kind = rule.WhichOneof("pattern")
            if kind not in HTTP_METHODS:
                raise RouteConfigError(f"{method.full_name}: unsupported pattern {kind!r}")
            template = PathTemplate.parse(getattr(rule, kind))
            bound = set()
            for var in template.variables:
                path = _field_path(method.input_type, var)
                if _is_repeated(path[-1]) or (
                    path[-1].message_type is not None
                    and path[-1].message_type.full_name not in SCALAR_WELL_KNOWN
                ):
                    raise RouteConfigError(f"{method.full_name}: path variable {var!r} not scalar")
                bound.add(var)
            if rule.body and rule.body != "*":
                _field_path(method.input_type, rule.body)
                bound.add(rule.body)
            if rule.response_body:
                raise RouteConfigError(f"{method.full_name}: response_body is not supported")
            if rule.body and kind == "get":
                raise RouteConfigError(f"{method.full_name}: GET with a body")
            out.append(
                Binding(
                    http_method=kind.upper(),
                    path=template,
                    body=rule.body,
                    service=service_name,
                    method=method,
                    endpoint_class=cls,
                    request_class=message_class(method.input_type),
                    response_class=message_class(method.output_type),
                    bound=frozenset(bound),
                )
            )
    return out


# Requests.


def _json_name_index(message: Descriptor) -> dict[str, FieldDescriptor]:
    index = {}
    for f in message.fields:
        index[f.name] = f
        index[f.json_name] = f
    return index


def _query_value(f: FieldDescriptor, raw: str, name: str) -> Any:
    """A query or path string as the JSON value json_format expects for field `f`."""
    wkt = f.message_type.full_name if f.message_type is not None else ""
    if f.type == FieldDescriptor.TYPE_BOOL or wkt == "google.protobuf.BoolValue":
        if raw in ("true", "false"):
            return raw == "true"
        raise TranscodingError(f"{name} must be true or false", name)
    if f.enum_type is not None and raw.lstrip("-").isdigit():
        return int(raw)
    return raw


def _set_nested(target: dict[str, Any], fields: Sequence[FieldDescriptor], value: Any) -> None:
    for f in fields[:-1]:
        target = target.setdefault(f.json_name, {})
        if not isinstance(target, dict):
            raise TranscodingError(f"{f.name} is given twice", f.name)
    target[fields[-1].json_name] = value


def _parse(data: Any, cls: type[Message], where: str) -> Message:
    message = cls()
    try:
        json_format.ParseDict(data, message, ignore_unknown_fields=False, max_recursion_depth=32)
    except json_format.ParseError as exc:
        raise TranscodingError(f"{where}: {exc}") from None
    except (ValueError, TypeError, RecursionError) as exc:
        raise TranscodingError(f"{where}: {exc}") from None
    return message


def _copy_leaf(target: Message, source: Message, path: Sequence[FieldDescriptor]) -> None:
    for f in path[:-1]:
        target, source = getattr(target, f.name), getattr(source, f.name)
    leaf = path[-1]
    if _is_repeated(leaf):
        target.ClearField(leaf.name)
        getattr(target, leaf.name).extend(getattr(source, leaf.name))
    elif leaf.message_type is not None:
        getattr(target, leaf.name).CopyFrom(getattr(source, leaf.name))
    else:
        setattr(target, leaf.name, getattr(source, leaf.name))


def decode_request(
    binding: Binding,
    path_vars: Mapping[str, str],
    query: Sequence[tuple[str, str]],
    body: bytes,
) -> Message:
    """The RPC request from the path variables, the query string and the JSON body."""
    descriptor = binding.method.input_type
    params: dict[str, Any] = {}
    param_paths: list[list[FieldDescriptor]] = []
    for var, raw in path_vars.items():
        fields = _field_path(descriptor, var)
        _set_nested(params, fields, _query_value(fields[-1], raw, var))
        param_paths.append(fields)

    repeated: dict[str, list[Any]] = {}
    for name, raw in query:
        if binding.body == "*":
            raise TranscodingError(
                f"query parameter {name!r}: this operation takes all fields in its body", name
            )
        fields = []
        current: Descriptor | None = descriptor
        for part in name.split("."):
            f = _json_name_index(current).get(part) if current is not None else None
            if f is None:
                raise TranscodingError(f"unknown query parameter {name!r}", name)
            fields.append(f)
            current = f.message_type
            if current is not None and current.full_name in SCALAR_WELL_KNOWN:
                current = None
        leaf = fields[-1]
        dotted = ".".join(f.name for f in fields)
        if any(dotted == b or dotted.startswith(b + ".") for b in binding.bound):
            raise TranscodingError(f"query parameter {name!r} is bound by the path or body", name)
        if leaf.message_type is not None and leaf.message_type.full_name not in SCALAR_WELL_KNOWN:
            raise TranscodingError(f"query parameter {name!r} names a message, not a value", name)
        if any(_is_repeated(f) for f in fields[:-1]):
            raise TranscodingError(f"query parameter {name!r} cannot be set from a query", name)
        value = _query_value(leaf, raw, name)
        if _is_repeated(leaf):
            if dotted not in repeated:
                repeated[dotted] = []
                _set_nested(params, fields, repeated[dotted])
                param_paths.append(fields)
            repeated[dotted].append(value)
        else:
            if any([f.name for f in p] == [f.name for f in fields] for p in param_paths):
                raise TranscodingError(f"query parameter {name!r} is given more than once", name)
            _set_nested(params, fields, value)
            param_paths.append(fields)

    if binding.body:
        if not body.strip():
            document: Any = {}
        else:
            try:
                document = json.loads(body)
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise TranscodingError(f"request body is not valid JSON: {exc}") from None
            except RecursionError:
                # No message of ours nests this deep; the parser's stack ran out first.
                raise TranscodingError("request body is nested too deeply") from None
        if binding.body == "*":
            if not isinstance(document, dict):
                raise TranscodingError("request body must be a JSON object")
            request = _parse(document, binding.request_class, "request body")
        else:
            f = descriptor.fields_by_name[binding.body]
            request = _parse({f.json_name: document}, binding.request_class, "request body")
    else:
        if body.strip():
            raise TranscodingError("this operation takes no request body")
        request = binding.request_class()

    if params:
        from_params = _parse(params, binding.request_class, "path and query parameters")
        for fields in param_paths:
            _copy_leaf(request, from_params, fields)
    return request


# Responses.


def encode_response(binding: Binding, response: Message) -> bytes:
    """proto3 JSON, lowerCamelCase names, fields at their default values included."""
    document = json_format.MessageToDict(
        response,
        always_print_fields_with_no_presence=True,
        preserving_proto_field_name=False,
    )
    return json.dumps(document, separators=(",", ":")).encode()
