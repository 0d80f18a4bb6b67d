"""The OpenAPI document a running edge serves, generated from the same descriptors as its
routes: what client teams read (the fuzzing test exercises it as a whole)."""

from __future__ import annotations

from typing import Any

import httpx

from edge.process import EdgeProcess
from tests.edge.conftest import BACK_OFFICE


async def _document(http: httpx.AsyncClient) -> dict[str, Any]:
    reply = await http.get("/openapi.json")
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/json"
    return reply.json()  # type: ignore[no-any-return]


async def test_every_http_binding_is_an_operation(http: httpx.AsyncClient) -> None:
    doc = await _document(http)
    assert doc["openapi"] == "3.1.0"
    operations = {(method.upper(), path) for path, item in doc["paths"].items() for method in item}
    assert operations == {
        ("POST", "/v1/echoes"),
        ("GET", "/v1/echoes"),
        ("POST", "/v1/echoes:relay"),
        ("GET", "/v1/ping"),
        ("POST", "/v1/ping"),
        ("POST", "/v1/mirrors/{name}:mirror"),
        ("GET", "/v1/mirrors/{name}"),
        ("PUT", "/v1/mirrors/{note_title}/note"),
        ("GET", "/v1/players/{player_id}/accounts/{currency_code}/balance"),
        ("GET", "/v1/players/{player_id}/transactions"),
    }
    ids = [op["operationId"] for item in doc["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))


async def test_parameters_bodies_and_rate_limit_classes(http: httpx.AsyncClient) -> None:
    doc = await _document(http)
    mirror_get = doc["paths"]["/v1/mirrors/{name}"]["get"]
    params = {p["name"]: p for p in mirror_get["parameters"]}
    assert params["name"]["in"] == "path"
    assert params["name"]["x-field-path"] == "name"
    # Unbound fields are query parameters, nested ones dotted, in lowerCamelCase.
    assert {"note.title", "note.text", "tags", "amountMinor", "kind", "at"} <= set(params)
    assert params["tags"]["schema"] == {"type": "array", "items": {"type": "string"}}
    assert mirror_get["x-rate-limit-class"] == "CATALOG"
    assert mirror_get["security"] == []
    body_field = doc["paths"]["/v1/mirrors/{name}:mirror"]["post"]["requestBody"]
    assert body_field["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/casino.echo.v1.MirrorNote"
    }
    assert "parameters" not in doc["paths"]["/v1/echoes"]["post"]  # body "*": all in the body


async def test_authenticated_operations_need_a_bearer_token(http: httpx.AsyncClient) -> None:
    doc = await _document(http)
    balance = doc["paths"]["/v1/players/{player_id}/accounts/{currency_code}/balance"]["get"]
    assert balance["security"] == [{"bearerAuth": []}]
    assert balance["x-rate-limit-class"] == "PLAYER_WALLET"
    assert "401" in balance["responses"]
    scheme = doc["components"]["securitySchemes"]["bearerAuth"]
    assert {k: scheme[k] for k in ("type", "scheme", "bearerFormat")} == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
    }


async def test_admin_operations_need_an_operator_token(edge: EdgeProcess) -> None:
    async with httpx.AsyncClient(base_url=edge.url("admin"), timeout=10) as admin:
        doc = (await admin.get("/openapi.json", headers=BACK_OFFICE)).json()
    reconcile = doc["paths"]["/v1/admin/wallet:reconcile"]["post"]
    assert reconcile["x-rate-limit-class"] == "ADMIN"
    assert reconcile["security"] == [{"operatorAuth": []}]
    assert "player" in reconcile["responses"]["401"]["description"]
    assert doc["components"]["securitySchemes"]["operatorAuth"]["scheme"] == "bearer"


async def test_schemas_follow_the_proto3_json_mapping(http: httpx.AsyncClient) -> None:
    schemas = (await _document(http))["components"]["schemas"]
    request = schemas["casino.echo.v1.MirrorRequest"]
    props = request["properties"]
    assert props["amountMinor"]["type"] == "string"  # int64 as a decimal string
    assert props["amountMinor"]["format"] == "int64"
    assert props["at"] == {"type": "string", "format": "date-time"}  # Timestamp
    assert props["kind"] == {"$ref": "#/components/schemas/casino.echo.v1.MirrorKind"}
    assert schemas["casino.echo.v1.MirrorKind"]["enum"] == [
        "MIRROR_KIND_UNSPECIFIED",
        "MIRROR_KIND_PLAIN",
        "MIRROR_KIND_FANCY",
    ]
    assert props["counts"] == {"type": "array", "items": {"type": "integer", "format": "int32"}}
    assert request["additionalProperties"] is False  # unknown fields are refused
    # field_behavior REQUIRED becomes required.
    assert schemas["casino.echo.v1.EchoRequest"]["required"] == ["requestId", "message"]
    # Nested messages are components of their own.
    record = schemas["casino.echo.v1.EchoResponse"]["properties"]["record"]
    assert record == {"$ref": "#/components/schemas/casino.echo.v1.EchoRecord"}
    assert schemas["Error"]["required"] == ["code", "message", "reason", "metadata", "requestId"]
