"""Local stand-ins for PagerDuty, Opsgenie, Microsoft Teams and a webhook receiver, on 127.0.0.1, for tests and
benchmarks. Each speaks its API's contract (paths, auth, status codes, answer bodies, validation) and keeps the
state a person would see there (PagerDuty alerts by dedup_key, Opsgenie alerts by alias, Teams cards, verified
webhook deliveries).

    with PagerDutyServer() as pd:
        monkeypatch.setenv("AIRFLOW_CONN_TASKLENS_PAGERDUTY", pd.conn_json())
        pd.responses.append(Reply(429, retry_after=30))   # the next POST gets a 429, later ones the real answer
        pd.fail_ratio = 0.3                               # or: 30 % of POSTs answer fail_reply (seeded)
        ... deliver to host=pd.url ...
        pd.events                                         # every event answered 202
        pd.alerts                                         # {dedup_key: "triggered" | "acknowledged" | "resolved"}
"""

from __future__ import annotations

import collections
import gzip
import hashlib
import hmac
import http.server
import json
import random
import threading
import time
import urllib.parse
import uuid
from typing import Any

from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from tasklens.testing import Reply, free_port

__all__ = [
    "ApiServer", "OpsgenieServer", "OtlpReceiver", "PagerDutyServer", "Reply", "SlackApiServer", "TeamsServer",
    "WebhookReceiver",
]


class _Handler(http.server.BaseHTTPRequestHandler):
    server_api: ApiServer

    def do_GET(self) -> None:  # Slack's users.info is a GET
        self.do_POST()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        parsed = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(parsed.query))
        status, headers, body = self.server_api._answer(parsed.path, query, dict(self.headers.items()), raw)
        data = body if isinstance(body, bytes) else json.dumps(body).encode("utf-8")
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, format: str, *args: Any) -> None:
        return


class ApiServer:
    """A threaded HTTP server answering POSTs with :meth:`handle`, unless a programmed :class:`Reply` comes first.

    ``responses``: replies consumed one per POST before the real answer; ``fail_ratio`` of the other POSTs get
    ``fail_replies`` (picked at random, seeded). ``requests`` records every POST as ``(path, query, headers, raw)``,
    ``answers`` every status sent.
    """

    def __init__(self, *, fail_ratio: float = 0.0, seed: int = 0) -> None:
        self.port = free_port()
        self.responses: collections.deque[Reply] = collections.deque()
        self.fail_ratio = fail_ratio
        self.fail_replies = [Reply(500)]
        self.requests: list[tuple[str, dict[str, str], dict[str, str], bytes]] = []
        self.answers: list[int] = []
        self._random = random.Random(seed)
        self.lock = threading.Lock()
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self):
        handler = type("Handler", (_Handler,), {"server_api": self})
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _answer(self, path: str, query: dict[str, str], headers: dict[str, str], raw: bytes):
        with self.lock:
            self.requests.append((path, query, headers, raw))
            reply = None
            if self.responses:
                reply = self.responses.popleft()
            elif self.fail_ratio and self._random.random() < self.fail_ratio:
                reply = self._random.choice(self.fail_replies)
            if reply is not None:
                extra = {} if reply.retry_after is None else {
                    "Retry-After": reply.retry_after if isinstance(reply.retry_after, str) else f"{reply.retry_after:g}"
                }
                self.answers.append(reply.status)
                return reply.status, extra, (reply.body or {"error": f"programmed {reply.status}"})
            status, extra, body = self.handle(path, query, headers, raw)
            self.answers.append(status)
            return status, extra, body

    def handle(self, path: str, query: dict[str, str], headers: dict[str, str], raw: bytes):
        """``(status, headers, body)`` for one POST (called under :attr:`lock`)."""
        raise NotImplementedError


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw.decode("utf-8"))
    except ValueError:
        return None


