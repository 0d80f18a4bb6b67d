"""A broker connection that fails is told with the password masked: in the error the
runtime raises and in the outbox relay's and event consumer's log lines, even when the
library's own text quotes the URL it was given (password included)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from sqlalchemy.ext.asyncio import create_async_engine
from structlog.testing import capture_logs

from services.runtime.broker import Broker, BrokerUnavailable
from services.runtime.config import AmqpConfig
from services.runtime.consumer import EventConsumer
from services.runtime.outbox import OutboxRelay

pytestmark = pytest.mark.asyncio

# Characters a URL must escape, so the masking must find the escaped form too.
PASSWORD = "s3cret/p@ss:word"


@pytest.fixture
def broker(tmp_path: Path) -> Broker:
    path = tmp_path / "amqp-password"
    path.write_text(PASSWORD + "\n")
    path.chmod(0o600)
    return Broker(AmqpConfig(url="amqp://casino@127.0.0.1:5672/casino_test", password_file=path))


@pytest.fixture(autouse=True)
def url_quoting_library(monkeypatch: pytest.MonkeyPatch) -> None:
    """aio-pika failing as a library may: its exception quoting the URL, and its cause too."""

    async def connect(self: aio_pika.RobustConnection, **_: Any) -> None:
        url = self.url
        assert url.password == PASSWORD  # the password does reach the login
        try:
            raise OSError(f"no route to {url.host} for {url.password}")
        except OSError as exc:
            raise ConnectionError(f"cannot connect to {url}") from exc

    monkeypatch.setattr(aio_pika.RobustConnection, "connect", connect)


def _shown(text: str) -> bool:
    return any(form in text for form in (PASSWORD, "s3cret%2Fp%40ss%3Aword", "s3cret"))


async def test_a_failed_connection_is_raised_with_the_password_masked(broker: Broker) -> None:
    with pytest.raises(BrokerUnavailable) as raised:
        await broker.connect()
    message = str(raised.value)
    assert message.startswith("ConnectionError: cannot connect to amqp://casino:******@127.0.0.1")
    assert not _shown(message)
    # Nothing chained to it can put the library's text into a logged traceback.
    assert raised.value.__cause__ is None
    assert raised.value.__context__ is None


async def test_the_workers_log_a_failed_connection_without_the_password(broker: Broker) -> None:
    engine = create_async_engine("postgresql+psycopg://nobody@127.0.0.1:9/none")  # never used
    relay = OutboxRelay(engine, "wallet", broker)

    async def handler(_: Any) -> str:
        return "processed"

    consumer = EventConsumer(handler, broker, "test.masking", ["test.masking"])
    with capture_logs() as logs:
        for worker in (relay, consumer):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(worker.run(), 0.2)
    await engine.dispose()
    stalled = {e["event"]: e["error"] for e in logs if e["event"].endswith("stalled")}
    assert set(stalled) == {"outbox relay stalled", "event consumer stalled"}
    for error in stalled.values():
        assert "cannot connect to amqp://casino:******@127.0.0.1:5672/casino_test" in error
    assert not any(_shown(str(entry)) for entry in logs)


async def test_masking_leaves_other_text_alone(broker: Broker) -> None:
    assert broker.mask("ACCESS_REFUSED - Login was refused") == (
        "ACCESS_REFUSED - Login was refused"
    )
    assert broker.describe(TimeoutError()) == "TimeoutError"
