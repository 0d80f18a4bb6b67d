"""Start-up self-test (known answers) and the health state that gates every draw.

Known-answer tests pin the generator (RFC 8439 ChaCha20 keystream through the DRBG's fast
key erasure), the round stream, both sampling versions and the provably-fair stream. The
live DRBG then runs its continuous repetition test on every output. Any failure makes the
service NOT_SERVING and every draw is refused: games become unavailable rather than falling
back to anything weaker.
"""

from __future__ import annotations

import hashlib
import hmac

from services.rng import drbg, fair, sampling, sampling_v2

_DRBG_KAT = "da41597c5157488d7724e03fb8d84a37"
_ROUND_KAT = "5ed88105795c90d9d0eb1ca46c393363a91db7714c63d176e2001b1ed86e29a5"


class _Bytes:
    def __init__(self, data: bytes) -> None:
        self._data, self._pos = data, 0

    def read(self, n: int) -> bytes:
        out = self._data[self._pos : self._pos + n]
        self._pos += n
        return out


def known_answer_failures() -> list[str]:
    failures = []
    if drbg.ChaChaDrbg.from_seed(bytes(32)).generate(16).hex() != _DRBG_KAT:
        failures.append("drbg known answer")
    if drbg.RoundStream(bytes(range(32)), b"dice|target=50").read(32).hex() != _ROUND_KAT:
        failures.append("round stream known answer")
    if sampling.uniform_int(_Bytes(bytes([0xDE, 0xFF, 0x25])), 37) != 0:
        failures.append("sampling v1 rejection known answer")
    if sampling_v2.uniform_int(_Bytes(bytes([0xFF, 0x24])), 37) != 36:
        failures.append("sampling v2 rejection known answer")
    if sampling.shuffle(_Bytes(bytes([0, 0])), [0, 1, 2]) != [1, 2, 0]:
        failures.append("shuffle known answer")
    expected_fair = hmac.new(bytes(32), b"c:0:0", hashlib.sha256).digest()
    if fair.FairStream(bytes(32), "c", 0).read(32) != expected_fair:
        failures.append("provably-fair stream known answer")
    return failures


class RngHealth:
    """The live generator and whether the RNG may draw."""

    def __init__(self, generator: drbg.ChaChaDrbg | None = None, *, force_fail: str = "") -> None:
        self.failure: str | None = None
        failures = known_answer_failures()
        if force_fail:
            failures.append(force_fail)
        try:
            self.generator = generator or drbg.ChaChaDrbg()
            first, second = self.generator.generate(32), self.generator.generate(32)
            if first == second:
                failures.append("continuous test: repeated output block")
        except drbg.DrbgFailure as exc:
            failures.append(str(exc))
        if failures:
            self.failure = "self-test failed: " + "; ".join(failures)

    def generate(self, n: int) -> bytes:
        """Fresh random bytes, or DrbgFailure (and the RNG stays unhealthy)."""
        if self.failure is not None:
            raise drbg.DrbgFailure(self.failure)
        try:
            return self.generator.generate(n)
        except drbg.DrbgFailure as exc:
            self.failure = str(exc)
            raise

    async def probe(self) -> None:
        """Readiness probe: raises while unhealthy, so the service reports NOT_SERVING."""
        if self.failure is not None:
            raise RuntimeError(self.failure)
        self.generate(0)  # advances the generator between requests; runs the repetition test
