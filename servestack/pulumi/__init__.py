"""The Pulumi side: the program, stack files, the offline preview, `generate`, and the engine.

`program` builds the chosen cloud's component (servestack.components) from the `Deployment`
in a stack's config; `stackfile` writes and reads `stacks/Pulumi.<stack>.yaml`; `generate`
plans, picks a candidate and writes its stack file; `preview` runs the program under Pulumi's
mock runtime; `engine` drives the Pulumi CLI through the Automation API for the deploy loop.
The Pulumi SDKs load only when a stack is built, previewed or deployed; planning never loads them.
"""
