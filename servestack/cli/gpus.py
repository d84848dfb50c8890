"""`servestack gpus [NAME]`: which GPUs exist, in which counts, where, at which prices."""

from __future__ import annotations

import sys

from servestack import clouds
from servestack.cli import options
from servestack.cli.options import EXIT_OK, GpusRequest


def register(sub) -> None:
    parser = sub.add_parser("gpus", help="which GPUs exist, where, at which prices")
    parser.add_argument("name", nargs="?", help="one GPU, e.g. A100-80GB (case-insensitive)")
    parser.add_argument("--cloud", choices=clouds.NAMES)
    parser.add_argument("--region")
    options.add_catalog_dir(parser)
    parser.set_defaults(handler=lambda args: run_gpus(options.gpus_request(args)))


def run_gpus(request: GpusRequest) -> int:
    from servestack.gpus import gpus_table

    sys.stdout.write(gpus_table(request.name, cloud=request.cloud, region=request.region,
                                catalog_dir=request.catalog_dir))
    return EXIT_OK
