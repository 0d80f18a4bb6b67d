"""What a draw asks for, and computing it from a round's byte stream (pure).

A round's draws all read one stream front to back: draw 0's specs first, in order, then
draw 1's, and so on. So replay recomputes every draw from position 0, and a live draw
resumes from the stream position recorded after the previous draw.

Streams, by generator version:

* ``drbg/chacha20-v1``: ``RoundStream(round_seed, round_context(game_id, game_inputs))``.
* ``fair/hmac-sha256-v1``: ``FairStream(server_seed, client_seed, nonce)`` (the published
  Stake-style scheme; the game inputs are not bound in, as a player's verifier cannot know
  our encoding of them).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from services.rng import drbg, fair
from services.rng.sampling import ByteStream
from services.rng.versions import SAMPLERS, Sampler

INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
MAX_VALUES_PER_DRAW = 10_000
MAX_SHUFFLE = 10_000


GENERATOR_VERSIONS = (drbg.DRBG_VERSION, fair.FAIR_VERSION)


class UnknownVersion(ValueError):
    def __init__(self, version: str) -> None:
        super().__init__(f"algorithm version {version!r} is not implemented by this build")
        self.version = version


@dataclass(frozen=True)
class IntegerSpec:
    low: int
    high: int
    count: int

    def to_json(self) -> dict[str, Any]:
        return {"integers": {"low": self.low, "high": self.high, "count": self.count}}


@dataclass(frozen=True)
class ShuffleSpec:
    size: int

    def to_json(self) -> dict[str, Any]:
        return {"shuffle": {"size": self.size}}


Spec = IntegerSpec | ShuffleSpec


def spec_from_json(data: dict[str, Any]) -> Spec:
    if "integers" in data:
        d = data["integers"]
        return validate(IntegerSpec(int(d["low"]), int(d["high"]), int(d["count"])))
    if "shuffle" in data:
        return validate(ShuffleSpec(int(data["shuffle"]["size"])))
    raise ValueError(f"unknown draw spec {data!r}")


def validate(spec: Spec) -> Spec:
    """Raise ValueError with a message a caller can act on."""
    if isinstance(spec, IntegerSpec):
        if not (INT64_MIN <= spec.low <= INT64_MAX and INT64_MIN <= spec.high <= INT64_MAX):
            raise ValueError("low and high must be int64")
        if spec.high < spec.low:
            raise ValueError(f"empty range [{spec.low}, {spec.high}]")
        if not 1 <= spec.count <= MAX_VALUES_PER_DRAW:
            raise ValueError(f"count must be in [1, {MAX_VALUES_PER_DRAW}]")
    elif not 1 <= spec.size <= MAX_SHUFFLE:
        raise ValueError(f"shuffle size must be in [1, {MAX_SHUFFLE}]")
    return spec


def compute(stream: ByteStream, sampler: Sampler, specs: Sequence[Spec]) -> list[list[int]]:
    out: list[list[int]] = []
    for spec in specs:
        if isinstance(spec, IntegerSpec):
            n = spec.high - spec.low + 1
            out.append([spec.low + sampler.uniform_int(stream, n) for _ in range(spec.count)])
        else:
            out.append(sampler.shuffle(stream, range(spec.size)))
    return out


def sampler(version: str) -> Sampler:
    try:
        return SAMPLERS[version]
    except KeyError:
        raise UnknownVersion(version) from None


def round_context(game_id: str, game_inputs: bytes) -> bytes:
    """Unambiguous encoding of the game inputs bound into a round's stream."""
    gid = game_id.encode()
    return (
        b"casino-rng/round-context/v1\x00"
        + struct.pack(">I", len(gid))
        + gid
        + struct.pack(">I", len(game_inputs))
        + game_inputs
    )


@dataclass(frozen=True)
class StreamSource:
    """Everything needed to rebuild a round's stream."""

    generator: str
    seed: bytes  # the round seed, or the server seed of a provably-fair round
    game_id: str = ""
    game_inputs: bytes = b""
    client_seed: str = ""
    nonce: int = 0

    def open(self, position: int = 0) -> drbg.RoundStream | fair.FairStream:
        stream: drbg.RoundStream | fair.FairStream
        if self.generator == drbg.DRBG_VERSION:
            stream = drbg.RoundStream(self.seed, round_context(self.game_id, self.game_inputs))
        elif self.generator == fair.FAIR_VERSION:
            stream = fair.FairStream(self.seed, self.client_seed, self.nonce)
        else:
            raise UnknownVersion(self.generator)
        if position:
            stream.read(position)
        return stream


def replay(
    source: StreamSource, sampling_version: str, draws: Sequence[Sequence[Spec]]
) -> list[list[list[int]]]:
    """Recompute every draw of a round, in order, from the start of its stream."""
    stream = source.open()
    chosen = sampler(sampling_version)
    return [compute(stream, chosen, specs) for specs in draws]
