"""--weight-cache: the deployment's `WeightCache`, or a one-line refusal where it cannot work.

The cache is a private bucket in the pool's region (each engine's cloud module builds it, with
the VMs' identity allowed to read and write that bucket only). The bootstrap fills it once: a
replica that finds the model's completion marker there serves the bucket's copy with vLLM's
Run:ai streamer (`vllm serve s3://... --load-format runai_streamer`); one that does not
downloads from the Hugging Face hub as without the cache and, once healthy, uploads what it
downloaded under a lock, the marker last (servestack/bootstrap/servestack_cache.py).

What it needs, and so what is refused here:
- a Hugging Face model named by its repo id (`org/name`): the bucket holds that repo's
  snapshot, and the streamer reads safetensors only (a GGUF file or another load format is
  refused; a repo without safetensors is left unfilled by the VMs, which log why);
- the server started as `vllm serve MODEL`: the default command, or a spec's `run` that says
  so (SkyPilot's usual form, `vllm serve $MODEL_NAME ...`), which the bootstrap redirects to
  the bucket; a server started otherwise (`python -m vllm.entrypoints...`, another engine)
  cannot be redirected;
- vLLM installed by servestack (it adds the streamer, `vllm[runai]`), not by the spec's
  setup nor a docker image, whose vLLM servestack does not change.
"""

from __future__ import annotations

import re
from dataclasses import replace

from servestack import clouds
from servestack.deployment.model import Deployment, WeightCache
from servestack.errors import UserError

HF_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[\w.-]{1,96}")
EXEC_VLLM = re.compile(r"\bexec\s+(?:\S*/)?vllm\b")
VLLM_SERVE = re.compile(r"\bvllm\s+serve\s+([^\s|;&]+)")
# Formats the streamer cannot read (it reads safetensors only, docs.vllm.ai "Loading models
# with Run:ai Model Streamer").
LOAD_FORMAT = re.compile(r"--load[-_]format(?:=|\s+)['\"]?([\w-]+)")
STREAMABLE_FORMATS = ("auto", "safetensors", "runai_streamer")
MODELS_FOLDER = "models"


def with_weight_cache(d: Deployment, wanted: bool) -> Deployment:
    """`d` with its weight cache when --weight-cache asks for one (refused where it cannot
    work), else `d` unchanged."""
    if not wanted:
        return d
    model = _checked_model(d)
    _check_commands(d, model)
    cloud = clouds.get(d.cloud)
    cache = WeightCache(scheme=cloud.cache_scheme, prefix=cloud.cache_prefix(d.scope),
                        path=f"{MODELS_FOLDER}/{model}", container=cloud.cache_container())
    return replace(d, weight_cache=cache)


def _checked_model(d: Deployment) -> str:
    model = d.model or ""
    if d.container_image:
        raise UserError("--weight-cache with image_id: docker:IMAGE: the image's own vLLM would "
                        "need the Run:ai streamer and servestack's cache tool inside it; use a "
                        "VM image (or the default one), or drop --weight-cache")
    if not HF_REPO_ID.fullmatch(model) or model.lower().endswith(".gguf"):
        raise UserError(f"--weight-cache: {model[:80] or 'no model'!r} is not a Hugging Face "
                        "model id (org/name, with safetensors weights), the only thing the "
                        "cache holds; pass --model org/name or drop --weight-cache")
    return model


def _check_commands(d: Deployment, model: str) -> None:
    """The spec's setup and run leave the bootstrap a `vllm serve MODEL` to redirect."""
    if d.setup and re.search(r"\bvllm\b", d.setup):
        raise UserError("--weight-cache: the spec's setup installs vLLM itself, and servestack "
                        "adds the Run:ai streamer (vllm[runai]) only to the vLLM it installs; "
                        "drop vLLM from setup, or drop --weight-cache")
    for script in (d.setup, d.run):
        found = LOAD_FORMAT.search(script or "")
        if found and found.group(1) not in STREAMABLE_FORMATS:
            raise UserError(f"--weight-cache: --load-format {found.group(1)} in the spec; the "
                            "cache streams safetensors only (--load-format runai_streamer)")
    if not d.run:
        return
    served = VLLM_SERVE.search(d.run.replace("\\\n", " "))
    if served is None:
        raise UserError("--weight-cache: the spec's run does not start `vllm serve MODEL`, the "
                        "one command the bootstrap can point at the cache; use that form, or "
                        "drop run: (servestack then runs `vllm serve` itself)")
    if EXEC_VLLM.search(d.run):
        raise UserError("--weight-cache: the spec's run starts vLLM with `exec vllm`, which "
                        "skips the bootstrap's redirect to the cache; drop the `exec`")
    name = served.group(1).strip("'\"")
    if not name.startswith("$") and name != model:
        raise UserError(f"--weight-cache: the spec's run serves {name[:80]!r}, not the model "
                        f"{model!r} the cache is filled with")
