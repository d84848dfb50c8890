"""The weight cache's part of the bootstrap (--weight-cache, `Deployment.weight_cache`; see
servestack.deployment.cache for what it is and servestack_cache.py for what runs on the VM).

It adds the cache's settings to servestack.env (only then, so other documents are unchanged),
servestack-cache (the tool's launcher, in a venv of its own with the cloud's storage SDK),
servestack_cache.py with only this cloud's store, and `servestack-cache-fill.service`, which
waits for vLLM's /health and fills the bucket once when it is empty. servestack-start asks the
bucket before vLLM starts and serves it when it is filled; servestack-install adds the Run:ai
streamer (vllm[runai]).
"""

from __future__ import annotations

from servestack import clouds
from servestack.bootstrap.metrics import compact_script
from servestack.deployment.model import Deployment

HOME = "/opt/servestack"
SCRIPT = "servestack_cache.py"
UNIT = "servestack-cache-fill.service"
# Short: AWS takes 16 KiB of user data in all, and the unit is written as plain text.
FILL_UNIT = f"""\
[Unit]
Description=servestack weight cache fill
After=network-online.target servestack-vllm.service

[Service]
Environment=HOME=/root
ExecStart={HOME}/bin/servestack-cache fill
Restart=on-failure
RestartSec=120

[Install]
WantedBy=multi-user.target
"""

def cache_units(d: Deployment) -> list[str]:
    return [UNIT] if d.weight_cache else []


def cache_settings(d: Deployment) -> dict[str, str]:
    """servestack.env's cache settings; none without a cache (the scripts read them as
    ${...:-})."""
    cache = d.weight_cache
    if cache is None:
        return {}
    values = {"SERVESTACK_CACHE_PREFIX": cache.prefix, "SERVESTACK_CACHE_PATH": cache.path,
              "SERVESTACK_CACHE_PACKAGES": " ".join(clouds.get(d.cloud).cache_packages)}
    if cache.container:
        values["SERVESTACK_CACHE_CONTAINER"] = cache.container
    return values


def cache_files(d: Deployment, script_text) -> list[tuple[str, str, str]]:
    """(path, text, permissions) of the cache's files; none without a cache. `script_text`
    reads a packaged shell script as the bootstrap writes it."""
    if d.weight_cache is None:
        return []
    return [(f"{HOME}/bin/servestack-cache", script_text("servestack-cache.sh"), "0755"),
            (f"{HOME}/lib/python/{SCRIPT}", compact_script(d.cloud, SCRIPT), "0644"),
            (f"/etc/systemd/system/{UNIT}", FILL_UNIT, "0644")]
