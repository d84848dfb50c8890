"""ASGI middleware for vLLM: every response names the replica that served it.

The default command runs `vllm serve ... --middleware servestack_replica.add_replica_header`
(vLLM adds a function given to --middleware with @app.middleware("http")). `servestack deploy`
sends bursts of readiness probes through the load balancer and counts distinct
X-Servestack-Replica values, so "min_replicas answered" means distinct VMs, not one VM twice.
"""

import os
import socket

HEADER = "X-Servestack-Replica"
REPLICA = os.environ.get("SKYPILOT_SERVE_REPLICA_ID") or socket.gethostname()


async def add_replica_header(request, call_next):
    response = await call_next(request)
    response.headers[HEADER] = REPLICA
    return response
