"""The edge locates the client and tells the upstream service, which believes only the
edge: real HTTP through a running edge to the real echo service, whose Echo reports the
country it was told."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from edge.process import EdgeProcess
from services.runtime.process import ServiceProcess
from tests.conftest import Pki
from tests.edge.conftest import TokenMinter, start_edge_for


def _geo_edge(
    folder: Path,
    pki: Pki,
    tokens: TokenMinter,
    edge_services: dict[str, ServiceProcess],
    table: str,
) -> EdgeProcess:
    """An edge whose CATALOG class requires a location, with `table` as its networks file,
    believing CF-IPCountry only from its trusted proxies (the public listener has none)."""
    networks = folder / "networks.csv"
    networks.write_text(table)
    geo = (
        f'[edge.geo]\nnetworks_file = "{networks}"\nrequired_for = ["CATALOG"]\n'
        'country_header = "CF-IPCountry"\n'
    )
    return start_edge_for(folder, pki, tokens, edge_services, extra=geo)


@pytest.fixture(scope="module")
def located_edge(
    tmp_path_factory: pytest.TempPathFactory,
    pki: Pki,
    tokens: TokenMinter,
    edge_services: dict[str, ServiceProcess],
) -> Iterator[EdgeProcess]:
    table = "# the operator's geo table: loopback is Malta here\n127.0.0.0/8,MT\n"
    folder = tmp_path_factory.mktemp("geo-edge")
    process = _geo_edge(folder, pki, tokens, edge_services, table)
    yield process
    process.terminate()


@pytest.fixture(scope="module")
def edge_requiring_an_unknown_location(
    tmp_path_factory: pytest.TempPathFactory,
    pki: Pki,
    tokens: TokenMinter,
    edge_services: dict[str, ServiceProcess],
) -> Iterator[EdgeProcess]:
    table = "198.51.100.0/24,US\n"  # loopback is in no row
    folder = tmp_path_factory.mktemp("geo-required-edge")
    process = _geo_edge(folder, pki, tokens, edge_services, table)
    yield process
    process.terminate()


async def test_the_upstream_hears_where_the_edge_located_the_client(
    located_edge: EdgeProcess,
) -> None:
    async with httpx.AsyncClient(base_url=located_edge.url(), timeout=10) as http:
        reply = await http.post(
            "/v1/echoes", json={"requestId": uuid.uuid4().hex, "message": "where am I"}
        )
        assert reply.status_code == 200, reply.text
        assert reply.json()["clientCountry"] == "MT"
        # A country header from a client that is not a trusted proxy changes nothing.
        claimed = await http.post(
            "/v1/echoes",
            json={"requestId": uuid.uuid4().hex, "message": "I am in GB"},
            headers={"CF-IPCountry": "GB"},
        )
        assert claimed.json()["clientCountry"] == "MT"


async def test_without_geo_data_no_country_is_claimed_for_the_client(
    edge: EdgeProcess,
) -> None:
    async with httpx.AsyncClient(base_url=edge.url(), timeout=10) as http:
        reply = await http.post(
            "/v1/echoes",
            json={"requestId": uuid.uuid4().hex, "message": "m"},
            headers={"CF-IPCountry": "GB"},
        )
    assert reply.status_code == 200, reply.text
    assert reply.json().get("clientCountry", "") == ""


async def test_a_class_that_requires_a_location_refuses_an_unlocated_client(
    edge_requiring_an_unknown_location: EdgeProcess,
) -> None:
    async with httpx.AsyncClient(
        base_url=edge_requiring_an_unknown_location.url(), timeout=10
    ) as http:
        refused = await http.post(
            "/v1/echoes",
            json={"requestId": uuid.uuid4().hex, "message": "m"},
            headers={"CF-IPCountry": "GB"},  # a client's own claim does not place it
        )
    assert refused.status_code == 403, refused.text
    assert refused.json()["reason"] == "LOCATION_UNKNOWN"
