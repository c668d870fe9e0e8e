"""Entry points of each part, callable from the CLI and from tests: ``run_*(config)``."""

from __future__ import annotations

import asyncio
import importlib
import signal
import threading
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import zmq
import zmq.asyncio

from switchboard.broker.broker import Broker, BrokerConfig
from switchboard.gateway.config import GatewayConfig
from switchboard.shared import checks, ports
from switchboard.shared.config import endpoints, setting
from switchboard.shared.journal import Journal
from switchboard.shared.metrics import serve_metrics
from switchboard.shared.process import run_until_signal, tune_gc
from switchboard.shared.publisher import ZmqPublisher
from switchboard.shared.runner import RunnerConfig, serve

#: Services `switchboard service NAME` knows, with their default request ports.
SERVICES = ports.SERVICES


@dataclass(frozen=True)
class ServiceRuntime:
    """Settings every service process has (its sockets and how it judges gateways)."""

    bind: str = setting("", "ROUTER endpoint to bind (default tcp://127.0.0.1:<service port>).",
                        check=checks.bind_endpoint)
    broker_pub: tuple[str, ...] = setting(
        (ports.local(ports.BROKER_PUBLISH),),
        "Broker endpoints to publish to (their XSUB sides). With several brokers, every part "
        "lists them in the same order: a topic's broker is chosen by its position.",
        check=checks.connect_endpoint,
    )
    gateway_timeout: float = setting(
        5.0, "Seconds without a heartbeat before a gateway's sockets are dropped."
    )
    max_inflight: int = setting(1000, "Requests handled concurrently at most.")
    services: tuple[str, ...] = setting(
        ports.DEFAULT_SERVICES,
        "Endpoints of the other services as NAME=ENDPOINT: an event this service's filter "
        "lets pass goes on to its owner directly.", check=checks.service_endpoint,
    )
    journal_size: int = setting(
        50_000, "Publications remembered for gateways that missed some (a broker crash)."
    )
    journal_seconds: float = setting(
        60.0, "Seconds a publication is remembered for replays, at most."
    )
    metrics_port: int = setting(0, "Port for Prometheus /metrics (0: off).")
    metrics_host: str = setting("127.0.0.1", "Address for the metrics endpoint.")


def service_module(name: str) -> ModuleType:
    """A built-in service by name, or any module path exposing ``Config`` and ``create``."""
    if name in SERVICES:
        return importlib.import_module(f"switchboard.services.{name}")
    if "." not in name:
        raise KeyError(f"unknown service {name!r}; known: {', '.join(SERVICES)} or a module path")
    module = importlib.import_module(name)
    if not hasattr(module, "Config") or not hasattr(module, "create"):
        raise ImportError(f"module {name} has no Config and create()")
    return module


def run_broker(config: BrokerConfig) -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    serve_metrics(config.metrics_port, config.metrics_host)
    tune_gc()
    Broker(config, zmq.Context()).run(stop)


def run_gateway(config: GatewayConfig) -> None:
    # Imported here: every other part (broker, services, the supervisor) starts from this
    # module too, and need not hold the gateway's modules in its memory.
    from switchboard.gateway.server import run

    run_until_signal(lambda stop: run(config, stop))


def run_service(name: str, runtime: ServiceRuntime, config: Any) -> None:
    module = service_module(name)
    if not runtime.bind and name not in SERVICES:
        raise ValueError(f"--bind is required for service {name}")
    bind = runtime.bind or ports.local(SERVICES[name])

    async def main(stop: asyncio.Event) -> None:
        serve_metrics(runtime.metrics_port, runtime.metrics_host)
        context = zmq.asyncio.Context()
        journal = Journal(runtime.journal_size, runtime.journal_seconds)
        publisher = ZmqPublisher(context, runtime.broker_pub, name.rpartition(".")[2],
                                 journal=journal)
        service = module.create(config, publisher)
        publisher.source = service.name  # gateways ask this name for replays
        runner_config = RunnerConfig(
            bind=bind,
            gateway_timeout=runtime.gateway_timeout,
            max_inflight=runtime.max_inflight,
            services=endpoints(runtime.services),
        )
        try:
            await serve(service, runner_config, context, publisher, stop)
        finally:
            publisher.close()
            context.term()

    run_until_signal(main)