class PagerDutyServer(ApiServer):
    """PagerDuty Events API v2: ``POST /v2/enqueue``; 202 ``{"status": "success", "dedup_key": ...}``, 400
    ``{"status": "invalid event", "errors": [...]}`` for an event the real API rejects."""

    SEVERITIES = ("critical", "error", "warning", "info")

    def __init__(self, routing_key: str = "R0UT1NGKEY0000000000000000000000", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.routing_key = routing_key
        self.events: list[dict[str, Any]] = []
        self.alerts: dict[str, str] = {}

    def conn_json(self) -> str:
        return json.dumps({"conn_type": "pagerduty_events", "password": self.routing_key})

    def handle(self, path, query, headers, raw):
        if path != "/v2/enqueue":
            return 404, {}, {"status": "not found"}
        event = _json(raw)
        errors = []
        if not isinstance(event, dict):
            return 400, {}, {"status": "invalid event", "message": "Event object is invalid", "errors": ["not JSON"]}
        if event.get("routing_key") != self.routing_key:
            errors.append("'routing_key' is invalid")
        action = event.get("event_action")
        if action not in ("trigger", "acknowledge", "resolve"):
            errors.append("'event_action' is invalid")
        dedup_key = event.get("dedup_key")
        if dedup_key is not None and (not isinstance(dedup_key, str) or len(dedup_key) > 255):
            errors.append("'dedup_key' is invalid")
        if action in ("acknowledge", "resolve") and not dedup_key:
            errors.append("'dedup_key' is missing")
        if action == "trigger":
            payload = event.get("payload") or {}
            if not payload.get("summary") or len(payload["summary"]) > 1024:
                errors.append("'payload.summary' is missing or too long")
            if not payload.get("source"):
                errors.append("'payload.source' is missing")
            if payload.get("severity") not in self.SEVERITIES:
                errors.append("'payload.severity' is invalid")
        if errors:
            return 400, {}, {"status": "invalid event", "message": "Event object is invalid", "errors": errors}
        dedup_key = dedup_key or uuid.uuid4().hex
        self.events.append(event)
        state = {"trigger": "triggered", "acknowledge": "acknowledged", "resolve": "resolved"}[action]
        if action == "trigger" or dedup_key in self.alerts:  # PagerDuty drops ack/resolve of an unknown key
            if not (action == "trigger" and self.alerts.get(dedup_key) == "acknowledged"):
                self.alerts[dedup_key] = state
        return 202, {}, {"status": "success", "message": "Event processed", "dedup_key": dedup_key}

    def triggers(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event_action"] == "trigger"]


class OpsgenieServer(ApiServer):
    """Opsgenie Alert API: ``POST /v2/alerts``, ``POST /v2/alerts/{alias}/close|acknowledge?identifierType=alias``,
    auth header ``GenieKey <key>``; 202 ``{"result": ..., "took": ..., "requestId": ...}``."""

    def __init__(self, api_key: str = "0psg3n1e-key-0000", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.api_key = api_key
        self.alerts: dict[str, dict[str, Any]] = {}  # alias -> {"status", "count", "payload"}
        self.actions: list[tuple[str, str]] = []  # (action, alias) accepted

    def conn_json(self) -> str:
        return json.dumps({"conn_type": "opsgenie", "host": self.url, "password": self.api_key})

    def handle(self, path, query, headers, raw):
        request_id = str(uuid.uuid4())
        auth = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
        if auth != f"GenieKey {self.api_key}":
            return 401, {}, {"message": "Could not authenticate", "took": 0.0, "requestId": request_id}
        body = _json(raw) or {}
        accepted = {"result": "Request will be processed", "took": 0.01, "requestId": request_id}
        if path == "/v2/alerts":
            message = body.get("message")
            if not message or len(message) > 130:
                return 422, {}, {"message": "Request body is not processable. Please check the errors.",
                                 "errors": {"message": "Message can not be empty or longer than 130"},
                                 "took": 0.0, "requestId": request_id}
            alias = body.get("alias") or request_id
            known = self.alerts.get(alias)
            if known is not None and known["status"] != "closed":
                known["count"] += 1
            else:
                self.alerts[alias] = {"status": "open", "count": 1, "payload": body}
            self.actions.append(("create", alias))
            return 202, {}, accepted
        parts = path.strip("/").split("/")
        if len(parts) == 4 and parts[:2] == ["v2", "alerts"] and parts[3] in ("close", "acknowledge"):
            if query.get("identifierType") != "alias":
                return 400, {}, {"message": "identifierType must be alias here", "requestId": request_id}
            alias = urllib.parse.unquote(parts[2])
            if alias in self.alerts:
                self.alerts[alias]["status"] = "closed" if parts[3] == "close" else "acknowledged"
            self.actions.append((parts[3], alias))
            return 202, {}, accepted
        return 404, {}, {"message": "Resource or handler not found", "requestId": request_id}


class TeamsServer(ApiServer):
    """A Teams Workflows webhook: 202 for a ``message`` with Adaptive Card attachments, 413 over 28 KB, 400 for
    anything else."""

    LIMIT = 28 * 1024

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cards: list[dict[str, Any]] = []
        self.sizes: list[int] = []

    @property
    def webhook_url(self) -> str:
        return f"{self.url}/workflows/abc/triggers/manual/paths/invoke?api-version=1&sig=S3CRETSIG"

    def conn_json(self) -> str:
        return json.dumps({"conn_type": "http", "password": self.webhook_url})

    def handle(self, path, query, headers, raw):
        if query.get("sig") != "S3CRETSIG":
            return 401, {}, {"error": {"code": "DirectApiAuthorizationRequired"}}
        if len(raw) > self.LIMIT:
            return 413, {}, {"error": {"code": "MessageTooLarge"}}
        body = _json(raw)
        attachments = body.get("attachments") if isinstance(body, dict) else None
        if body is None or body.get("type") != "message" or not attachments or any(
            a.get("contentType") != "application/vnd.microsoft.card.adaptive" for a in attachments
        ):
            return 400, {}, {"error": {"code": "InvalidRequestContent"}}
        self.cards.extend(a["content"] for a in attachments)
        self.sizes.append(len(raw))
        return 202, {}, b""


class WebhookReceiver(ApiServer):
    """A receiver that verifies ``X-Tasklens-Signature`` (HMAC-SHA256 of ``timestamp.body``) and a timestamp within
    ``tolerance_s`` of ``clock()``, as the webhook channel's docstring tells receivers to; 401 otherwise."""

    def __init__(self, secret: str = "wh-s3cret-value", *, tolerance_s: float = 300.0, clock=time.time,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.secret = secret
        self.tolerance_s = tolerance_s
        self.clock = clock
        self.deliveries: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.rejected: list[str] = []

    def conn_json(self, secret: str | None = None) -> str:
        return json.dumps({"conn_type": "http", "host": f"{self.url}/hooks/tasklens",
                           "password": self.secret if secret is None else secret})

    def handle(self, path, query, headers, raw):
        lower = {k.lower(): v for k, v in headers.items()}
        timestamp = lower.get("x-tasklens-timestamp", "")
        signature = lower.get("x-tasklens-signature", "")
        expected = "v1=" + hmac.new(self.secret.encode(), timestamp.encode() + b"." + raw, hashlib.sha256).hexdigest()
        if not timestamp.isdigit() or abs(self.clock() - int(timestamp)) > self.tolerance_s:
            self.rejected.append("stale timestamp")
            return 401, {}, {"error": "stale timestamp"}
        if not hmac.compare_digest(signature, expected):
            self.rejected.append("bad signature")
            return 401, {}, {"error": "bad signature"}
        self.deliveries.append((lower, json.loads(raw)))
        return 200, {}, {"ok": True}


class SlackApiServer(ApiServer):
    """Slack's Web API for a bot token (``Authorization: Bearer xoxb-...``): ``chat.postMessage`` (answers the
    channel id and the message ``ts``), ``chat.update``, ``chat.postEphemeral`` and ``users.info`` (a form, the
    profile's email from :attr:`users`). Every answer is HTTP 200 with ``ok`` true or false, as Slack's are.

    ``messages``: ``{ts: message}`` as a person in the channel sees them (updates applied); ``ephemerals``: what
    single users were told.
    """

    CHANNEL_IDS = {"#alerts": "C0ALERTS"}

    def __init__(self, token: str = "xoxb-test-token", signing_secret: str = "slack-signing-s3cret",
                 users: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.token = token
        self.signing_secret = signing_secret
        self.users = dict(users or {})  # Slack user id -> email
        self.messages: dict[str, dict[str, Any]] = {}
        self.updates: list[dict[str, Any]] = []
        self.ephemerals: list[dict[str, Any]] = []

    def conn_json(self, **extra: Any) -> str:
        """``AIRFLOW_CONN_<ID>`` of a ``slack`` connection (bot token) with this app's signing secret."""
        return json.dumps({"conn_type": "slack", "password": self.token,
                           "extra": {"base_url": f"{self.url}/api/", "signing_secret": self.signing_secret, **extra}})

    def handle(self, path, query, headers, raw):
        auth = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
        if auth != f"Bearer {self.token}":
            return 200, {}, {"ok": False, "error": "invalid_auth"}
        method = path.rsplit("/", 1)[-1]
        form = "x-www-form-urlencoded" in next((v for k, v in headers.items() if k.lower() == "content-type"), "")
        body = dict(urllib.parse.parse_qsl(raw.decode())) if form else _json(raw) if raw else dict(query)
        if not isinstance(body, dict):
            return 200, {}, {"ok": False, "error": "invalid_json"}
        if method == "users.info":
            email = self.users.get(str(body.get("user")))
            if email is None:
                return 200, {}, {"ok": False, "error": "user_not_found"}
            return 200, {}, {"ok": True, "user": {"id": body["user"], "profile": {"email": email}}}
        channel = self.CHANNEL_IDS.get(str(body.get("channel")), str(body.get("channel")))
        if method == "chat.postMessage":
            ts = f"{time.time():.6f}"
            self.messages[ts] = {"channel": channel, "ts": ts, "text": body.get("text"), "blocks": body.get("blocks")}
            return 200, {}, {"ok": True, "channel": channel, "ts": ts, "message": self.messages[ts]}
        if method == "chat.update":
            ts = str(body.get("ts"))
            if ts not in self.messages or self.messages[ts]["channel"] != channel:
                return 200, {}, {"ok": False, "error": "message_not_found"}
            self.messages[ts].update(text=body.get("text"), blocks=body.get("blocks"))
            self.updates.append(body)
            return 200, {}, {"ok": True, "channel": channel, "ts": ts}
        if method == "chat.postEphemeral":
            self.ephemerals.append(body)
            return 200, {}, {"ok": True, "message_ts": f"{time.time():.6f}"}
        return 200, {}, {"ok": False, "error": "unknown_method"}

    def click(self, ts: str, action_id: str, user_id: str) -> dict[str, Any]:
        """The ``block_actions`` payload Slack sends when ``user_id`` clicks button ``action_id`` of message ``ts``."""
        message = self.messages[ts]
        button = next(element for block in message["blocks"] if block["type"] == "actions"
                      for element in block["elements"] if element.get("action_id") == action_id)
        return {
            "type": "block_actions",
            "user": {"id": user_id, "username": user_id.lower(), "team_id": "T0TEAM"},
            "api_app_id": "A0TASKLENS",
            "container": {"type": "message", "message_ts": ts, "channel_id": message["channel"]},
            "channel": {"id": message["channel"], "name": "alerts"},
            "message": {"type": "message", "ts": ts, "text": message["text"], "blocks": message["blocks"]},
            "response_url": f"{self.url}/actions/T0TEAM/1/x",
            "actions": [{"type": "button", "action_id": action_id, "block_id": "b",
                         "value": button["value"], "action_ts": f"{time.time():.6f}"}],
        }

    def signed_request(self, payload: dict[str, Any], *, timestamp: int | None = None,
                       secret: str | None = None) -> tuple[bytes, dict[str, str]]:
        """``(body, headers)`` of Slack's POST of ``payload`` to the interactivity URL, signed (v0) as Slack signs."""
        body = urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()
        ts = str(int(time.time()) if timestamp is None else timestamp)
        key = (self.signing_secret if secret is None else secret).encode()
        signature = "v0=" + hmac.new(key, b"v0:" + ts.encode() + b":" + body, hashlib.sha256).hexdigest()
        return body, {"Content-Type": "application/x-www-form-urlencoded", "X-Slack-Request-Timestamp": ts,
                      "X-Slack-Signature": signature}


class OtlpReceiver(ApiServer):
    """An OTLP/HTTP receiver (what an OpenTelemetry Collector's ``otlp`` receiver speaks on :4318): decodes the
    protobuf bodies of ``/v1/metrics`` and ``/v1/traces`` with ``opentelemetry-proto``.

    ``points()``: every metric data point as ``{"name", "kind", "attributes", "value", "count", "service"}``
    (``kind``: sum, gauge, histogram, exponential_histogram; ``value`` for sums and gauges, ``count``/``value`` =
    count/sum for histograms). ``spans()``: every span as ``{"name", "trace_id", "span_id", "attributes"}`` (ids in
    hex). ``env()``: the ``OTEL_*`` variables that point an SDK exporter here over http/protobuf.
    """

    def env(self) -> dict[str, str]:
        return {"OTEL_EXPORTER_OTLP_ENDPOINT": self.url, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                "OTEL_TRACES_EXPORTER": "otlp_proto_http"}

    def handle(self, path, query, headers, raw):
        raw = _decoded(headers, raw)
        if path == "/v1/metrics":
            metrics_service_pb2.ExportMetricsServiceRequest.FromString(raw)  # a body that does not decode fails here
            return 200, {}, metrics_service_pb2.ExportMetricsServiceResponse().SerializeToString()
        if path == "/v1/traces":
            trace_service_pb2.ExportTraceServiceRequest.FromString(raw)
            return 200, {}, trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
        return 404, {}, {"error": f"no OTLP signal at {path}"}

    def _bodies(self, path: str) -> list[bytes]:
        with self.lock:
            return [_decoded(headers, raw) for (p, _, headers, raw), status
                    in zip(self.requests, self.answers, strict=False) if p == path and status == 200]

    def points(self) -> list[dict[str, Any]]:
        found = []
        for raw in self._bodies("/v1/metrics"):
            request = metrics_service_pb2.ExportMetricsServiceRequest.FromString(raw)
            for resource_metrics in request.resource_metrics:
                service = _attributes(resource_metrics.resource.attributes).get("service.name")
                for scope in resource_metrics.scope_metrics:
                    for metric in scope.metrics:
                        kind = metric.WhichOneof("data")
                        for point in getattr(metric, kind).data_points:
                            found.append({
                                "name": metric.name, "kind": kind, "service": service,
                                "attributes": _attributes(point.attributes),
                                "value": point.sum if "histogram" in kind else (
                                    point.as_double if point.HasField("as_double") else point.as_int),
                                "count": point.count if "histogram" in kind else None,
                            })
        return found

    def spans(self) -> list[dict[str, Any]]:
        found = []
        for raw in self._bodies("/v1/traces"):
            request = trace_service_pb2.ExportTraceServiceRequest.FromString(raw)
            for resource_spans in request.resource_spans:
                for scope in resource_spans.scope_spans:
                    for span in scope.spans:
                        found.append({"name": span.name, "trace_id": span.trace_id.hex(),
                                      "span_id": span.span_id.hex(), "attributes": _attributes(span.attributes)})
        return found


def _decoded(headers: dict[str, str], raw: bytes) -> bytes:
    gzipped = {k.lower(): v for k, v in headers.items()}.get("content-encoding") == "gzip"
    return gzip.decompress(raw) if gzipped else raw


def _attributes(key_values: Any) -> dict[str, Any]:
    """OTLP KeyValue list -> {key: Python value}."""
    values = {}
    for item in key_values:
        which = item.value.WhichOneof("value")
        values[item.key] = getattr(item.value, which) if which else None
    return values
