"""`servestack generate` (a candidate's Pulumi stack file or Terraform configuration) and
`servestack preview` (what a stack would create, under Pulumi's mock runtime)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from servestack.cli import options
from servestack.cli.options import EXIT_OK, GenerateRequest, PreviewRequest
from servestack.cli.plan import (
    make_plan,
    print_table,
    require_values,
    secret_warnings,
)
from servestack.errors import UserError


def register(sub) -> None:
    parser = sub.add_parser("generate", help="write the Pulumi stack file for a candidate")
    parser.add_argument("spec", nargs="?", help="service YAML (default: embedded Mixtral)")
    options.add_view_options(parser, hidden=True)
    options.add_filter_options(parser)
    options.add_generate_options(parser)
    parser.set_defaults(handler=lambda args: run_generate(
        options.generate_request(args, args.spec)))

    parser = sub.add_parser("preview", help="what a stack would create (offline, no CLI)")
    parser.add_argument("stack", type=options.safe_name,
                        help="stack name (stacks/Pulumi.<stack>.yaml)")
    parser.add_argument("--offline", action="store_true", required=True,
                        help="run the program under the Pulumi mock runtime (required: "
                             "a live preview is `pulumi preview`)")
    options.add_stacks_dir(parser, "where stack files are (stacks/)")
    parser.add_argument("--json", action="store_true", help="the resources as JSON")
    parser.set_defaults(handler=lambda args: run_preview(options.preview_request(args)))


def run_generate(request: GenerateRequest) -> int:
    if request.format == "terraform":
        from servestack.terraform.generate import generate_terraform as generate
        from servestack.terraform.generate import summary
    else:
        from servestack.pulumi.generate import generate, summary

    inputs, result = make_plan(request.plan)
    require_values(inputs, secrets=False)
    for warning in secret_warnings(inputs):  # a missing secret is needed by `up`, not here
        print(f"warning: {warning}", file=sys.stderr)
    if request.table is not None:
        print_table(inputs, result, request.table)
    chosen = request.deployment
    if len(result.placement) > 1 and request.rank is None and request.pick is None:
        return _generate_service(request, inputs, result)
    if chosen.front:
        print(f"warning: --front {chosen.front}: the plan places every replica in one pool "
              f"({result.placement[0].label if result.placement else 'the first candidate'}),"
              " so there is no front to build; the stack serves on its own endpoint",
              file=sys.stderr)
    with _writing(request.stacks_dir):
        generated = generate(inputs, result, rank=request.rank, pick=request.pick,
                             stack=request.stack, stacks_dir=request.stacks_dir,
                             choices=chosen)
    sys.stdout.write(summary(generated))
    return EXIT_OK


@contextmanager
def _writing(stacks_dir: str) -> Iterator[None]:
    """A stacks folder the system will not write (a file on its path, no permission, a full
    disk) is the user's to fix: one line, exit 2, not a traceback."""
    try:
        yield
    except OSError as exc:
        where = exc.filename or stacks_dir
        raise UserError(f"--stacks-dir {stacks_dir}: cannot write {where}: "
                        f"{exc.strerror or exc}") from None


def _generate_service(request: GenerateRequest, inputs, result) -> int:
    """A placement over several pools: every pool's stack, the key stack, the front stack."""
    from servestack.service import build_layout

    if request.format == "terraform":
        from servestack.terraform.generate import generate_service
    else:
        from servestack.pulumi.generate import generate_service
    layout = build_layout(inputs, result, result.placement, request.deployment,
                          prefix=request.stack)
    for note in layout.notes:
        print(f"note: {note}", file=sys.stderr)
    with _writing(request.stacks_dir):
        generated = generate_service(inputs, result, layout, stacks_dir=request.stacks_dir)
    sys.stdout.write(generated.summary)
    return EXIT_OK


def run_preview(request: PreviewRequest) -> int:
    try:
        from servestack.pulumi import preview
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise UserError(f"preview needs the Pulumi SDKs: pip install 'servestack[pulumi]' "
                        f"({exc})") from None
    recording = preview.preview_stack(request.stack, request.stacks_dir)
    if request.json:
        sys.stdout.write(preview.dump(preview.preview_json(recording)))
    else:
        sys.stdout.write(preview.preview_table(recording))
    return EXIT_OK
