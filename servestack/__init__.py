"""servestack: serve an open LLM with vLLM on your own cloud accounts, as infrastructure as code.

The path a request takes: `spec` (SkyPilot YAML -> ServiceSpec) -> `catalog` (Offers) ->
`planner` (ranked Candidates) -> `deployment` (every build decision, made once) -> `pulumi` or
`terraform` (stacks and their engines) -> `deploy` (the fallback loop). `clouds` holds each
cloud's knowledge; `cli` is the command line. See the README's Architecture section.
"""
