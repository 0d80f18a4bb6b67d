"""The OpenAPI 3.1 document of a listener, from the same bindings the router serves.

Schemas come from the message descriptors (recursively, one component per message and enum)
in the proto3 JSON mapping: lowerCamelCase names, 64-bit integers as decimal strings, enums
by value name, bytes as base64, Timestamp as an RFC 3339 date-time string, Duration as
"1.5s", wrappers as nullable scalars. Every operation names its rate-limit class
(`x-rate-limit-class`), its deadline budget, and needs a bearer token unless its class is
AUTH or CATALOG: a player's, or for ADMIN operations an operator's (`operatorAuth`). Errors
share one schema.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from google.api import field_behavior_pb2
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

from edge.config import OPERATOR_CLASSES, UNAUTHENTICATED_CLASSES
from edge.transcoding import Binding

_T = FieldDescriptor
_INT32 = {_T.TYPE_INT32, _T.TYPE_SINT32, _T.TYPE_SFIXED32}
_UINT32 = {_T.TYPE_UINT32, _T.TYPE_FIXED32}
_INT64 = {_T.TYPE_INT64, _T.TYPE_SINT64, _T.TYPE_SFIXED64}
_UINT64 = {_T.TYPE_UINT64, _T.TYPE_FIXED64}

_INT64_SCHEMA = {"type": "string", "format": "int64", "pattern": "^-?[0-9]{1,19}$"}
_UINT64_SCHEMA = {"type": "string", "format": "uint64", "pattern": "^[0-9]{1,20}$"}

_WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": "^-?[0-9]{1,12}(\\.[0-9]{1,9})?s$"},
    "google.protobuf.FieldMask": {"type": "string"},
    "google.protobuf.Empty": {"type": "object", "additionalProperties": False},
    "google.protobuf.Struct": {"type": "object"},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array"},
    "google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "required": ["@type"],
    },
    "google.protobuf.DoubleValue": {"type": ["number", "null"]},
    "google.protobuf.FloatValue": {"type": ["number", "null"]},
    "google.protobuf.Int64Value": {**_INT64_SCHEMA, "type": ["string", "null"]},
    "google.protobuf.UInt64Value": {**_UINT64_SCHEMA, "type": ["string", "null"]},
    "google.protobuf.Int32Value": {"type": ["integer", "null"], "format": "int32"},
    "google.protobuf.UInt32Value": {"type": ["integer", "null"], "minimum": 0},
    "google.protobuf.BoolValue": {"type": ["boolean", "null"]},
    "google.protobuf.StringValue": {"type": ["string", "null"]},
    "google.protobuf.BytesValue": {"type": ["string", "null"], "contentEncoding": "base64"},
}

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Every refusal: switch on `reason` (the ErrorInfo reason), never on text.",
    "required": ["code", "message", "reason", "metadata", "requestId"],
    "properties": {
        "code": {"type": "string", "description": "gRPC status name, e.g. FAILED_PRECONDITION"},
        "message": {"type": "string"},
        "reason": {"type": "string", "description": "ErrorInfo reason; empty when none"},
        "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
        "requestId": {"type": "string"},
    },
    "additionalProperties": False,
}

_ERROR_STATUSES = {
    "400": "Malformed request (bad JSON, unknown field, wrong type, body too large) or a "
    "precondition the request broke",
    "404": "No such route or resource",
    "405": "Method not allowed on this path (see Allow)",
    "409": "Conflict (already exists, aborted)",
    "422": "Business refusal (e.g. INSUFFICIENT_FUNDS, LIMIT_EXCEEDED)",
    "429": "Rate limited (see Retry-After, RateLimit, RateLimit-Policy)",
    "500": "Internal error (the request id finds the detail)",
    "503": "Unavailable or at capacity; retry later",
    "504": "Deadline budget exceeded",
}


class _Schemas:
    def __init__(self) -> None:
        self.components: dict[str, Any] = {}

    def ref(self, name: str) -> dict[str, str]:
        return {"$ref": f"#/components/schemas/{name}"}

    def enum(self, enum: EnumDescriptor) -> dict[str, str]:
        if enum.full_name not in self.components:
            self.components[enum.full_name] = {
                "type": "string",
                "enum": [v.name for v in enum.values],
            }
        return self.ref(enum.full_name)

    def message(self, message: Descriptor) -> dict[str, Any]:
        if message.full_name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[message.full_name])
        if message.full_name not in self.components:
            schema: dict[str, Any] = {
                "type": "object",
                "properties": {},
                "additionalProperties": False,
            }
            self.components[message.full_name] = schema  # before recursing: cycles end here
            required = []
            for f in message.fields:
                schema["properties"][f.json_name] = self.field(f)
                behaviors = f.GetOptions().Extensions[field_behavior_pb2.field_behavior]
                if field_behavior_pb2.FieldBehavior.REQUIRED in behaviors:
                    required.append(f.json_name)
            if required:
                # google.api.field_behavior REQUIRED: what the service refuses without.
                schema["required"] = required
        return self.ref(message.full_name)

    def scalar(self, f: FieldDescriptor) -> dict[str, Any]:
        if f.message_type is not None:
            return self.message(f.message_type)
        if f.enum_type is not None:
            return self.enum(f.enum_type)
        t = f.type
        if t in _INT32:
            return {"type": "integer", "format": "int32"}
        if t in _UINT32:
            return {"type": "integer", "minimum": 0, "maximum": 4294967295}
        if t in _INT64:
            return dict(_INT64_SCHEMA)
        if t in _UINT64:
            return dict(_UINT64_SCHEMA)
        if t in (_T.TYPE_DOUBLE, _T.TYPE_FLOAT):
            return {"type": "number"}
        if t == _T.TYPE_BOOL:
            return {"type": "boolean"}
        if t == _T.TYPE_BYTES:
            return {"type": "string", "contentEncoding": "base64"}
        return {"type": "string"}

    def field(self, f: FieldDescriptor) -> dict[str, Any]:
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            value = f.message_type.fields_by_name["value"]
            return {"type": "object", "additionalProperties": self.scalar(value)}
        if f.is_repeated:
            return {"type": "array", "items": self.scalar(f)}
        return self.scalar(f)


def _leaf(message: Descriptor, dotted: str) -> FieldDescriptor:
    f = None
    for name in dotted.split("."):
        f = message.fields_by_name[name]
        if f.message_type is not None:
            message = f.message_type
    assert f is not None
    return f


def _query_parameters(
    schemas: _Schemas, message: Descriptor, binding: Binding, prefix: str = "", depth: int = 0
) -> list[dict[str, Any]]:
    """One parameter per scalar leaf not bound by the path or body (nested as a.b)."""
    out: list[dict[str, Any]] = []
    for f in message.fields:
        proto_path = f"{prefix}{f.name}"
        if any(proto_path == b or proto_path.startswith(b + ".") for b in binding.bound):
            continue
        name = _json_path(prefix, f)
        wkt = f.message_type.full_name if f.message_type is not None else ""
        if f.message_type is not None and wkt not in _WELL_KNOWN:
            if f.is_repeated or f.message_type.GetOptions().map_entry or depth >= 3:
                continue
            out.extend(
                _query_parameters(schemas, f.message_type, binding, f"{proto_path}.", depth + 1)
            )
            continue
        if wkt in ("google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue"):
            continue
        if wkt in ("google.protobuf.Any", "google.protobuf.Empty"):
            continue
        schema = schemas.field(f)
        if wkt.endswith("Value") and isinstance(schema.get("type"), list):
            schema = {**schema, "type": next(t for t in schema["type"] if t != "null")}
        param: dict[str, Any] = {"name": name, "in": "query", "required": False, "schema": schema}
        if f.is_repeated:
            param["style"] = "form"
            param["explode"] = True
        out.append(param)
    return out


def _json_path(prefix: str, f: FieldDescriptor) -> str:
    """The lowerCamelCase dotted name of a (possibly nested) field; `prefix` is proto names."""
    return ".".join([*(_camel(p) for p in prefix.split(".") if p), f.json_name])


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def _path_parameter(
    schemas: _Schemas, binding: Binding, name: str, var: str, whole: bool
) -> dict[str, Any]:
    segment = {"type": "string", "pattern": "^[^/]+$"}
    if whole:
        schema = schemas.field(_leaf(binding.method.input_type, var))
        if isinstance(schema.get("type"), list):
            schema = {**schema, "type": next(t for t in schema["type"] if t != "null")}
        if schema.get("type") == "string" and "pattern" not in schema:
            schema = {**schema, **segment}
        description = f"the request's {var}"
    else:
        schema = segment
        description = f"a segment of the request's {var} ({binding.path.template})"
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": schema,
        "description": description,
        "x-field-path": var,
    }


def _operation(schemas: _Schemas, binding: Binding, operation_id: str) -> dict[str, Any]:
    method = binding.method
    cls = binding.endpoint_class
    op: dict[str, Any] = {
        "operationId": operation_id,
        "tags": [binding.service],
        "summary": f"{binding.service}.{method.name}",
        "x-rate-limit-class": cls,
        "x-grpc-method": binding.grpc_path,
        "parameters": [
            *(_path_parameter(schemas, binding, *p) for p in binding.path.openapi_parameters),
            *(
                _query_parameters(schemas, method.input_type, binding)
                if binding.body != "*"
                else []
            ),
        ],
        "responses": {
            "200": {
                "description": "OK",
                "content": {"application/json": {"schema": schemas.message(method.output_type)}},
            },
            **{
                status: {
                    "description": text,
                    "content": {"application/json": {"schema": schemas.ref("Error")}},
                }
                for status, text in _ERROR_STATUSES.items()
            },
        },
    }
    if cls in OPERATOR_CLASSES:
        op["security"] = [{"operatorAuth": []}]
        op["responses"]["401"] = {
            "description": "Missing, invalid or expired operator token, or a player's token",
            "content": {"application/json": {"schema": schemas.ref("Error")}},
        }
        op["responses"]["403"] = {
            "description": "Network not served, a role the operator lacks, or another "
            "operator named in the request",
            "content": {"application/json": {"schema": schemas.ref("Error")}},
        }
    elif cls not in UNAUTHENTICATED_CLASSES:
        op["security"] = [{"bearerAuth": []}]
        op["responses"]["401"] = {
            "description": "Missing, invalid, expired or revoked access token",
            "content": {"application/json": {"schema": schemas.ref("Error")}},
        }
        op["responses"]["403"] = {
            "description": "Not this player's resource",
            "content": {"application/json": {"schema": schemas.ref("Error")}},
        }
    else:
        op["security"] = []
    if binding.body:
        if binding.body == "*":
            schema = schemas.message(method.input_type)
        else:
            schema = schemas.field(method.input_type.fields_by_name[binding.body])
        op["requestBody"] = {
            "required": False,
            "content": {"application/json": {"schema": schema}},
        }
    if not op["parameters"]:
        del op["parameters"]
    return op


def openapi_document(bindings: Sequence[Binding], title: str) -> bytes:
    schemas = _Schemas()
    schemas.components["Error"] = ERROR_SCHEMA
    paths: dict[str, dict[str, Any]] = {}
    counts: dict[str, int] = {}
    for b in bindings:
        base = f"{b.service.rsplit('.', 1)[-1]}_{b.method.name}"
        n = counts.get(base, 0)
        counts[base] = n + 1
        operation_id = base if n == 0 else f"{base}_{n}"
        paths.setdefault(b.path.openapi_path, {})[b.http_method.lower()] = _operation(
            schemas, b, operation_id
        )
    document = {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": "v1",
            "description": "Generated from the google.api.http annotations of the platform's "
            "gRPC contracts; JSON follows the proto3 JSON mapping (lowerCamelCase).",
        },
        "paths": paths,
        "components": {
            "schemas": schemas.components,
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "A player's access token from identity (Login, Refresh)",
                },
                "operatorAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "A back-office operator's access token from the "
                    "operator's SSO (admin listener only)",
                },
            },
        },
    }
    return json.dumps(document, separators=(",", ":")).encode()
