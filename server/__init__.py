"""gsrm-serve: the OpenAI-compatible GSRM scoring server (FastAPI + uvicorn).

``server.app.create_app(settings, gsrm=None)`` builds the app, ``server.app.main`` is the
``gsrm-serve`` command. Modules: ``settings`` (flags / ``GSRM_*`` env), ``protocol`` (wire
shapes), ``service`` (limits, batching, the model thread), ``batcher``, ``routes``, ``errors``,
``middleware``, ``metrics``.
"""
