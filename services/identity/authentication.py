"""Login, refresh and logout: credentials in, session tokens out.

A self-excluded player can still log in (UKGC practice: they must be able to see their
balance and withdraw it; their account is closed to gambling, not to them). Compliance
refuses their deposits, bets and game launches at CheckAction; the PlayerExcluded event ends
the sessions they had when the exclusion started."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from services.identity import store
from services.identity.lockout import LoginThrottle
from services.identity.passwords import Passwords
from services.identity.registration import email_key
from services.identity.sessions import RefreshToken, RefreshTokenInvalid, Sessions, Standing
from services.identity.tokens import AccessToken, TokenSigner
from services.runtime.call import PlayerMismatch
from services.runtime.errors import Code, DomainError, InvalidArgument

# Tokens signed for one refresh or login before giving up (each further one only after the
# player's cutoff moved again between signing and checking).
_ISSUE_ATTEMPTS = 3


class InvalidCredentials(DomainError):
    code = Code.UNAUTHENTICATED

    def __init__(self) -> None:
        # One message for unknown email and wrong password: no account enumeration.
        super().__init__("INVALID_CREDENTIALS", "email or password is incorrect")


class SessionRevoked(DomainError):
    code = Code.UNAUTHENTICATED

    def __init__(self) -> None:
        # The credentials were right, but a logout of every session or a self-exclusion
        # ended the new session as it was opened.
        super().__init__(
            "TOKEN_REVOKED", "the session was ended as it was being opened; log in again"
        )


@dataclass(frozen=True)
class IssuedSession:
    access: AccessToken
    refresh: RefreshToken


class Authenticator:
    def __init__(
        self,
        engine: AsyncEngine,
        passwords: Passwords,
        throttle: LoginThrottle,
        sessions: Sessions,
        signer: TokenSigner,
    ) -> None:
        self._engine = engine
        self._passwords = passwords
        self._throttle = throttle
        self._sessions = sessions
        self._signer = signer

    async def login(self, email: str, password: str, address: str | None) -> IssuedSession:
        if not email.strip():
            raise InvalidArgument("email", "email is required")
        if not password:
            raise InvalidArgument("password", "password is required")
        key = email_key(email)
        # Counted as a failure before the password is looked at (refused while locked), so
        # guesses sent at once cannot all pass the lockout before any of them is counted.
        attempt = await self._throttle.reserve(key, address)
        try:
            async with self._engine.begin() as conn:
                player = await store.by_email_key(conn, key)
            if player is not None and player.status != "active":
                player = None  # a registration still being finished cannot log in yet
            # With no account the dummy hash is checked: an unknown email costs the same time
            # as a wrong password.
            verified = await self._passwords.verify(
                player.password_hash if player is not None else None, password
            )
        except Exception:
            # A server fault is no failed login of the player's.
            await self._throttle.abandoned(attempt)
            raise
        if player is None or not verified:
            raise InvalidCredentials()  # the reserved attempt stays counted
        await self._throttle.succeeded(attempt)
        if self._passwords.needs_rehash(player.password_hash):
            rehashed = await self._passwords.hash(password)
            async with self._engine.begin() as conn:
                await store.replace_password_hash(conn, player.player_id, rehashed)
        return await self._issue(await self._sessions.open(player.player_id), SessionRevoked())

    async def refresh(self, refresh_token: str) -> IssuedSession:
        if not refresh_token:
            raise InvalidArgument("refresh_token", "refresh_token is required")
        return await self._issue(await self._sessions.rotate(refresh_token), RefreshTokenInvalid())

    async def logout(self, authenticated_player: str | None, refresh_token: str) -> int:
        """Ends every session of the player: the one the edge authenticated, or the owner of
        the refresh token. Returns how many session families were ended."""
        player = authenticated_player
        if refresh_token:
            owner = await self._sessions.owner(refresh_token)
            if owner is None:
                if player is None:
                    raise RefreshTokenInvalid()
            elif player is not None and owner[0] != player:
                raise PlayerMismatch(owner[0], "/casino.identity.v1.IdentityService/Logout")
            else:
                player = owner[0]
        if player is None:
            raise InvalidArgument("refresh_token", "refresh_token is required")
        return await self._sessions.revoke_all(player)

    async def _issue(self, refresh: RefreshToken, ended: DomainError) -> IssuedSession:
        """An access token for `refresh`'s session, or `ended` raised if the session was
        revoked (logout, self-exclusion, reuse) before the token could be answered.

        Signed first, checked after: a revocation before the check has ended the session and
        nothing is answered; one after it sets a cutoff later than the token's iat, so the
        edge refuses the token from then on."""
        for _ in range(_ISSUE_ATTEMPTS):
            issued_at = await self._sessions.issue_second(refresh.player_id)
            access = self._signer.issue(refresh.player_id, refresh.session_id, issued_at)
            standing = await self._sessions.standing(
                refresh.player_id, refresh.session_id, issued_at
            )
            if standing is Standing.LIVE:
                return IssuedSession(access, refresh)
            if standing is Standing.ENDED:
                raise ended
            # STALE: the session lives but the player's cutoff is past the token (another
            # family's refresh token was reused meanwhile, or the wait ended early): signed
            # again once the cutoff has passed.
        raise ended
