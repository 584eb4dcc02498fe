"""An OTLP/HTTP trace receiver for the tests (tests/it/tracing.rs).

It speaks OTLP/HTTP as a collector does: `POST /v1/traces` with an
`application/x-protobuf` ExportTraceServiceRequest (gzip allowed), answered with an
ExportTraceServiceResponse. It decodes with the OpenTelemetry project's own generated
protobuf classes (the `opentelemetry-proto` package), so a field the gateway encodes
wrongly fails to parse or reads back wrong. `GET /spans` lists what it received as JSON
(ids in hex, kind and status by their proto names); `GET /healthz` is its readiness.
`--fail N` answers the first N exports with 503 (a collector that is briefly down).

    python otlp_receiver.py --port 0   # prints {"port": N} once listening
"""

import argparse
import gzip
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

LOCK = threading.Lock()
SPANS = []
STATE = {"fail": 0, "refused": 0, "exports": 0}


def value(v):
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: value(kv.value) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return v.bytes_value.hex()
    return getattr(v, kind) if kind else None


def attributes(kvs):
    return {kv.key: value(kv.value) for kv in kvs}


def spans_of(request):
    for rs in request.resource_spans:
        resource = attributes(rs.resource.attributes)
        for ss in rs.scope_spans:
            for s in ss.spans:
                yield {
                    "trace_id": s.trace_id.hex(),
                    "span_id": s.span_id.hex(),
                    "parent_span_id": s.parent_span_id.hex() or None,
                    "name": s.name,
                    "kind": Span.SpanKind.Name(s.kind),
                    "flags": s.flags,
                    "start": s.start_time_unix_nano,
                    "end": s.end_time_unix_nano,
                    "attributes": attributes(s.attributes),
                    "status": {
                        "code": Status.StatusCode.Name(s.status.code),
                        "message": s.status.message,
                    },
                    "resource": resource,
                    "scope": ss.scope.name,
                }


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, body, content_type):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/healthz":
            return self.reply(200, b"OK", "text/plain")
        if self.path == "/spans":
            with LOCK:
                body = json.dumps({"spans": SPANS, **STATE}).encode()
            return self.reply(200, body, "application/json")
        self.reply(404, b"", "text/plain")

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path != "/v1/traces":
            return self.reply(404, b"", "text/plain")
        if self.headers.get("Content-Type", "").split(";")[0].strip() != "application/x-protobuf":
            return self.reply(415, b"application/x-protobuf only", "text/plain")
        with LOCK:
            if STATE["fail"] > 0:
                STATE["fail"] -= 1
                STATE["refused"] += 1
                return self.reply(503, b"unavailable", "text/plain")
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        request = ExportTraceServiceRequest()
        try:
            request.ParseFromString(body)
        except Exception as e:  # a malformed export is the sender's bug: say so
            return self.reply(400, f"not an ExportTraceServiceRequest: {e}".encode(), "text/plain")
        with LOCK:
            SPANS.extend(spans_of(request))
            STATE["exports"] += 1
        self.reply(200, ExportTraceServiceResponse().SerializeToString(), "application/x-protobuf")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--fail", type=int, default=0)
    args = parser.parse_args()
    STATE["fail"] = args.fail
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(json.dumps({"port": server.server_address[1]}), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
