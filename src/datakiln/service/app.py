"""The HTTP API of ``datakiln serve`` (FastAPI), over a ``JobManager`` and the cache root.

Reading (jobs, caches, metrics, the page) needs no token; submitting and cancelling need the
bearer token, compared in constant time. The token is never logged (uvicorn's access log has
no headers) and never stored. A bad spec answers 422 with the CLI's one-line message.
"""

from __future__ import annotations

import contextlib
import hmac
import io
import json
import posixpath
import time
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from datakiln.errors import CacheNotFoundError, DatakilnError, SourceError, SpecError
from datakiln.service.db import JobRecord, JobView
from datakiln.service.jobs import JobManager, eta_s
from datakiln.service.specs import cache_url, check_cache_name

# Request bodies above this many bytes are refused (413): a spec is a few hundred bytes.
DEFAULT_MAX_BODY_BYTES = 1 << 20


class WatchRequest(BaseModel):
    """The ``watch`` part of a job request: re-list the sources every ``interval_s``."""

    interval_s: float = Field(description="seconds between two listings of the sources")


class JobRequest(BaseModel):
    """The body of ``POST /jobs``: a bake spec, and optionally a watch."""

    spec: dict[str, Any] = Field(description="the bake spec: the same table as a TOML spec")
    watch: WatchRequest | None = Field(
        default=None, description="keep watching the sources and bake what is new"
    )


def _job_view(record: JobRecord) -> dict[str, Any]:
    view: JobView = {**record.to_dict(), "eta_s": eta_s(record)}
    return dict(view)


def _json(value: Any) -> Response:
    return Response(content=json.dumps(value).encode(), media_type="application/json")


def _metrics(manager: JobManager) -> str:
    """Prometheus text exposition of the service's jobs."""
    now = time.time()
    jobs = manager.jobs()
    lines = ["# HELP datakiln_jobs Jobs by state.", "# TYPE datakiln_jobs gauge"]
    lines += [f'datakiln_jobs{{state="{s}"}} {n}' for s, n in manager.counts().items()]
    queued = sum(r.state == "queued" for r in jobs)
    rate = 0.0
    for r in jobs:
        done = r.progress.get("inputs_done", 0)
        if r.state == "running" and r.started is not None and now > r.started:
            rate += done / (now - r.started)
    rejected = sum(
        (r.report or {}).get("rejected", 0) if r.report else r.progress.get("rejected", 0)
        for r in jobs
    )
    lines += [
        "# HELP datakiln_queue_length Jobs waiting for a bake slot.",
        "# TYPE datakiln_queue_length gauge",
        f"datakiln_queue_length {queued}",
        "# HELP datakiln_inputs_per_second Inputs baked per second by the running jobs.",
        "# TYPE datakiln_inputs_per_second gauge",
        f"datakiln_inputs_per_second {rate:.3f}",
        "# HELP datakiln_rejected_inputs Inputs rejected, over the jobs listed.",
        "# TYPE datakiln_rejected_inputs gauge",
        f"datakiln_rejected_inputs {rejected}",
        "# HELP datakiln_bakes_started_total Bake processes started by this service process.",
        "# TYPE datakiln_bakes_started_total counter",
        f"datakiln_bakes_started_total {manager.bakes_started}",
    ]
    return "\n".join(lines) + "\n"


def _cache_name(root_path: str, url: str) -> str:
    from datakiln.cache.layout import store_fs

    return posixpath.relpath(store_fs(url)[1], root_path)


def create_app(
    manager: JobManager, *, token: str, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
) -> FastAPI:
    """The service's ASGI app; it starts and stops ``manager`` with itself."""
    if not token:
        raise SpecError("the service needs a token: set DATAKILN_TOKEN or pass --token-file")
    root = manager.config.root
    expected = token.encode()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        manager.start()
        try:
            yield
        finally:
            manager.stop()

    app = FastAPI(
        title="datakiln",
        summary="Bake jobs and the caches they make",
        lifespan=lifespan,
        max_body_size=max_body_bytes,
    )

    def require_token(authorization: str | None = Header(default=None)) -> None:
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), expected):
            raise HTTPException(
                status_code=401,
                detail="this endpoint needs the service's token: Authorization: Bearer TOKEN",
                headers={"WWW-Authenticate": "Bearer"},
            )

    @app.exception_handler(SpecError)
    @app.exception_handler(SourceError)
    async def bad_spec(request: Request, err: DatakilnError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": str(err)})

    @app.exception_handler(CacheNotFoundError)
    async def no_cache(request: Request, err: CacheNotFoundError) -> JSONResponse:
        return JSONResponse(status_code=404, content={"detail": str(err)})

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "root": root, "jobs": manager.counts()}

    @app.post("/jobs", dependencies=[Depends(require_token)])
    def submit(request: JobRequest) -> dict[str, Any]:
        watch = request.watch.interval_s if request.watch is not None else None
        return _job_view(manager.submit(request.spec, watch_interval_s=watch))

    # The polled endpoints answer plain JSON directly: no response-model pass per request.
    @app.get("/jobs", response_class=JSONResponse)
    async def list_jobs() -> Response:
        return _json([_job_view(r) for r in manager.jobs()])

    @app.get("/jobs/{job_id}", response_class=JSONResponse)
    async def job(job_id: str) -> Response:
        record = manager.get(job_id)
        if record is None:
            raise HTTPException(status_code=404, detail=f"no job {job_id!r}")
        return _json(_job_view(record))

    @app.delete("/jobs/{job_id}", dependencies=[Depends(require_token)])
    def cancel(job_id: str) -> dict[str, Any]:
        record = manager.cancel(job_id)
        if record is None:
            raise HTTPException(status_code=404, detail=f"no job {job_id!r}")
        return _job_view(record)

    @app.get("/caches")
    def caches() -> list[dict[str, Any]]:
        from datakiln.cache.catalog import list_caches
        from datakiln.cache.layout import store_fs

        fs, root_path = store_fs(root)
        if not fs.exists(root_path):
            return []
        return [
            {
                "name": _cache_name(root_path, e.url),
                "url": e.url,
                "rows": e.rows,
                "modality": e.modality,
                "created": e.created,
                "size_bytes": e.size_bytes,
                "version": e.version,
            }
            for e in list_caches(root)
        ]

    def _checked(name: str) -> str:
        try:
            return cache_url(root, check_cache_name(name))
        except SpecError as err:
            raise HTTPException(status_code=400, detail=str(err)) from err

    @app.get("/caches/{name:path}/preview.png", response_class=Response)
    def preview(name: str, count: int = 36, seed: int = 0) -> Response:
        from datakiln.preview import render_preview

        picture = render_preview(_checked(name), count=min(max(count, 1), 144), seed=seed)
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        return Response(content=buffer.getvalue(), media_type="image/png")

    @app.get("/caches/{name:path}")
    def inspect(name: str) -> dict[str, Any]:
        from datakiln.cache.inspect import describe_cache

        return {"name": name, **describe_cache(_checked(name))}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> str:
        return _metrics(manager)

    static = resources.files("datakiln.service") / "static"

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> str:
        return (static / "index.html").read_text(encoding="utf-8")

    @app.get("/cache", response_class=HTMLResponse, include_in_schema=False)
    async def cache_page() -> str:
        return (static / "cache.html").read_text(encoding="utf-8")

    app.mount("/static", StaticFiles(directory=str(static)), name="static")
    return app
