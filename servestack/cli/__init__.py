"""The command line: `servestack <command>` and `plan-mixtral`.

What lives here: the top parser and dispatch (`main`), one module per command group (`plan`,
`gpus`, `generate` for generate and preview, `catalog`, `deploy` for deploy, status and
destroy), and `options`, where every shared option is added and checked once and parsed into
a typed request (`PlanRequest`, `GenerateRequest`, `DeployRequest`, ...). Command modules import
`options`, never `main`.

What does not: planning, stack generation, the deploy loop and the catalog code. They take the
typed requests' values as plain arguments and never see argparse.
"""
