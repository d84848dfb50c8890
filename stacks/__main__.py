"""Entry point Pulumi runs (`main: stacks/` in Pulumi.yaml); the program lives in the package."""

from servestack.program import main

main()
