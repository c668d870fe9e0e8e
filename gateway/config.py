"""Gateway settings (one frozen dataclass → click options via shared.config)."""

from __future__ import annotations

from dataclasses import dataclass

from switchboard.shared import checks, ports
from switchboard.shared.config import DEFAULT_SECRET, endpoints, setting
from switchboard.shared.errors import ConfigError


@dataclass(frozen=True)
class GatewayConfig:
    host: str = setting("127.0.0.1", "Address to listen on for clients.")
    port: int = setting(ports.GATEWAY_HTTP, "Port to listen on for clients (HTTP + WebSocket).")
    gateway_id: str = setting("", "Unique id of this gateway (default: random).")
    broker_sub: tuple[str, ...] = setting(
        (ports.local(ports.BROKER_SUBSCRIBE),),
        "Broker endpoints to subscribe to (their XPUB sides). With several brokers, every "
        "part lists them in the same order: a topic's broker is chosen by its position.",
        check=checks.connect_endpoint,
    )
    broker_pub: tuple[str, ...] = setting(
        (ports.local(ports.BROKER_PUBLISH),),
        "Broker endpoints to publish to (their XSUB sides; the same brokers, in the same "
        "order, as --broker-sub): the gateway announces its peer endpoint there.",
        check=checks.connect_endpoint,
    )
    peer_bind: str = setting(
        "tcp://127.0.0.1:*",
        "ZeroMQ endpoint for requests from other gateways (long-polling requests and "
        "upgrades that reached them for sessions owned here); * picks a free port.",
        check=checks.bind_endpoint,
    )
    peer_address: str = setting(
        "", "Endpoint other gateways reach --peer-bind at (default: the bound endpoint; "
        "required when binding every address).", check=checks.connect_endpoint,
    )
    services: tuple[str, ...] = setting(
        ports.DEFAULT_SERVICES,
        "Service endpoints as NAME=ENDPOINT.", check=checks.service_endpoint,
    )
    policy_service: str = setting(
        "auto", "The service (one of --services) whose moderation policy - bans, mutes, event "
        "limits - this gateway enforces on every event; until its first snapshot arrives "
        "events are refused. auto: moderation, when --services names it; none: no policy "
        "(events are not limited).",
    )
    auth_service: str = setting(
        "auto", "The service (one of --services) whose keys and namespace policy this gateway "
        "checks every CONNECT's token with; until its key set arrives new connections are "
        "refused. auto: auth, when --services names it; none: no token checks (every socket "
        "is anonymous).",
    )
    ping_interval: float = setting(25.0, "Engine.IO pingInterval, seconds.")
    ping_timeout: float = setting(20.0, "Engine.IO pingTimeout, seconds.")
    max_payload: int = setting(1_000_000, "Engine.IO maxPayload: largest message, bytes.")
    max_http_buffer_size: int = setting(
        1_000_000, "maxHttpBufferSize: largest HTTP request body (a polling POST), bytes; "
        "larger ones get 413."
    )
    polling_max_packets: int = setting(
        16, "Most packets in one long-polling response (python-engineio clients refuse more "
        "than 16); 0: no limit."
    )
    upgrade_hold: float = setting(
        0.3, "Seconds a new polling session's Socket.IO packets wait for its WebSocket "
        "upgrade, so that the session can move to the gateway the WebSocket reached (only "
        "with other gateways around)."
    )
    admin_ui_namespace: str = setting(
        "/admin-ui", "Namespace of the official Socket.IO Admin UI (docs/admin-ui.md).",
        check=checks.namespace)
    admin_ui_username: str = setting("admin", "The Admin UI's username.")
    admin_ui_password_hash: str = setting(
        "", "argon2 hash of the Admin UI's password (`switchboard hash-password`); empty: "
        "no Admin UI.")
    allow_eio3: bool = setting(
        False, "Accept Engine.IO v3 clients (socket.io-client 2.x), as Node's allowEIO3; "
        "their auth is their query string (docs/eio3.md)."
    )
    recovery_namespaces: tuple[str, ...] = setting(
        (), "Namespaces with connection state recovery (Socket.IO 4.6: pid, offsets, "
        "socket.recovered; docs/recovery.md), e.g. /,/chat; off by default as in Node; needs "
        "the recovery service, and each must be a namespace a service serves.",
        check=checks.namespace,
    )
    recovery_skip_middlewares: bool = setting(
        True, "A recovered socket skips the token checks of its CONNECT (Node's "
        "skipMiddlewares); bans are still checked."
    )
    recovery_grace: float = setting(
        5.0, "Seconds a recoverable socket whose connection dropped stays present for the "
        "services (no 'user offline') in case it comes back."
    )
    upgrade_timeout: float = setting(
        10.0, "Seconds a WebSocket probe may take to complete the upgrade."
    )
    http_keep_alive: float = setting(5.0, "Seconds an idle keep-alive HTTP connection stays.")
    http_header_timeout: float = setting(
        10.0, "Seconds a client has to send a complete request head (slow headers: 408)."
    )
    http_body_timeout: float = setting(
        30.0, "Seconds a client has to send a request body after its head (slow body: 408)."
    )
    handshake_rate: int = setting(
        600, "Engine.IO handshakes (new sessions) per client IP per minute, bursting to as "
        "many; 0: no limit. Bounds what unauthenticated sessions one address can hold."
    )
    connect_timeout: float = setting(
        45.0, "Close a connection that joins no namespace within this many seconds."
    )
    trusted_proxies: tuple[str, ...] = setting(
        (), "Load balancers (addresses or CIDR networks) whose X-Forwarded-For names the "
        "client.", check=checks.network,
    )
    allowed_origins: tuple[str, ...] = setting(
        (), "Origins whose pages may connect (WebSocket upgrades and CORS), as browsers send "
        "them: scheme://host[:port]; * allows any. Same-origin pages and non-browser "
        "clients are always served; none given: no other origin (in --demo mode: any).",
        check=checks.origin,
    )
    cors_credentials: bool = setting(
        True, "CORS: allow credentials (Access-Control-Allow-Credentials: true, the "
        "request's origin echoed)."
    )
    request_timeout: float = setting(5.0, "Seconds to wait for a service reply.")
    heartbeat_interval: float = setting(1.0, "Seconds between heartbeats to services.")
    heartbeat_liveness: int = setting(
        3, "Missed heartbeats before a service or the broker is considered down."
    )
    ready_timeout: float = setting(
        15.0, "Seconds to wait at start for the broker and every service to answer."
    )
    write_limit: int = setting(
        1_048_576, "Bytes a client may leave unread before it is disconnected as too slow."
    )
    engine_echo: bool = setting(
        False, "Serve the Engine.IO echo endpoint /engine.io/ that the official "
        "engine.io-protocol test suite talks to (conformance runs only)."
    )
    connect_emit_delay: float = setting(
        0.0,
        "Seconds between a CONNECT ack and the events that follow it. Real clients need none;"
        " the protocol test suite's client reads one message per wake-up and needs a few ms.",
    )
    shutdown_grace: float = setting(
        5.0, "Seconds a SIGTERM'd gateway gives in-flight requests before it closes."
    )
    max_connections_warning: int = setting(
        20_000, "/health reports a warning above this many connections (0: never)."
    )
    max_memory_mb: int = setting(
        2048, "/health warns above 80 % of this RSS and is unhealthy above it (0: never)."
    )
    max_error_rate: float = setting(
        0.25, "/health warns when more than this share of recent service requests failed."
    )
    http_rate: int = setting(
        600, "Plain HTTP requests per client IP per minute (pages, /health, /metrics)."
    )
    token_rate: int = setting(10, "Token-issuing HTTP requests per client IP per minute.")
    web_root: str = setting(
        "", "Directory of the web app: pages in static/, the socket.io-client bundle in "
        "vendor/socket.io-client/ (default: the web/ shipped in the package)."
    )
    demo: bool = setting(
        False, "Demo mode: POST /api/token with {\"name\": NAME} issues guest tokens signed with "
        "--jwt-secret (never in production: anyone may sign in as anyone)."
    )
    jwt_secret: str = setting(
        DEFAULT_SECRET, "HS256 secret for demo-mode guest tokens (the auth service's).",
        env="SWITCHBOARD_JWT_SECRET",
    )
    demo_token_ttl: int = setting(12 * 3600, "Lifetime of a demo-mode guest token, seconds.")

    def __post_init__(self) -> None:
        if len(self.broker_sub) != len(self.broker_pub):
            raise ConfigError(
                f"--broker-sub names {len(self.broker_sub)} broker(s) and --broker-pub "
                f"{len(self.broker_pub)}: give each broker's two endpoints, in the same order")

    def service_endpoints(self) -> dict[str, list[str]]:
        return endpoints(self.services)

    def policy_source(self) -> str | None:
        """The service named by --policy-service (None: no policy); ``ValueError`` when it
        names no service of --services."""
        return self._source("--policy-service", self.policy_service, "moderation")

    def auth_source(self) -> str | None:
        """The service named by --auth-service (None: no token checks); ``ValueError`` when
        it names no service of --services."""
        return self._source("--auth-service", self.auth_service, "auth")

    def _source(self, option: str, value: str, usual: str) -> str | None:
        named = value.strip()
        services = self.service_endpoints()
        if named == "auto":
            return usual if usual in services else None
        if named in ("none", ""):
            return None
        if named not in services:
            raise ValueError(f"{option}: {named} is none of --services "
                             f"({', '.join(sorted(services)) or 'none'})")
        return named
