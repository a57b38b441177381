"""``serve``: run the service's app on uvicorn until interrupted."""

from __future__ import annotations

import logging

from datakiln.service.app import DEFAULT_MAX_BODY_BYTES, create_app
from datakiln.service.jobs import JobManager, ServiceConfig

logger = logging.getLogger(__name__)


def serve(
    config: ServiceConfig,
    *,
    token: str,
    host: str = "127.0.0.1",
    port: int = 8765,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    access_log: bool = False,
) -> None:
    """Serve until SIGINT/SIGTERM; running bakes stop and resume at the next start.

    Binds ``host`` (loopback by default: pass ``0.0.0.0`` deliberately to expose it).
    """
    import uvicorn

    app = create_app(JobManager(config), token=token, max_body_bytes=max_body_bytes)
    logger.info(
        "datakiln service on http://%s:%d (root %s, state %s)",
        host,
        port,
        config.root,
        config.state_dir,
    )
    # log_config=None: uvicorn's loggers go through the handlers the CLI configured.
    uvicorn.Server(
        uvicorn.Config(app, host=host, port=port, log_config=None, access_log=access_log)
    ).run()
