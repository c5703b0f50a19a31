"""Starlette's router with the routes that can match a fixed path looked up at once.

Starlette tries every route's pattern in turn until one matches the path and the method
(``Match.FULL``); the first route that matches only the path (``Match.PARTIAL``) answers
otherwise, which gives 405. Each try costs a regular expression and a dictionary or two
(about 6,500 instructions), and the app has more than 40 routes.

:class:`IndexedRouter` decides the same way, over fewer routes. For every path a route names
without parameters (``/token``, ``/healthz``), it keeps, in their order, the routes whose
pattern matches that path; a request for that path tries only those for a full match. A
route left out of that list can only answer ``Match.NONE`` for the path, so the result is
the same route. Without a full match (a wrong method: 405), Starlette decides over every
route. Every other path (with parameters, unknown, under a mount) tries every route, as
Starlette does. Routes that are neither a :class:`Route` nor a :class:`Mount` stay in every
list.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette._utils import get_route_path
from starlette.routing import BaseRoute, Match, Mount, Route, Router
from starlette.types import Receive, Scope, Send


def _may_match(route: BaseRoute, path: str) -> bool:
    """False only when ``route`` answers Match.NONE for every HTTP request for ``path``."""
    if isinstance(route, Route | Mount):
        return route.path_regex.match(path) is not None
    return True  # a kind of route we cannot see into: always tried


class IndexedRouter(Router):
    """A :class:`Router` that tries, for a fixed path, only the routes that can match it."""

    def __init__(self, routes: Sequence[BaseRoute] | None = None, **kwargs: Any) -> None:
        super().__init__(routes, **kwargs)
        self._by_path: dict[str, list[BaseRoute]] = {}
        self.reindex()

    def reindex(self) -> None:
        """Build the lookup again (after the routes changed)."""
        fixed = {
            route.path
            for route in self.routes
            if isinstance(route, Route) and not route.param_convertors
        }
        self._by_path = {
            path: [route for route in self.routes if _may_match(route, path)] for path in fixed
        }

    def add_route(self, *args: Any, **kwargs: Any) -> None:
        super().add_route(*args, **kwargs)
        self.reindex()

    def mount(self, *args: Any, **kwargs: Any) -> None:
        super().mount(*args, **kwargs)
        self.reindex()

    def host(self, *args: Any, **kwargs: Any) -> None:
        super().host(*args, **kwargs)
        self.reindex()

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan, websocket: as Starlette
            await super().app(scope, receive, send)
            return
        if "router" not in scope:
            scope["router"] = self
        candidates = self._by_path.get(get_route_path(scope))
        if candidates is None:  # every route, in order
            await super().app(scope, receive, send)
            return
        for route in candidates:
            match, child_scope = route.matches(scope)
            if match is Match.FULL:
                scope["route"] = route
                scope.update(child_scope)
                await route.handle(scope, receive, send)
                return
        # a wrong method (405) or no route: rare, decided by Starlette over every route
        await super().app(scope, receive, send)
