"""The indexed router picks the route Starlette's router picks, for every request."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Match, Mount, Route, Router
from starlette.testclient import TestClient
from starlette.types import Message, Scope

from healthid.host.routing import IndexedRouter
from healthid.runtime import build_app
from healthid.settings import load_settings

METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS")


def _endpoint(name: str) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(_request: Request) -> Response:
        return PlainTextResponse(name)

    return endpoint


def synthetic_routes() -> list[BaseRoute]:
    """Fixed and parameter routes that overlap, wrong-method routes, a mount and a
    catch-all, in an order where the first match is not always the fixed one."""
    inner = [Route("/x", _endpoint("mounted x"), methods=["GET"])]
    return [
        Route("/token", _endpoint("token POST"), methods=["POST"]),
        Route("/items/{item}", _endpoint("item"), methods=["GET"]),
        Route("/items/new", _endpoint("items new"), methods=["GET", "POST"]),
        Route("/token", _endpoint("token wrong"), methods=["GET", "PUT"]),
        Mount("/sub", routes=inner),
        Route("/sub", _endpoint("sub fixed"), methods=["GET"]),
        Route("/any/{rest:path}", _endpoint("any"), methods=None),
        Route("/any/fixed", _endpoint("never: any/{rest} comes first")),
        Route("/healthz", _endpoint("healthz")),
    ]


def candidate_paths(routes: list[BaseRoute]) -> list[str]:
    paths = {"/", "/nope", "/token/", "/items/", "/sub/", "/sub/x", "/sub/y", "/any/", "/any/a/b"}
    for route in routes:
        path = getattr(route, "path", "")
        paths |= {path, path + "/", path.rstrip("/") or "/", path.replace("{", "").replace("}", "")}
    return sorted(p for p in paths if p)


def chosen(router: Router, path: str, method: str, root_path: str = "") -> tuple[object, int]:
    """The route the router hands the request to (None: no route) and the status sent."""
    scope: Scope = {
        "type": "http",
        "method": method,
        "path": root_path + path,
        "root_path": root_path,
        "headers": [(b"host", b"testserver")],
        "query_string": b"",
        "path_params": {},
    }
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(router(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return scope.get("route"), status


@pytest.mark.parametrize("root_path", ["", "/idp"])
def test_same_route_and_status_as_starlette_synthetic(root_path: str) -> None:
    routes = synthetic_routes()
    plain, indexed = Router(routes), IndexedRouter(routes)
    seen_fast = 0
    for path in candidate_paths(routes):
        for method in METHODS:
            expected = chosen(plain, path, method, root_path)
            assert chosen(indexed, path, method, root_path) == expected, (path, method)
            seen_fast += path in indexed._by_path
    assert seen_fast > 0  # the lookup was used, not only the fallback


def pick(routes: Sequence[BaseRoute], scope: Scope) -> BaseRoute | None:
    """Starlette's choice: the first full match, else the first partial one."""
    partial = None
    for route in routes:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return route
        if match is Match.PARTIAL and partial is None:
            partial = route
    return partial


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Starlette:
    """The development app (embedded defaults), as `make run` builds it."""
    for name in list(os.environ):
        if name.startswith("HEALTHID_"):
            monkeypatch.delenv(name)
    return build_app(load_settings(data_dir=tmp_path))


def test_same_route_as_starlette_for_the_app(app: Starlette) -> None:
    router = app.router
    assert isinstance(router, IndexedRouter)
    routes = list(router.routes)
    assert len(routes) > 30
    for path in candidate_paths(routes):
        for method in METHODS:
            scope: Scope = {"type": "http", "method": method, "path": path, "root_path": ""}
            candidates = router._by_path.get(path, routes)
            assert pick(candidates, scope) is pick(routes, scope), (path, method)
    # the hot paths have few candidates: the route and its wrong-method twin
    for path in ("/PAR_Auth", "/token", "/auth", "/healthz", "/wallet/v1/auth/assertions"):
        assert 1 <= len(router._by_path[path]) <= 2, router._by_path[path]


def test_the_app_answers_through_it(app: Starlette) -> None:
    with TestClient(app) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/token").status_code == 405  # the wrong-method route
        assert client.post("/healthz").status_code == 405
        assert client.get("/nope").status_code == 404


def test_routes_added_later_are_found() -> None:
    router = IndexedRouter([Route("/a", _endpoint("a"))])
    router.add_route("/b", _endpoint("b"))
    route, status = chosen(router, "/b", "GET")
    assert status == 200 and getattr(route, "path", None) == "/b"
