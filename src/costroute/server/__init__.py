"""The router: an OpenAI-compatible server that applies decided routes to traffic.

`app` speaks HTTP (ASGI, served by uvicorn), `chat` answers chat completions,
`routing` turns the routes file into plans, `upstream` calls providers,
`escalation` runs a cascade's check, `keys` and `ledger` hold who may call and
what each call cost, `metrics` exposes Prometheus text, `process` runs workers.
"""
