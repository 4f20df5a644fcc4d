"""The Starlette application: routes, and the lifespan that builds and stops the services.

Start order: store → broker → hub → ingest → state → stages (pipeline, avatars) → ops (the
node joins the cluster); stop in reverse, so the node leaves the cluster first and frames
accepted before shutdown are written before the store closes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from brain.model import Frame
from server.analysis.pipeline import pipeline_stage
from server.analysis.retention import retention_stage
from server.avatar.stage import MEDIA, avatar_stage, serve_media
from server.broker.base import Broker, safe_url
from server.broker.memory import MemoryBroker
from server.cost import CostMeter
from server.errors import CompanionError
from server.history import history_stage
from server.hops.desk import CommandDesk
from server.hops.devices import DeviceBook
from server.http import demo_routes as demo, devices_routes, legacy, rest, tier_routes as tiers
from server.http.analyse_routes import post_analyse
from server.http.debug_page import debug_routes
from server.http.history import get_history
from server.http.openapi import openapi_document
from server.http.scenario_routes import post_scenario
from server.ingest import Ingestor
from server.metrics import Metrics
from server.ops.page import ops_openapi_paths, ops_routes
from server.ops.stage import ops_stage
from server.parts import build_broker, build_store
from server.problems import EXCEPTION_HANDLERS, problem
from server.protocol import summarize
from server.push.endpoint import websocket_endpoint
from server.push.hub import Hub
from server.services import FramesHook, Services
from server.settings import Settings
from server.state import StateService
from server.store.base import Store

log = logging.getLogger(__name__)

Stage = Callable[[Services, AsyncExitStack], Awaitable[None]]
"""A later part of the server (pipeline, avatar saga) that wires itself into the services."""


def default_stages(settings: Settings) -> list[Stage]:
    """The stages a full server runs after the core."""
    return [retention_stage, history_stage, avatar_stage, pipeline_stage]


def create_app(
    settings: Settings,
    *,
    store: Store | None = None,
    broker: Broker | None = None,
    clock: Callable[[], float] = time.time,
    stages: Sequence[Stage] | None = None,
) -> Starlette:
    """The app for ``settings`` (whose secret must be set). Parts may be injected for tests."""
    if not settings.secret:
        raise ValueError("settings.secret is empty: call server.settings.ensure_secret first")
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            the_store = store if store is not None else build_store(settings)
            await the_store.open()
            stack.push_async_callback(the_store.close)
            the_broker = broker if broker is not None else build_broker(settings)
            hub = Hub(the_broker, metrics, clock)
            await hub.start()
            stack.push_async_callback(hub.close)
            hooks: list[FramesHook] = []

            async def on_committed(by_user: Mapping[str, Sequence[Frame]]) -> None:
                # Each hook on its own: a summary publish failing during a broker outage
                # must not keep the pipeline from scheduling the analysis.
                for hook in hooks:
                    await run_isolated(hook, by_user, metrics)

            ingestor = Ingestor(
                the_store,
                metrics,
                writers=8 if settings.store == "dynamodb" else 1,
                on_committed=on_committed,
            )
            ingestor.start()
            stack.push_async_callback(ingestor.close)
            state = StateService(
                the_store,
                hub,
                metrics,
                clock,
                tiers=settings.tiers,
                cache_users=settings.state_cache_users,
                # One node (the memory broker) is the only writer of its users' states.
                exclusive=isinstance(the_broker, MemoryBroker),
            )
            devices = DeviceBook(the_store, metrics, clock)
            stack.push_async_callback(devices.close)  # before the store closes
            commands = CommandDesk(the_store, metrics, clock)
            state.listeners += [devices.on_commit, commands.on_commit]
            # Once per delta offered to this node's peers, not once per peer.
            hub.offer_with(
                lambda delta: devices.heard(delta.user_id, delta.version), commands.commands_after
            )
            services = Services(
                settings,
                the_store,
                hub,
                state,
                ingestor,
                metrics,
                clock,
                hooks,
                devices=devices,
                commands=commands,
            )
            services.erase_hooks += [state.forget, devices.forget]
            services.cost = cost = CostMeter(metrics.registry, state.tier_book, clock=clock)
            cost.pushes = hub.pushed  # billed at each flush
            hooks.append(cost.frames_stored)
            services.erase_hooks += [state.tier_book.forget, cost.forget]
            flusher = asyncio.create_task(cost.keep_flushing(the_store), name="cost-flush")

            async def stop_flushing() -> None:
                flusher.cancel()
                await asyncio.gather(flusher, return_exceptions=True)

            stack.push_async_callback(stop_flushing)  # before the store closes (LIFO)

            async def publish_summaries(by_user: Mapping[str, Sequence[Frame]]) -> None:
                for user_id, frames in by_user.items():
                    await hub.publish_summary(summarize(user_id, frames))

            hooks.append(publish_summaries)
            for stage in default_stages(settings) if stages is None else stages:
                await stage(services, stack)
            await ops_stage(services, stack)  # joins the cluster last, leaves it first
            app.state.services = services
            log.info(
                "companion ready: store=%s broker=%s", settings.store, safe_url(settings.broker)
            )
            yield
            log.info("companion stopping: flushing pending frames")

    app = CompanionApp(
        routes=routes(), lifespan=lifespan, exception_handlers=dict(EXCEPTION_HANDLERS)
    )
    app.state.metrics = metrics
    return app


WS_PATH = "/v1/ws"
WS_PATHS = frozenset({WS_PATH, "/socket"})
"""Where the WebSocket is: ``/v1/ws``, and ``/socket``, the seeds' path (seed 001's
``wss://…/socket``), an alias so their phone apps connect unchanged."""


