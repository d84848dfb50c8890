"""Entry point Pulumi runs (`main: stacks/` in Pulumi.yaml); the program lives in the package."""

from servestack.pulumi.program import main

main()
