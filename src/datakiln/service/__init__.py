"""The datakiln service: bake jobs over HTTP, caches addressed by key, a web page, watch.

``datakiln serve`` runs ``app.create_app`` (FastAPI, from the ``datakiln[service]`` extra)
over a ``jobs.JobManager`` (bakes in child processes, jobs in SQLite: ``db.JobDB``).
``client.Client`` talks to it with the standard library alone; ``ensure.ensure`` does what
``Client.ensure`` does, in-process, with no service.
"""

from __future__ import annotations

from datakiln.errors import JobFailedError
from datakiln.service.client import Client
from datakiln.service.ensure import ensure

__all__ = ["Client", "JobFailedError", "ensure"]
