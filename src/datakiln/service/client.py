"""``Client``: the service's API from Python, on the standard library alone.

A trainer needs no FastAPI to ask a service for a cache::

    client = datakiln.Client("http://127.0.0.1:8765", token=token)
    url = client.ensure({"sources": ["/data/photos"], "image": {"height": 64, "width": 64}})
    dataset = datakiln.open_cache(url)
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any, cast

from datakiln.errors import JobFailedError as JobFailedError  # its old home re-exports it
from datakiln.errors import ServiceError as ServiceError
from datakiln.errors import SpecError
from datakiln.service.db import JobView

# Spec fields the service chooses itself (see service/specs.py).
_SERVICE_FIELDS = ("scheduler", "workers")


def _spec_table(spec: Any) -> dict[str, Any]:
    """A spec table from a mapping or a ``BakeSpec`` (the service picks the scheduler)."""
    if isinstance(spec, Mapping):
        return dict(spec)
    to_dict = getattr(type(spec), "to_dict", None)
    if to_dict is None:
        raise SpecError(f"spec must be a table of bake spec fields or a BakeSpec; got {spec!r}")
    table = to_dict(spec)
    return {k: v for k, v in table.items() if k not in _SERVICE_FIELDS and v is not None}


class Client:
    """Talks to one ``datakiln serve``.

    Args:
        url: the service's base URL, e.g. ``http://127.0.0.1:8765``.
        token: the service's bearer token (needed to submit and cancel).
        timeout_s: per-request timeout.
    """

    def __init__(self, url: str, *, token: str | None = None, timeout_s: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self._token = token
        self.timeout_s = timeout_s

    def __repr__(self) -> str:  # never shows the token
        return f"Client({self.url!r})"

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self._token:
            request.add_header("Authorization", f"Bearer {self._token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as err:
            try:
                detail = json.loads(err.read()).get("detail", err.reason)
            except ValueError:
                detail = err.reason
            if err.code == 422:
                raise SpecError(str(detail)) from None
            raise ServiceError(f"{method} {path}: HTTP {err.code}: {detail}") from None
        except OSError as err:
            raise ServiceError(f"cannot reach the datakiln service at {self.url}: {err}") from err

    def submit(self, spec: Any, *, watch_interval_s: float | None = None) -> JobView:
        """Submit a bake; returns the job (``id``, ``state``, ``cache``, ...)."""
        body: dict[str, Any] = {"spec": _spec_table(spec)}
        if watch_interval_s is not None:
            body["watch"] = {"interval_s": watch_interval_s}
        return cast("JobView", self._request("POST", "/jobs", body))

    def status(self, job_id: str) -> JobView:
        return cast("JobView", self._request("GET", f"/jobs/{job_id}"))

    def jobs(self) -> list[JobView]:
        return cast("list[JobView]", self._request("GET", "/jobs"))

    def cancel(self, job_id: str) -> JobView:
        return cast("JobView", self._request("DELETE", f"/jobs/{job_id}"))

    def wait(
        self,
        job_id: str,
        *,
        timeout_s: float | None = None,
        poll_s: float = 0.5,
        progress: Callable[[Mapping[str, Any]], None] | None = None,
    ) -> JobView:
        """Poll until the job succeeds; return it.

        Raises:
            JobFailedError: the job failed or was cancelled.
            TimeoutError: still not done after ``timeout_s``.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            job = self.status(job_id)
            if progress is not None:
                progress(job)
            if job["state"] == "succeeded":
                return job
            if job["state"] in ("failed", "cancelled"):
                raise JobFailedError(
                    f"job {job_id} {job['state']}: {job.get('error') or 'no error recorded'}"
                )
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} is still {job['state']} after {timeout_s} s")
            time.sleep(poll_s)

    def ensure(
        self,
        spec: Any,
        *,
        timeout_s: float | None = None,
        progress: Callable[[Mapping[str, Any]], None] | None = None,
    ) -> str:
        """The URL of an up-to-date cache of ``spec``: baked once, however many ask."""
        job = self.submit(spec)
        if job["state"] != "succeeded":
            job = self.wait(job["id"], timeout_s=timeout_s, progress=progress)
        return str(job["cache"])
