"""``join-agent run``: the resident process, on the standard library alone. Its loop
(loop), what it publishes (reporting), its worker children (workers), the serving
certificate and [[certificate]] tables it schedules (sidejobs), what a reload may change
(reloading), the start-up before the loop (startup), and the optional Prometheus
endpoint (metrics)."""
