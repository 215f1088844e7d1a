"""The review web application (FastAPI): static page, JSON API, live events.

Routes (all behind :class:`edge.review.auth.AccessGuard`):

* ``GET /`` the page; ``GET /static/*`` its JS/CSS (shipped in the package, no CDN).
* ``GET /api/config`` labels, pass classes, shift start, keyboard map.
* ``GET /api/rejects`` history, newest first: ``label``, ``since``/``until`` (UNIX s),
  ``reviewed`` (``true``/``false``), ``station``, ``page`` (from 1), ``page_size`` (1-200).
* ``GET /api/rejects/{id}`` one reject with its verdict history; ``GET /api/rejects/{id}/image``
  its frame (``image/jpeg`` or ``image/png``).
* ``POST /api/rejects/{id}/verdict`` JSON ``{"verdict": "defect"|"good", "true_class": str|null,
  "who": str}``; 422 with the reason when the class does not fit.
* ``GET /api/stats`` counts per class and false reject rate (default window: the current shift).
* ``GET /api/stations`` station health; ``GET /api/events`` Server-Sent Events: ``reject``,
  ``verdict``, ``station``, ``resync``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, Response
from fastapi.sse import EventSourceResponse, ServerSentEvent
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from edge.review.events import EventHub
from edge.review.shifts import shift_start
from edge.review.store import RejectFilter, ReviewStore, StoreError

STATIC = Path(__file__).resolve().parent / "static"
# The page loads nothing from elsewhere and cannot be framed by another site.
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; "
       "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
MEDIA = {"jpg": "image/jpeg", "png": "image/png"}


class VerdictIn(BaseModel):
    verdict: Literal["defect", "good"]
    true_class: str | None = Field(None, max_length=64)
    who: str = Field("operator", min_length=1, max_length=64)


def create_app(
    store: ReviewStore,
    hub: EventHub,
    health: Callable[[], list[dict[str, Any]]],
    shift_starts: list[str],
) -> FastAPI:
    """Build the app around an open store, an event hub and a health source (the station feed)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        hub.bind(asyncio.get_running_loop())
        yield
        hub.close()

    app = FastAPI(title="edgeqc review", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"cache-control": "no-cache", "content-security-policy": CSP})

    @app.get("/api/config")
    def config() -> dict[str, Any]:
        return {
            "labels": store.labels(),
            "pass_classes": list(store.pass_classes),
            "shift_start": shift_start(time.time(), shift_starts),
            "shift_starts": shift_starts,
        }

    @app.get("/api/rejects")
    def rejects(
        label: str | None = None,
        since: float | None = None,
        until: float | None = None,
        reviewed: bool | None = None,
        station: str | None = None,
        page: int = Query(1, ge=1),
        page_size: int = Query(50, ge=1, le=200),
    ) -> dict[str, Any]:
        flt = RejectFilter(label=label or None, since=since, until=until, reviewed=reviewed, station_id=station or None)
        items, total = store.list_rejects(flt, limit=page_size, offset=(page - 1) * page_size)
        return {"items": items, "total": total, "page": page, "page_size": page_size}

    @app.get("/api/rejects/{reject_id}")
    def reject(reject_id: int) -> dict[str, Any]:
        r = store.get(reject_id)
        if r is None:
            raise HTTPException(404, f"reject id {reject_id} not in the store")
        r["history"] = store.verdict_history(reject_id)
        return r

    @app.get("/api/rejects/{reject_id}/image")
    def image(reject_id: int) -> Response:
        img = store.image(reject_id)
        if img is None:
            raise HTTPException(404, f"reject id {reject_id} has no frame")
        return Response(img[0], media_type=MEDIA[img[1]], headers={"cache-control": "private, max-age=86400"})

    @app.post("/api/rejects/{reject_id}/verdict")
    def verdict(reject_id: int, body: VerdictIn, request: Request) -> dict[str, Any]:
        client = request.client.host if request.client else None
        try:
            r = store.set_verdict(reject_id, body.verdict, body.true_class, who=body.who, client=client)
        except StoreError as exc:
            code = 404 if "not in the store" in str(exc) else 422
            raise HTTPException(code, str(exc)) from None
        hub.publish("verdict", r)
        return r

    @app.get("/api/stats")
    def stats(since: float | None = None, until: float | None = None) -> dict[str, Any]:
        start = shift_start(time.time(), shift_starts) if since is None else since
        return {"since": start, "until": until, **store.stats(start, until)}

    @app.get("/api/stations")
    def stations() -> list[dict[str, Any]]:
        return health()

    @app.get("/api/events", response_class=EventSourceResponse)
    async def events() -> AsyncIterator[ServerSentEvent]:
        yield ServerSentEvent(event="hello", data={"ts": time.time()}, retry=1000)
        async for name, data in hub.subscribe():
            yield ServerSentEvent(event=name, data=data)

    return app
