"""OpenTelemetry tracing: W3C trace context in, spans around every RPC, context out.

The exporter is chosen in the service's config file. With none (the default) the SDK still
mints and propagates trace ids, so logs correlate across services, but no span is recorded
or exported: sampling is off, which costs a few microseconds per call.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, TraceIdRatioBased

from services.runtime.config import TelemetryConfig


class JsonLinesSpanExporter(SpanExporter):
    """Finished spans as one JSON object per line, for local runs and tests."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] = path.open("a", encoding="utf-8")
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = []
        for span in spans:
            ctx = span.get_span_context()
            lines.append(
                json.dumps(
                    {
                        "name": span.name,
                        "trace_id": format(ctx.trace_id, "032x") if ctx else "",
                        "span_id": format(ctx.span_id, "016x") if ctx else "",
                        "parent_span_id": format(span.parent.span_id, "016x")
                        if span.parent
                        else "",
                        "kind": span.kind.name,
                        "service": span.resource.attributes.get("service.name"),
                        "start_unix_nano": span.start_time,
                        "end_unix_nano": span.end_time,
                        "status": span.status.status_code.name,
                        "attributes": {k: str(v) for k, v in (span.attributes or {}).items()},
                    }
                )
            )
        with self._lock:
            self._file.write("".join(line + "\n" for line in lines))
            self._file.flush()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with self._lock:
            self._file.close()


def _exporter(config: TelemetryConfig) -> SpanExporter | None:
    kind = config.trace_exporter
    if kind == "none":
        return None
    if kind == "file":
        if config.trace_file is None:
            raise ValueError("telemetry.trace_file is required for trace_exporter = 'file'")
        return JsonLinesSpanExporter(config.trace_file)
    if kind == "console":
        return ConsoleSpanExporter()
    if kind == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=config.otlp_endpoint or None)
    raise ValueError(f"unknown telemetry.trace_exporter {kind!r} (none, file, console, otlp)")


def configure_tracing(service: str, config: TelemetryConfig) -> TracerProvider:
    exporter = _exporter(config)
    sampler = (
        ParentBased(ALWAYS_OFF)
        if exporter is None
        else ParentBased(TraceIdRatioBased(config.trace_sample_ratio))
    )
    provider = TracerProvider(
        resource=Resource.create({"service.name": service, "service.namespace": "casino"}),
        sampler=sampler,
    )
    if exporter is not None:
        provider.add_span_processor(
            BatchSpanProcessor(exporter, schedule_delay_millis=config.trace_export_delay_ms)
        )
    trace.set_tracer_provider(provider)
    return provider
