"""Simulator of the national self-exclusion register (GAMSTOP-style): see `server`."""

from simulators.self_exclusion_register.server import (
    Faults,
    Person,
    RegisterSimulator,
    Registry,
    serve,
)

__all__ = ["Faults", "Person", "RegisterSimulator", "Registry", "serve"]
