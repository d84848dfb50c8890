"""`servestack init [DIR]`: make a folder a Pulumi project that runs servestack's program (what
`pulumi new` does for a template), so that `servestack generate` then `pulumi up -s <stack>`
work from an installed package, with no checkout of the repo.

It writes three files and nothing else: `Pulumi.yaml` (the project: Python runtime, `main` the
program file below, `stackConfigDir` where generate writes stack files), `__main__.py` (the
program: it calls `servestack.pulumi.program.main`, which lives in the package) and a
`.gitignore` for what deploys leave behind. A file that exists is kept unless `--force`.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from servestack.cli import options
from servestack.cli.options import DEFAULT_STACKS_DIR, DEFAULT_STATE_DIR, EXIT_OK
from servestack.errors import UserError

PROJECT_FILE = "Pulumi.yaml"
PROGRAM_FILE = "__main__.py"
# Pulumi's project name rule: letters, digits, `-`, `_` and `.`.
PROJECT_NAME = re.compile(r"[^A-Za-z0-9_.-]+")

# `main` may name a file: the Python language host runs it with runpy, as it runs a folder's
# __main__.py (https://www.pulumi.com/docs/iac/concepts/projects/project-file/). toolchain pip
# with no virtualenv: the python on PATH, the one servestack is installed in.
PROJECT = """\
name: {name}
description: Serve an open LLM with vLLM behind one endpoint (servestack).
runtime:
  name: python
  options:
    toolchain: pip
main: {program}
stackConfigDir: {stacks}
"""
PROGRAM = '''\
"""The Pulumi program of this project (written by `servestack init`): servestack's program,
which reads the stack file `servestack generate` wrote (stacks/Pulumi.<stack>.yaml)."""

from servestack.pulumi.program import main

main()
'''
# Terraform state holds every resource's attributes and the provider plan files: never commit
# them; .terraform/ is the providers terraform init downloads.
IGNORED = f"""\
# written by servestack init
{DEFAULT_STATE_DIR}/
__pycache__/
.terraform/
terraform.tfstate
terraform.tfstate.*
*.tfplan
"""


def register(sub) -> None:
    parser = sub.add_parser("init", help="make a folder a Pulumi project for servestack's "
                                         "stacks (like pulumi new)")
    parser.add_argument("dir", nargs="?", default=".", type=options.folder,
                        help="the project folder (default: the current one; created if absent)")
    parser.add_argument("--name", type=options.safe_name,
                        help="the Pulumi project name (default: the folder's name)")
    parser.add_argument("--force", action="store_true", help="overwrite files that exist")
    parser.set_defaults(handler=lambda args: run_init(Path(args.dir), args.name, args.force))


def project_files(name: str) -> dict[str, str]:
    """File name -> text of every file init writes."""
    return {
        PROJECT_FILE: PROJECT.format(name=name, program=PROGRAM_FILE, stacks=DEFAULT_STACKS_DIR),
        PROGRAM_FILE: PROGRAM,
        ".gitignore": IGNORED,
    }


def run_init(folder: Path, name: str | None, force: bool) -> int:
    from servestack.fsutil import write_atomic

    name = name or PROJECT_NAME.sub("-", folder.resolve().name).strip("-.")
    if not name:
        raise UserError("the folder's name is no Pulumi project name: pass --name NAME")
    lines = []
    for file, text in project_files(name).items():
        path = folder / file
        if path.exists() and not force:
            lines.append(f"Kept {path} (it exists; --force overwrites it).")
            continue
        write_atomic(path, text)
        lines.append(f"Wrote {path}.")
    there = "" if folder.resolve() == Path.cwd() else f"cd {folder} && "
    lines.append(f"Next: {there}servestack generate SPEC, then pulumi up -s <stack> "
                 "(or servestack deploy SPEC).")
    sys.stdout.write("\n".join(lines) + "\n")
    return EXIT_OK
