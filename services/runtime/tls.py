"""Mutual-TLS credentials from files. The server re-reads its certificate, key and trust
bundle when the files change, because cert-manager and SPIRE rotate them in place and a
restart of every pod per rotation is not an answer."""

from __future__ import annotations

from pathlib import Path

import grpc

from services.runtime.config import TLSConfig
from services.runtime.logs import get_logger
from services.runtime.secrets import read_secret_bytes

log = get_logger()


def channel_credentials(tls: TLSConfig) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=Path(tls.ca_file).read_bytes(),
        private_key=read_secret_bytes(tls.key_file),
        certificate_chain=Path(tls.cert_file).read_bytes(),
    )


class ServerCertificates:
    """Called by grpc before each new connection's handshake: returns a new configuration
    when the files changed, None to keep the current one."""

    def __init__(self, tls: TLSConfig) -> None:
        self._files = (Path(tls.cert_file), Path(tls.key_file), Path(tls.ca_file))
        self._stamp = self._current_stamp()
        self._initial = self._load()

    def _current_stamp(self) -> tuple[tuple[int, int], ...]:
        return tuple((f.stat().st_mtime_ns, f.stat().st_size) for f in self._files)

    def _load(self) -> grpc.ServerCertificateConfiguration:
        cert, key, ca = self._files
        return grpc.ssl_server_certificate_configuration(
            [(read_secret_bytes(key), cert.read_bytes())], root_certificates=ca.read_bytes()
        )

    def __call__(self) -> grpc.ServerCertificateConfiguration | None:
        try:
            stamp = self._current_stamp()
            if stamp == self._stamp:
                return None
            configuration = self._load()
        except Exception as exc:  # a half-written rotation: keep serving with what we have
            log.warning("certificate reload failed", error=str(exc))
            return None
        self._stamp = stamp
        log.info("certificates reloaded", cert_file=str(self._files[0]))
        return configuration

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self._initial, self, require_client_authentication=True
        )
