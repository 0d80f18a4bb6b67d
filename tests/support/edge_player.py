"""Calls as the edge makes them: after verifying a player's access token, the edge names
that player in x-casino-player-id. Test stubs speaking as `edge` wrap their stub in this so
each call names the request's own player_id, as a real player's call through the edge does."""

from __future__ import annotations

from typing import Any

from services.runtime.call import PLAYER_METADATA


class AsEdgePlayer:
    def __init__(self, stub: Any, player_id: str | None = None) -> None:
        """`player_id` None: each call is made for the player its request names."""
        self._stub = stub
        self._player_id = player_id

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._stub, name)

        def call(request: Any, **kwargs: Any) -> Any:
            player = self._player_id or getattr(request, "player_id", "")
            metadata = tuple(kwargs.pop("metadata", None) or ())
            if player:
                metadata += ((PLAYER_METADATA, player),)
            return method(request, metadata=metadata, **kwargs)

        return call
