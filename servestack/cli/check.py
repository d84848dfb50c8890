"""`servestack check`: which clouds have valid credentials, and whose they are (like `sky check`).

Each cloud is asked through the engine that would deploy to it, with a read-only probe that
creates nothing: AWS STS GetCallerIdentity (account and ARN), GCP's client config and OpenID
user info (project and account), Azure's client config (subscription and tenant), as data
sources for Terraform and invokes for Pulumi (the cloud's `identity_config` / `identity_probe`).
Each probe has a short timeout. `servestack deploy` runs the same check first and rules out the
clouds that fail it. The probes' scratch state lives in the per-user folder
(`$XDG_STATE_HOME/servestack/check/<engine>`); its throwaway Pulumi stacks hold no secret, so
without PULUMI_CONFIG_PASSPHRASE an empty passphrase does for them.

Exit codes: 0 at least one cloud asked has valid credentials, 3 none has, 2 bad input or setup.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from servestack import clouds
from servestack.cli import options

EXIT_NO_CREDENTIALS = 3
DEFAULT_TIMEOUT_S = 60.0


def register(sub) -> None:
    parser = sub.add_parser("check", help="which clouds have valid credentials, and whose",
                            description=__doc__.split("\n\n")[1],
                            formatter_class=argparse.RawDescriptionHelpFormatter,
                            epilog=__doc__.rsplit("\n\n", 1)[1])
    parser.add_argument("--cloud", choices=clouds.NAMES, action="append",
                        help="check only this cloud (repeatable; default: every cloud)")
    parser.add_argument("--engine", choices=options.ENGINES, default="pulumi",
                        help="the engine whose probes ask the clouds (default pulumi)")
    parser.add_argument("--timeout", type=options.duration, default=DEFAULT_TIMEOUT_S,
                        metavar="DURATION", help="per cloud, e.g. 30s (default 60s)")
    parser.add_argument("--json", action="store_true", help="one JSON object per cloud")
    parser.set_defaults(handler=run_check)


def make_engine(engine: str):
    """The engine whose probes run the check (tests replace this)."""
    from servestack.deploy.lock import user_dir

    work_dir = user_dir() / "check" / engine
    if engine == "terraform":
        from servestack.terraform.engine import TerraformEngine

        return TerraformEngine(work_dir)
    from servestack.pulumi.engine import PulumiEngine

    if "PULUMI_CONFIG_PASSPHRASE_FILE" not in os.environ:
        os.environ.setdefault("PULUMI_CONFIG_PASSPHRASE", "")  # the probes hold no secret
    return PulumiEngine(work_dir)


def run_check(args) -> int:
    engine = make_engine(args.engine)
    found = []
    for cloud in args.cloud or clouds.NAMES:
        if not engine.capabilities(cloud).credentials_check:
            found.append({"cloud": cloud, "ok": None, "who": "",
                          "error": f"the {args.engine} engine cannot ask {cloud}"})
            continue
        found.append(engine.identity(cloud, timeout_s=args.timeout).to_json())
    if args.json:
        sys.stdout.write(json.dumps(found, indent=2) + "\n")
    else:
        sys.stdout.write("".join(_line(item) for item in found))
    return 0 if any(item["ok"] for item in found) else EXIT_NO_CREDENTIALS


def _line(item: dict) -> str:
    if item["ok"]:
        return f"{item['cloud']:6} enabled   {item['who']}\n"
    state = "unknown" if item["ok"] is None else "disabled"
    return f"{item['cloud']:6} {state:9} {' '.join(item['error'].split())[:300]}\n"
