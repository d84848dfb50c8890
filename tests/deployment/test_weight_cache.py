"""--weight-cache as the deployment takes it: the cache's names per cloud, and the refusals
where the bootstrap could not point vLLM at the bucket."""

from __future__ import annotations

import itertools
import re
from dataclasses import replace

import pytest

from servestack.deployment.cache import with_weight_cache
from servestack.deployment.model import Deployment
from servestack.errors import UserError
from tests.fakes import weight_cache_deployment

MODEL = "mistralai/Mixtral-8x7B-Instruct-v0.1"
CLOUDS = ("aws", "gcp", "azure")


def built(cloud: str, service: str = "mixtral", stack: str | None = None,
          cache: bool = True) -> Deployment:
    return weight_cache_deployment(cloud, service, stack, cache)


def test_without_the_flag_there_is_no_cache():
    assert built("aws", cache=False).weight_cache is None


@pytest.mark.parametrize("cloud,scheme", [("aws", "s3"), ("gcp", "gs"), ("azure", "az")])
def test_the_cache_holds_the_model_by_its_repo_id(cloud, scheme):
    cache = built(cloud).weight_cache
    assert cache is not None
    assert cache.scheme == scheme
    assert cache.path == f"models/{MODEL}"
    assert (cache.container is not None) == (cloud == "azure")


def test_bucket_names_fit_each_store_and_differ_per_service_stack_and_account():
    account = "123456789012"
    for cloud in CLOUDS:
        names = {}
        for service, stack in itertools.product(("mixtral", "other"), ("blue", "green")):
            cache = built(cloud, service, stack).weight_cache
            names[service, stack] = cache.bucket(account)
            assert cache.bucket(account) != cache.bucket("210987654321")
        assert len(set(names.values())) == 4, names
        for name in names.values():
            if cloud == "azure":  # storage accounts: 3-24 lowercase letters and digits
                assert re.fullmatch(r"[a-z0-9]{3,24}", name), name
            else:  # S3 and GCS: 3-63 lowercase letters, digits, dashes; a letter first
                assert re.fullmatch(r"[a-z][a-z0-9-]{1,61}[a-z0-9]", name), name


def test_the_cache_round_trips_through_the_stack_config():
    d = built("azure")
    assert Deployment.from_config(d.to_config()) == d


def refused(d: Deployment, **changes) -> str:
    with pytest.raises(UserError) as error:
        with_weight_cache(replace(d, **changes), True)
    message = str(error.value)
    assert "\n" not in message and message.startswith("--weight-cache")
    return message


def test_a_docker_image_is_refused():
    assert "docker" in refused(built("aws", cache=False), container_image="vllm/vllm-openai:v1")


@pytest.mark.parametrize("model", [None, "./local-model", "/models/mixtral",
                                   "TheBloke/Mixtral-GGUF/mixtral.Q4.gguf", "org/m.gguf"])
def test_a_model_that_is_not_a_hub_repo_id_is_refused(model):
    assert "Hugging Face model id" in refused(built("aws", cache=False), model=model)


@pytest.mark.parametrize("run,reason", [
    ("python -m vllm.entrypoints.openai.api_server --model $MODEL_NAME\n", "does not start"),
    ("exec vllm serve $MODEL_NAME --port 8000\n", "exec"),
    ("vllm serve other/model --port 8000\n", "not the model"),
    ("vllm serve $MODEL_NAME --load-format gguf\n", "safetensors only"),
])
def test_a_run_the_bootstrap_cannot_redirect_is_refused(run, reason):
    assert reason in refused(built("gcp", cache=False), run=run)


def test_a_setup_that_installs_vllm_is_refused():
    message = refused(built("aws", cache=False), setup="pip install vllm==0.9.2\n")
    assert "setup installs vLLM" in message


@pytest.mark.parametrize("run", [
    None,  # servestack's own `vllm serve MODEL`
    "vllm serve $MODEL_NAME \\\n  --tensor-parallel-size $SKYPILOT_NUM_GPUS_PER_NODE\n",
    f"conda activate vllm\nvllm serve {MODEL} --load-format safetensors\n",
])
def test_what_the_bootstrap_can_redirect_is_accepted(run):
    d = with_weight_cache(replace(built("azure", cache=False), run=run), True)
    assert d.weight_cache is not None


def test_aws_takes_the_cache_beside_a_shipped_metric():
    # AWS's user data goes gzip'd: both fit (the sizes: tests/bootstrap/test_weight_cache.py)
    from servestack import clouds
    from servestack.deployment.model import Autoscaling

    for metric in ("vllm-waiting", "vllm-kv-cache", "qps"):
        d = replace(built("aws"), autoscaling=Autoscaling(metric=metric, target=5.0))
        clouds.get("aws").check(d)  # no UserError
