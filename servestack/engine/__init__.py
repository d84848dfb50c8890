"""The engine layer: what the deploy loop needs from whatever runs the stacks.

interface.py holds the `Engine` protocol, its result types (`StackRef`, `OpResult`,
`Diagnostic`, `Leftover`, `QuotaLimit`), stack naming, and `Capabilities`: what an engine can do
for a cloud is declared (the engine's own abilities, and the read-only probes the cloud's module
has), so the loop asks before it calls instead of reading meaning into an empty answer.
process.py is the one watchdog every engine child command runs under (timeout, interrupt, reap).

The engines themselves live beside their renderers: servestack.pulumi.engine and
servestack.terraform.engine; the per-cloud probes they run live in components/<cloud>.py and
servestack/terraform/<cloud>.py. Nothing here knows a cloud by name or imports an engine SDK.
"""

from servestack.engine.interface import (
    ALL,
    ANY,
    Capabilities,
    Diagnostic,
    Engine,
    Identity,
    Leftover,
    OpResult,
    QuotaLimit,
    StackRef,
    parse_limits,
    stack_name,
    stack_ref,
    sweep_failed,
)

__all__ = ["ALL", "ANY", "Capabilities", "Diagnostic", "Engine", "Identity", "Leftover", "OpResult",
           "QuotaLimit", "StackRef", "parse_limits", "stack_name", "stack_ref", "sweep_failed"]
