"""The login lockout under parallel guessing, and what an address is: many guesses sent at
once are checked no more often than the threshold allows, and an IPv6 client is its /64."""

from __future__ import annotations

import asyncio
import random

import grpc
import pytest

from casino.identity.v1 import identity_pb2 as pb
from casino.identity.v1 import identity_pb2_grpc
from services.runtime.call import address_scope
from tests.identity.conftest import PASSWORD, error_info, registration, unique_email

Stub = identity_pb2_grpc.IdentityServiceStub
# The test identity's lockout thresholds (tests/identity/conftest.py).
ACCOUNT_THRESHOLD, ADDRESS_THRESHOLD = 3, 6


def _from(address: str) -> tuple[tuple[str, str], ...]:
    return (("x-casino-client-ip", address),)


def _fresh_64() -> str:
    """A /64 of the documentation range no earlier run used (counts outlive a test)."""
    return f"2001:db8:{random.getrandbits(16):x}:{random.getrandbits(16):x}"


async def _outcomes(calls: list[grpc.aio.UnaryUnaryCall]) -> list[str]:
    """How each call, all of which must fail, failed: its reason, and the scope of a lock."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    outcomes = []
    for result in results:
        assert isinstance(result, grpc.aio.AioRpcError), result
        reason, metadata = error_info(result)
        outcomes.append(f"{reason} {metadata['scope']}" if "scope" in metadata else reason)
    return outcomes


@pytest.mark.parametrize(
    ("address", "scope"),
    [
        ("198.51.100.7", "198.51.100.7"),
        ("::ffff:198.51.100.7", "198.51.100.7"),
        ("2001:db8:1:2::a", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("2001:db8:1:3::a", "2001:db8:1:3::/64"),
        ("not-an-address", "not-an-address"),
    ],
)
def test_an_ipv6_address_counts_against_its_64_and_ipv4_against_itself(
    address: str, scope: str
) -> None:
    assert address_scope(address) == scope


async def test_parallel_wrong_guesses_are_checked_no_more_often_than_the_threshold(
    edge: Stub,
) -> None:
    player = await edge.Register(registration())
    email = player.player.email
    # Twelve guesses at once: each is counted before its password is checked, so only the
    # first three are checked (the third locks the account) and the rest are refused.
    reasons = await _outcomes(
        [
            edge.Login(pb.LoginRequest(email=email, password=f"guess-{i:04d}-wrong"))
            for i in range(12)
        ]
    )
    assert reasons.count("INVALID_CREDENTIALS") == ACCOUNT_THRESHOLD
    assert reasons.count("ACCOUNT_LOCKED account") == 12 - ACCOUNT_THRESHOLD
    # The right password does not get past the lock either.
    locked = await _outcomes([edge.Login(pb.LoginRequest(email=email, password=PASSWORD))])
    assert locked == ["ACCOUNT_LOCKED account"]


async def test_parallel_guesses_from_addresses_rotated_within_one_64_share_its_lockout(
    edge: Stub,
) -> None:
    network = _fresh_64()
    # Each guess from another address of one /64, each at another email (below every
    # account's threshold): one client, whose sixth guess locks it.
    reasons = await _outcomes(
        [
            edge.Login(
                pb.LoginRequest(email=unique_email("spray"), password="wrong" * 3),
                metadata=_from(f"{network}::{random.getrandbits(16):x}:{i + 1:x}"),
            )
            for i in range(15)
        ]
    )
    assert reasons.count("INVALID_CREDENTIALS") == ADDRESS_THRESHOLD
    assert reasons.count("ACCOUNT_LOCKED address") == 15 - ADDRESS_THRESHOLD
    request = registration()
    await edge.Register(request)
    refused = await _outcomes(
        [
            edge.Login(
                pb.LoginRequest(email=request.email, password=PASSWORD),
                metadata=_from(f"{network}::beef"),
            )
        ]
    )
    assert refused == ["ACCOUNT_LOCKED address"]
    # The next /64 is another client.
    other = f"{_fresh_64()}::1"
    reply = await edge.Login(
        pb.LoginRequest(email=request.email, password=PASSWORD), metadata=_from(other)
    )
    assert reply.session.access_token
