"""RabbitMQ as a service reaches it: `[amqp] url` names the user, host, port and virtual
host, `[amqp] password_file` holds the password, and the two meet only in the connection.
Whatever a connection failure says is told with the password masked, so it reaches no log.
"""

from __future__ import annotations

import urllib.parse

import aio_pika
from aio_pika.abc import AbstractRobustConnection
from yarl import URL

from services.runtime.config import AmqpConfig
from services.runtime.secrets import read_secret

_MASK = "******"


class BrokerUnavailable(ConnectionError):
    """The broker could not be reached or refused the login; the text is masked."""


class Broker:
    def __init__(self, config: AmqpConfig) -> None:
        if not config.url:
            raise ValueError("amqp.url is not configured")
        self.url = config.url  # no password in it (AmqpConfig refuses one): safe to log
        # Read once, at start, as the database's: a missing or loose file stops the service.
        self._password = read_secret(config.password_file) if config.password_file else ""
        self._timeout = config.connect_timeout_seconds

    async def connect(self) -> AbstractRobustConnection:
        url = URL(self.url)
        if self._password:
            url = url.with_password(self._password)
        # Built here rather than by aio_pika.connect_robust, so that a connect that does not
        # complete is closed: its reconnecting task otherwise lives on, and once a caller's
        # cancellation has reached it, it swallows the next one and retries every 5 s, so a
        # service stopping while a refused login was being retried never finished its loop
        # (killed after its grace, in a CI run).
        connection = aio_pika.RobustConnection(url)
        try:
            await connection.connect(timeout=self._timeout)
        except BaseException as exc:
            await connection.close()
            if not isinstance(exc, Exception):
                raise
            text, name = self.describe(exc), type(exc).__name__
            failure = text if text == name else f"{name}: {text}"
        else:
            return connection
        # Raised outside the handler, so the library's exception is neither its cause nor
        # its context: a traceback logged later cannot show that text either.
        raise BrokerUnavailable(failure)

    def describe(self, exc: BaseException) -> str:
        """An error's text for a log line, with the password masked wherever it appears."""
        return self.mask(str(exc) or type(exc).__name__)

    def mask(self, text: str) -> str:
        if not self._password:
            return text
        for form in {
            self._password,
            urllib.parse.quote(self._password, safe=""),
            urllib.parse.quote_plus(self._password),
        }:
            text = text.replace(form, _MASK)
        return text
