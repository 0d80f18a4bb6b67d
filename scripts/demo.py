"""The platform's main job, driven over its real contracts with real service identities.

A player's app through the HTTP/JSON edge (register, log in, read the balance with a
token, then, verified and funded, play dice and a slot: every round checked by compliance,
staked and paid in the wallet, drawn by the RNG, archived, and replayed by the back office),
the money path as the wallet serves it (account, deposit, bet, win, a retried request, a
refusal, a rollback tombstone, reconciliation), compliance's verdicts (registration against
the national register, KYC, the slot stake cap, a time-out, an AML case opened from the
wallet's events, the verified verdict log), then the chassis through the echo example:
an idempotent replay, a relayed call carrying deadline and trace to a second hop, a paged
listing, and a caller the contract does not allow.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from pathlib import Path

import grpc
import httpx
from google.type.date_pb2 import Date

from casino.common.v1.money_pb2 import Money
from casino.compliance.v1 import compliance_pb2, compliance_pb2_grpc
from casino.echo.v1 import echo_pb2, echo_pb2_grpc
from casino.games.v1 import games_pb2, games_pb2_grpc
from casino.wallet.v1 import wallet_pb2, wallet_pb2_grpc
from services.runtime.call import PLAYER_METADATA
from services.runtime.client import secure_channel
from services.runtime.config import TLSConfig
from services.runtime.status import error_info

ECHO = "127.0.0.1:50100"
WALLET = "127.0.0.1:50110"
COMPLIANCE = "127.0.0.1:50120"
GAMES = "127.0.0.1:50160"
EDGE = "http://127.0.0.1:8080"


def _tls(root: Path, identity: str) -> TLSConfig:
    pki = root / ".dev" / "pki"
    return TLSConfig(pki / "ca.crt", pki / f"{identity}.crt", pki / f"{identity}.key")


def _eur(amount: int) -> Money:
    return Money(amount_minor=amount, currency_code="EUR")


async def wallet_job(root: Path) -> None:
    player = f"player-{uuid.uuid4().hex[:8]}"

    def stub(identity: str) -> wallet_pb2_grpc.WalletServiceStub:
        return wallet_pb2_grpc.WalletServiceStub(
            secure_channel(WALLET, _tls(root, identity), "wallet")
        )

    identity, payments, games = stub("identity"), stub("payments"), stub("games")
    backoffice = stub("backoffice")
    await identity.OpenAccount(wallet_pb2.OpenAccountRequest(player_id=player, currency_code="EUR"))
    print(f"\nWallet: opened {player} EUR")
    deposit = wallet_pb2.DepositRequest(
        request_id=f"psp-{uuid.uuid4().hex}", player_id=player, amount=_eur(10_000)
    )
    balance = (await payments.Deposit(deposit)).posting.balance
    print(
        f"deposit 100.00       -> posted {balance.posted_minor} available "
        f"{balance.available_minor} seq {balance.sequence}"
    )
    again = (await payments.Deposit(deposit)).posting
    print(
        f"PSP retries it       -> replayed={again.replayed} posted "
        f"{again.balance.posted_minor} (credited once)"
    )
    bet = wallet_pb2.PlaceBetRequest(
        request_id=f"bet-{uuid.uuid4().hex}",
        player_id=player,
        amount=_eur(2_500),
        round_id=f"round-{uuid.uuid4().hex}",
        game_id="dice",
        provider="inhouse",
    )
    balance = (await games.PlaceBet(bet)).posting.balance
    print(f"bet 25.00            -> posted {balance.posted_minor}")
    win = wallet_pb2.SettleWinRequest(
        request_id=f"win-{uuid.uuid4().hex}",
        player_id=player,
        amount=_eur(6_000),
        round_id=bet.round_id,
        bet_request_id=bet.request_id,
    )
    balance = (await games.SettleWin(win)).posting.balance
    print(f"win 60.00            -> posted {balance.posted_minor}")
    try:
        await games.PlaceBet(
            wallet_pb2.PlaceBetRequest(
                request_id=f"bet-{uuid.uuid4().hex}",
                player_id=player,
                amount=_eur(1_000_000),
                round_id="r",
                game_id="dice",
                provider="inhouse",
            )
        )
    except grpc.aio.AioRpcError as exc:
        info = error_info(exc)
        print(
            f"bet 10000.00         -> {exc.code().name} {info.reason if info else ''} "
            f"(available {info.metadata['available_minor'] if info else '?'})"
        )
    ghost = f"bet-{uuid.uuid4().hex}"
    undone = (
        await games.RollbackBet(
            wallet_pb2.RollbackBetRequest(
                request_id=f"rb-{uuid.uuid4().hex}",
                player_id=player,
                currency_code="EUR",
                bet_request_id=ghost,
            )
        )
    ).posting
    print(f"rollback unseen bet  -> nothing_to_undo={undone.nothing_to_undo}")
    try:
        await games.PlaceBet(
            wallet_pb2.PlaceBetRequest(
                request_id=ghost,
                player_id=player,
                amount=_eur(100),
                round_id="r2",
                game_id="dice",
                provider="inhouse",
            )
        )
    except grpc.aio.AioRpcError as exc:
        print(f"that bet arrives     -> {exc.code().name} {error_info(exc).reason}")  # type: ignore[union-attr]
    report = await backoffice.Reconcile(
        wallet_pb2.ReconcileRequest(player_id=player, currency_code="EUR")
    )
    print(
        f"reconcile            -> {report.entries_checked} entries, "
        f"{len(report.discrepancies)} discrepancies"
    )


def _reasons(verdict: compliance_pb2.Verdict) -> str:
    decision = compliance_pb2.Decision.Name(verdict.decision).removeprefix("DECISION_")
    why = ", ".join(r.reason for r in verdict.reasons)
    return f"{decision}{f' ({why})' if why else ''} verdict #{verdict.sequence}"


async def compliance_job(root: Path) -> None:
    async with contextlib.AsyncExitStack() as channels:

        async def stub(identity: str) -> compliance_pb2_grpc.ComplianceServiceStub:
            channel = secure_channel(COMPLIANCE, _tls(root, identity), "compliance")
            await channels.enter_async_context(channel)
            return compliance_pb2_grpc.ComplianceServiceStub(channel)

        identity, games, edge = await stub("identity"), await stub("games"), await stub("edge")
        backoffice = await stub("backoffice")
        person = compliance_pb2.Person(
            given_name="Sam",
            family_name=f"Demo{uuid.uuid4().hex[:6]}",
            birth_date=Date(year=1990, month=5, day=17),
            email=f"{uuid.uuid4().hex[:8]}@x.org",
            postcode="N1 9GU",
            country_code="GB",
        )
        reply = await identity.CheckRegistration(
            compliance_pb2.CheckRegistrationRequest(person=person, request_country_code="GB")
        )
        print(f"\nCompliance:\nregister Sam               -> {_reasons(reply.verdict)}")
        excluded = compliance_pb2.Person(
            given_name="Ada",
            family_name="Excluded",
            birth_date=Date(year=1980, month=2, day=29),
            email="ada.excluded@example.org",
            postcode="SW1A 1AA",
            country_code="GB",
        )
        reply = await identity.CheckRegistration(
            compliance_pb2.CheckRegistrationRequest(person=excluded)
        )
        print(f"register Ada (on register) -> {_reasons(reply.verdict)}")
        player = f"player-{uuid.uuid4().hex[:8]}"
        await identity.EnrolPlayer(
            compliance_pb2.EnrolPlayerRequest(player_id=player, person=person)
        )

        async def bet(amount: int) -> str:
            verdict = (
                await games.CheckAction(
                    compliance_pb2.CheckActionRequest(
                        player_id=player,
                        action=compliance_pb2.ACTION_BET,
                        amount=Money(amount_minor=amount, currency_code="GBP"),
                        product=compliance_pb2.PRODUCT_SLOTS,
                        request_country_code="GB",
                        request_id=uuid.uuid4().hex,
                    )
                )
            ).verdict
            return _reasons(verdict)

        print(f"bet before KYC             -> {await bet(100)}")
        await backoffice.UpdateVerification(
            compliance_pb2.UpdateVerificationRequest(
                player_id=player,
                name_verified=True,
                address_verified=True,
                birth_date_verified=True,
                verified_by="demo-kyc",
            )
        )
        print(f"bet 1.00 after KYC         -> {await bet(100)}")
        print(f"slot spin 6.00             -> {await bet(600)}")
        # As the edge calls it on behalf of the authenticated player.
        await edge.Exclude(
            compliance_pb2.ExcludeRequest(player_id=player, timeout_hours=24),
            metadata=((PLAYER_METADATA, player),),
        )
        print(f"bet during a 24 h time-out -> {await bet(100)}")
        await aml_job(root, identity, backoffice, person)
        report = await backoffice.VerifyVerdictLog(compliance_pb2.VerifyVerdictLogRequest())
        print(
            f"verdict log                -> {report.rows_checked} verdicts, "
            f"{len(report.problems)} problems, checkpoint {Path(report.checkpoint).name}"
        )


async def aml_job(
    root: Path,
    identity: compliance_pb2_grpc.ComplianceServiceStub,
    backoffice: compliance_pb2_grpc.ComplianceServiceStub,
    person: compliance_pb2.Person,
) -> None:
    """Deposits through the wallet; compliance hears of them from the wallet's events on
    RabbitMQ, never on the money path, and opens an AML case."""
    player = f"player-{uuid.uuid4().hex[:8]}"
    aml_person = compliance_pb2.Person()
    aml_person.CopyFrom(person)
    aml_person.email = f"{uuid.uuid4().hex[:8]}@x.org"
    await identity.EnrolPlayer(
        compliance_pb2.EnrolPlayerRequest(player_id=player, person=aml_person)
    )
    async with secure_channel(WALLET, _tls(root, "identity"), "wallet") as opener:
        await wallet_pb2_grpc.WalletServiceStub(opener).OpenAccount(
            wallet_pb2.OpenAccountRequest(player_id=player, currency_code="EUR")
        )
    async with secure_channel(WALLET, _tls(root, "payments"), "wallet") as channel:
        payments = wallet_pb2_grpc.WalletServiceStub(channel)
        for card in ("card:4f1c", "card:9a07", "iban:77d2"):
            await payments.Deposit(
                wallet_pb2.DepositRequest(
                    request_id=f"psp-{uuid.uuid4().hex}",
                    player_id=player,
                    amount=_eur(5_000),
                    payment_instrument=card,
                )
            )
    print("3 deposits, 3 instruments  -> via the wallet; its events reach compliance")
    for _ in range(100):
        listed = await backoffice.ListAmlAlerts(
            compliance_pb2.ListAmlAlertsRequest(player_id=player)
        )
        if listed.alerts:
            alert = listed.alerts[0]
            print(f"AML case                   -> {alert.rule} {alert.action} {alert.name}")
            return
        await asyncio.sleep(0.1)
    print("AML case                   -> none after 10 s (is the relay or consumer down?)")


async def player_job() -> tuple[str, str]:
    """A player's app through the public HTTP/JSON edge: register (compliance checks, a wallet
    account opened), log in, read the balance with the access token. Returns the player and
    their access token."""
    email = f"sam.{uuid.uuid4().hex[:8]}@example.org"
    async with httpx.AsyncClient(base_url=EDGE, timeout=10) as http:
        registered = await http.post(
            "/v1/players:register",
            json={
                "requestId": uuid.uuid4().hex,
                "email": email,
                "password": "correct horse battery staple",
                "givenName": "Sam",
                "familyName": f"Edge{uuid.uuid4().hex[:6]}",
                "birthDate": {"year": 1990, "month": 5, "day": 17},
                "address": {
                    "line1": "1 Upper Street",
                    "city": "London",
                    "postcode": "N1 9GU",
                    "countryCode": "GB",
                },
            },
        )
        player = registered.json()["player"]["playerId"]
        print(
            f"\nEdge (HTTP/JSON):\nPOST /v1/players:register  -> {registered.status_code} {player}"
        )
        wrong = await http.post("/v1/sessions:login", json={"email": email, "password": "nope"})
        reason = wrong.json()["reason"]
        print(f"POST /v1/sessions:login    -> {wrong.status_code} {reason} (bad password)")
        login = await http.post(
            "/v1/sessions:login",
            json={"email": email, "password": "correct horse battery staple"},
        )
        token = login.json()["session"]["accessToken"]
        print(f"POST /v1/sessions:login    -> {login.status_code} EdDSA access token, 15 min")
        path = f"/v1/players/{player}/accounts/GBP/balance"
        anonymous = await http.get(path)
        print(f"GET balance, no token      -> {anonymous.status_code} {anonymous.json()['reason']}")
        balance = await http.get(path, headers={"Authorization": f"Bearer {token}"})
        body = balance.json()["balance"]
        posted = body.get("postedMinor", "0")  # proto3 JSON: int64 as a string, 0 omitted
        print(
            f"GET balance, with token    -> {balance.status_code} posted {posted}"
            f" {body['currencyCode']} (rate limit: {balance.headers.get('RateLimit-Policy')})"
        )
        other = await http.get(
            "/v1/players/player-someone-else/accounts/GBP/balance",
            headers={"Authorization": f"Bearer {token}"},
        )
        print(f"GET another's balance      -> {other.status_code} {other.json()['reason']}")
    return player, token


async def games_job(root: Path, player: str, token: str) -> None:
    """The platform's main job: the player, once verified and funded, plays the in-house games
    through the edge; every round passes compliance, moves money in the wallet, draws from the
    RNG and is archived; the back office replays one from its sealed seed."""
    async with (
        secure_channel(COMPLIANCE, _tls(root, "backoffice"), "compliance") as kyc,
        secure_channel(WALLET, _tls(root, "payments"), "wallet") as payments,
    ):
        await compliance_pb2_grpc.ComplianceServiceStub(kyc).UpdateVerification(
            compliance_pb2.UpdateVerificationRequest(
                player_id=player,
                name_verified=True,
                address_verified=True,
                birth_date_verified=True,
                verified_by="kyc-provider:demo",
            )
        )
        await wallet_pb2_grpc.WalletServiceStub(payments).Deposit(
            wallet_pb2.DepositRequest(
                request_id=uuid.uuid4().hex,
                player_id=player,
                amount=Money(amount_minor=5_000, currency_code="GBP"),
                payment_id="demo-payment",
            )
        )
    print("\nGames (HTTP/JSON, after KYC and a 50.00 GBP deposit):")
    auth = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=EDGE, timeout=10, headers=auth) as http:
        lobby = (await http.get("/v1/games")).json()["games"]
        print(
            "GET /v1/games              -> "
            + ", ".join(f"{g['gameId']} RTP {g['rtpPercent']}%" for g in lobby)
        )

        async def start(game: str, claimed: str = "GB") -> dict[str, object]:
            reply = await http.post(
                f"/v1/players/{player}/gameSessions",
                json={
                    "requestId": uuid.uuid4().hex,
                    "gameId": game,
                    "currencyCode": "GBP",
                    "requestCountryCode": claimed,
                },
            )
            return dict(reply.json()["session"])

        async def play(session: dict[str, object], bet: dict[str, object]) -> httpx.Response:
            return await http.post(
                f"/v1/players/{player}/gameSessions/{session['sessionId']}/rounds",
                json={"requestId": uuid.uuid4().hex, "bet": bet},
            )

        dice = await start("dice", claimed="IE")
        print(
            f"dice session, client says IE -> played from {dice['requestCountryCode']}"
            " (where the edge located the client)"
        )
        for target in (5000, 2500, 9000):
            bet = {
                "dice": {"stakeMinor": "100", "target": target, "direction": "DICE_DIRECTION_UNDER"}
            }
            r = (await play(dice, bet)).json()["round"]
            print(
                f"dice 1.00 under {target:<5}     -> roll {r['outcome']['dice'].get('roll', 0):>4}"
                f" paid {r['payout'].get('amountMinor', '0'):>3}, balance {r['balanceAfterMinor']}"
            )
        slot = await start("slot")
        spin = {"slot": {"lineBetMinor": "2"}}
        r = (await play(slot, spin)).json()["round"]
        print(f"slot 10 lines x 0.02       -> {' | '.join(r['outcome']['slot']['rows'])}")
        again = await play(slot, spin)
        print(
            f"slot again at once         -> {again.status_code} {again.json()['reason']}"
            f" (retry in {again.json()['metadata']['retry_after_ms']} ms)"
        )
        history = (await http.get(f"/v1/players/{player}/rounds", params={"pageSize": 10})).json()
        rounds = history["rounds"]
        print(f"GET round history          -> {len(rounds)} rounds, newest {rounds[0]['gameId']}")
    async with secure_channel(GAMES, _tls(root, "backoffice"), "games") as channel:
        replay = await games_pb2_grpc.GamesServiceStub(channel).ReplayRound(
            games_pb2.ReplayRoundRequest(player_id=player, round_id=rounds[-1]["roundId"])
        )
        print(
            f"back office replay         -> draws {list(replay.recomputed_draws)} from the sealed"
            f" seed, matches={replay.matches}"
        )


async def run(root: Path) -> None:
    player, token = await player_job()
    await games_job(root, player, token)
    await wallet_job(root)
    await compliance_job(root)
    key = uuid.uuid4().hex
    async with secure_channel(ECHO, _tls(root, "games"), "echo") as channel:
        echo = echo_pb2_grpc.EchoServiceStub(channel)
        first = await echo.Echo(echo_pb2.EchoRequest(request_id=key, message="hello"), timeout=3)
        print(
            f"\nEcho as games        -> {first.record.name} caller={first.caller} "
            f"deadline_left={first.deadline_remaining_ms}ms trace={first.trace_id}"
        )
        again = await echo.Echo(echo_pb2.EchoRequest(request_id=key, message="hello"), timeout=3)
        print(f"same request_id      -> {again.record.name} replayed={again.replayed}")
        try:
            await echo.Echo(echo_pb2.EchoRequest(request_id=key, message="other"), timeout=3)
        except grpc.aio.AioRpcError as exc:
            print(f"same id, new body    -> {exc.code().name} {error_info(exc).reason}")  # type: ignore[union-attr]
        relay = await echo.RelayEcho(
            echo_pb2.RelayEchoRequest(request_id=uuid.uuid4().hex, message="via relay"), timeout=3
        )
        print(
            f"RelayEcho            -> hop1 deadline_left={relay.deadline_remaining_ms}ms, "
            f"hop2 deadline_left={relay.downstream.deadline_remaining_ms}ms caller="
            f"{relay.downstream.caller}, one trace: {relay.trace_id == relay.downstream.trace_id}"
        )
        page = await echo.ListEchoes(echo_pb2.ListEchoesRequest(page_size=2), timeout=3)
        print(
            f"ListEchoes           -> {[e.name for e in page.echoes]} "
            f"next_page_token={'yes' if page.next_page_token else 'no'}"
        )
    async with secure_channel(ECHO, _tls(root, "wallet"), "echo") as channel:
        try:
            await echo_pb2_grpc.EchoServiceStub(channel).Echo(
                echo_pb2.EchoRequest(request_id=key, message="hello"), timeout=3
            )
        except grpc.aio.AioRpcError as exc:
            info = error_info(exc)
            print(f"Echo as wallet       -> {exc.code().name} {info.reason if info else ''}")