class CompanionApp(Starlette):
    """The Starlette app, with WebSocket upgrades of :data:`WS_PATHS` sent straight to the endpoint.

    A WebSocket connection lives for hours, and every layer between uvicorn and the
    endpoint keeps a suspended coroutine frame for all that time: Starlette's middleware
    stack and router cost several KiB per connection (docs/benchmarks.md). The endpoint
    answers its own errors and needs none of them, so the upgrade skips them; the route
    stays in the table for the route list and the OpenAPI document.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            path: str = scope["path"]
            root: str = scope.get("root_path", "")
            if root and path.startswith(root):
                path = path[len(root) :]
            if path in WS_PATHS:
                scope["app"] = self
                await websocket_endpoint(WebSocket(scope, receive, send))
                return
        await super().__call__(scope, receive, send)


async def run_isolated(
    hook: FramesHook, by_user: Mapping[str, Sequence[Frame]], metrics: Metrics
) -> None:
    """Run one frames hook; a failure is logged and counted, never passed on."""
    name = getattr(hook, "__qualname__", type(hook).__name__)  # server code: bounded
    try:
        await hook(by_user)
    except CompanionError as exc:
        metrics.hook_failures.labels(name).inc()
        log.warning("frames hook %s failed: %s", name, exc)
    except Exception:
        metrics.hook_failures.labels(name).inc()
        log.exception("frames hook %s failed", name)


async def healthz(request: Request) -> Response:
    """Liveness: the process answers. Dependencies are /readyz's business, so that a Redis
    or DynamoDB outage takes nodes out of the load balancer instead of restarting them."""
    return rest.json({"status": "ok"})


READY_CHECK_TIMEOUT_S = 0.8
"""Deadline of the store check of /readyz (a load balancer's timeout is a few seconds)."""


async def readyz(request: Request) -> Response:
    """Readiness: 200 when the store answers and the broker is connected, else 503; the
    body names each check. Answers within :data:`READY_CHECK_TIMEOUT_S` and a little, even
    when a dependency hangs."""
    services: Services | None = getattr(request.app.state, "services", None)
    if services is None:
        return problem(503, "starting")
    store = await _store_check(services.store)
    broker = services.hub.broker_health()
    checks: dict[str, dict[str, Any]] = {
        "store": store,
        "broker": {
            "ok": broker.connected,
            "connected": broker.connected,
            "last_heard_age_s": broker.last_heard_age_s,
            "reconnects": broker.reconnects,
        },
    }
    down = [name for name, check in checks.items() if not check["ok"]]
    if down:
        return problem(503, f"not ready: {', '.join(down)}", checks=checks)
    return rest.json({"status": "ready", "checks": checks})


async def _store_check(store: Store) -> dict[str, Any]:
    """Whether the store answers a ping within the deadline, and why not."""
    try:
        async with asyncio.timeout(READY_CHECK_TIMEOUT_S):
            await store.ping()
    except TimeoutError:
        return {"ok": False, "error": f"no answer within {READY_CHECK_TIMEOUT_S} s"}
    except Exception as exc:  # whatever it is, the node is not ready; never a 500 here
        return {"ok": False, "error": type(exc).__name__}
    return {"ok": True}


async def metrics_endpoint(request: Request) -> Response:
    metrics: Metrics = request.app.state.metrics
    return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


async def media(request: Request) -> Response:
    """``/media/{key}``: generated avatars in the local media store (404 when media is S3)."""
    services: Services | None = getattr(request.app.state, "services", None)
    store = None if services is None else services.parts.get(MEDIA)
    return await serve_media(request, store)


def api_document() -> dict[str, Any]:
    """The OpenAPI document of every HTTP route, the fleet page's included."""
    document = openapi_document()
    return {**document, "paths": {**document["paths"], **ops_openapi_paths()}}


async def openapi(request: Request) -> Response:
    return rest.json(api_document())


def routes() -> list[BaseRoute]:
    """Every route of the server."""
    user = "/v1/users/{user_id}"
    table: list[BaseRoute] = [
        *(WebSocketRoute(path, websocket_endpoint) for path in sorted(WS_PATHS)),
        Route(f"{user}/frames", rest.post_frames, methods=["POST"]),
        Route(f"{user}/state", rest.get_state, methods=["GET"]),
        Route(f"{user}/history", get_history, methods=["GET"]),
        Route(f"{user}/tier", tiers.get_tier, methods=["GET"]),
        Route(f"{user}/tier", tiers.put_tier, methods=["PUT"]),
        Route(f"{user}/export", rest.export_user, methods=["GET"]),
        Route(f"{user}/devices", devices_routes.get_devices, methods=["GET"]),
        Route(f"{user}/commands", devices_routes.get_commands, methods=["GET"]),
        Route(user, rest.delete_user, methods=["DELETE"]),
        Route("/v1/demo/users/{user_id}/state", demo.post_state, methods=["POST"]),
        Route("/v1/demo/users/{user_id}/profile", demo.put_profile, methods=["PUT"]),
        Route("/v1/demo/users/{user_id}/scenario", post_scenario, methods=["POST"]),
        Route("/v1/demo/users/{user_id}/analyse", post_analyse, methods=["POST"]),
        Route("/sensor-data", legacy.sensor_data, methods=["POST"]),
        Route("/avatar/current-state/{user_id}", legacy.avatar_current_state, methods=["GET"]),
        Route("/api/v1/user/{user_id}/data", legacy.user_data, methods=["POST"]),
        Route("/api/v1/user/{user_id}/state", legacy.user_state, methods=["GET"]),
        Route("/api/v1/demo/trigger", legacy.demo_trigger, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/media/{key:path}", media, methods=["GET", "HEAD"]),
        *debug_routes(),
        *ops_routes(),
    ]
    return table
