"""``gsrm-serve``: the FastAPI app (``create_app``) and its command line (``main``).

Why a factory: tests and benchmarks build apps with their own settings and, optionally, an
injected ``GSRM`` (a fast model-free one, or a fake backend); the command line builds one from
flags and ``GSRM_*`` environment variables. The model is built and loaded in the app's
lifespan (in the background: ``/health`` says ``loading`` until it is ready, and requests that
arrive meanwhile wait in the queue), never at import.

Endpoints (DESIGN.md section 4): ``GET /health``, ``GET /v1/models``, ``GET /metrics``,
``POST /v1/chat/completions``, ``POST /v1/rewards``, ``POST /score`` (and ``/v1/score``),
``POST /get_reward``.

Example::

    $ gsrm-serve --judge embedding --port 8000          # default model, loopback only
    $ GSRM_API_KEY=s3cret gsrm-serve --backend sentences --judge lexical
    $ curl -s 127.0.0.1:8000/health

    >>> from fastapi.testclient import TestClient
    >>> from gsrm.model import GSRM
    >>> from server.app import create_app
    >>> from server.settings import Settings
    >>> app = create_app(Settings(backend="sentences", judge="lexical"),
    ...                  gsrm=GSRM.from_names(backend="sentences", judge="lexical"))
    >>> with TestClient(app) as c:
    ...     c.post("/score", json={"text_1": "Add 2 and 3 = 5.", "text_2": "Add 2 and 3 = 5."}
    ...            ).json()["data"][0]["score"]
    1.0
"""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI

from server.errors import install_handlers
from server.metrics import Metrics
from server.middleware import (
    GuardMiddleware,
    MetricsMiddleware,
    ShutdownMiddleware,
    route_paths,
)
from server.routes import router
from server.service import RewardService
from server.settings import Settings, parse_settings

if TYPE_CHECKING:
    from gsrm.model import GSRM

log = logging.getLogger("gsrm.server")

DESCRIPTION = """\
Generative Structure Reward Model (RLKD) as an OpenAI-compatible service. Concurrent requests
are batched dynamically onto one model thread; decompositions are cached by content, so a group
of students sharing a teacher decomposes the teacher once. Failures are HTTP errors with an
OpenAI-style body, never rewards."""


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gsrm")
    except PackageNotFoundError:  # running from a source tree
        return "0+unknown"


def create_app(settings: Settings | None = None, gsrm: GSRM | None = None) -> FastAPI:
    """The app for ``settings``; ``gsrm`` (optional) replaces the model the settings describe."""
    settings = settings or Settings()
    metrics = Metrics()
    service = RewardService(settings, gsrm=gsrm, metrics=metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(title="gsrm-serve", version=_version(), description=DESCRIPTION,
                  lifespan=lifespan)
    app.state.settings = settings
    app.state.service = service
    app.state.metrics = metrics
    install_handlers(app)
    app.include_router(router)
    app.add_middleware(GuardMiddleware, api_key=settings.api_key,
                       max_body_bytes=settings.max_body_bytes)
    app.add_middleware(ShutdownMiddleware, retry_after=settings.retry_after_s)
    # added last = outermost: it also counts the 401/413 answers of the guard
    app.add_middleware(MetricsMiddleware, metrics=metrics, paths=route_paths([*app.routes, *router.routes]))
    return app


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``gsrm-serve``; returns the process exit code."""
    from pydantic import ValidationError

    try:
        settings = parse_settings(argv)
    except ValidationError as exc:
        for e in exc.errors():
            where = ".".join(str(p) for p in e.get("loc", ())) or "settings"
            msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
            print(f"gsrm-serve: error: {where}: {msg}", file=sys.stderr)
        return 2
    import uvicorn

    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = uvicorn.Config(
        create_app(settings), host=settings.host, port=settings.port,
        log_level=settings.log_level, access_log=settings.access_log,
        timeout_graceful_shutdown=settings.graceful_timeout_s,  # type: ignore[arg-type]
    )
    server = uvicorn.Server(config)
    server.run()
    return 0 if server.started else 1


if __name__ == "__main__":
    raise SystemExit(main())
