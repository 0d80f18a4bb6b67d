"""The algorithm registry: every generator and sampling version this build implements, with
the SHA-256 of the source file implementing it (what a test lab certifies).

A round records the versions it opened under and is always drawn and replayed with exactly
those; the settings choose which versions *new* rounds open under. Never change the
behaviour of a registered version: add a new version instead.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from services.rng import drbg, fair, sampling, sampling_v2
from services.rng.sampling import ByteStream

ROOT = Path(__file__).resolve().parents[2]

GENERATOR = "generator"
SAMPLING = "sampling"


@dataclass(frozen=True)
class Sampler:
    version: str
    module: ModuleType
    uniform_int: Callable[[ByteStream, int], int]
    shuffle: Callable[[ByteStream, Sequence[Any]], list[Any]]


@dataclass(frozen=True)
class Implementation:
    version: str
    kind: str
    module: ModuleType

    @property
    def source_file(self) -> str:
        return str(Path(str(self.module.__file__)).resolve().relative_to(ROOT))

    @property
    def source_sha256(self) -> str:
        return _file_sha256(str(Path(str(self.module.__file__)).resolve()))


@functools.cache
def _file_sha256(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


SAMPLERS: dict[str, Sampler] = {
    sampling.SAMPLING_VERSION: Sampler(
        sampling.SAMPLING_VERSION, sampling, sampling.uniform_int, sampling.shuffle
    ),
    sampling_v2.SAMPLING_V2_VERSION: Sampler(
        sampling_v2.SAMPLING_V2_VERSION, sampling_v2, sampling_v2.uniform_int, sampling_v2.shuffle
    ),
}

GENERATORS: dict[str, ModuleType] = {
    drbg.DRBG_VERSION: drbg,
    fair.FAIR_VERSION: fair,
}


def registry() -> list[Implementation]:
    return [Implementation(v, GENERATOR, m) for v, m in GENERATORS.items()] + [
        Implementation(v, SAMPLING, s.module) for v, s in SAMPLERS.items()
    ]
