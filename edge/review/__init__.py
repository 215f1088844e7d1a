"""Operator review of the reject stream (``edgeqc review``, ``edgeqc export-review``).

Modules, one job each:

* :mod:`~edge.review.messages` — parse schema-v1 ``result``/``reject``/``status`` messages;
* :mod:`~edge.review.store` — SQLite store of rejects, frames and verdicts;
* :mod:`~edge.review.export` — reviewed rejects -> labelled folder + ``verdicts.csv``;
* :mod:`~edge.review.stations` / :mod:`~edge.review.live` — station health and the ZeroMQ feed;
* :mod:`~edge.review.archive_import` — rejects from a reject-archive folder;
* :mod:`~edge.review.events` — live events to the browsers (SSE);
* :mod:`~edge.review.auth` — loopback/token access rules;
* :mod:`~edge.review.app` / :mod:`~edge.review.server` — the FastAPI app and its uvicorn server;
* :mod:`~edge.review.cli` — the two subcommands. User docs: docs/review.md.

Nothing heavy is imported here: ``edgeqc --help`` stays fast.
"""
