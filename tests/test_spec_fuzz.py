"""Property: any spec text, however hostile, plans or ends in one UserError line naming the file.

Specs are drawn from SkyPilot's own vocabulary (every field servestack reads, in every form
SkyPilot accepts) mixed with hostile values (huge, negative, fractional and non-finite numbers,
dates, binary, deep nesting, long and unicode strings, wrong types), rendered to YAML text the
way a user would write it, and pushed through loading and planning. Derandomized, so CI runs
the same examples every time.
"""

from __future__ import annotations

import copy
import datetime
import json
import tempfile
from pathlib import Path
from unittest import mock

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from servestack.catalog import load_catalog

from servestack.errors import UserError
from servestack.inputs import load_inputs
from servestack.planner import NothingFits, Options, plan

GPUS = ["A100", "A100-80GB", "a100-80gb", "L4", "A10G", "a10g", "A10", "H100", "T4", "V100",
        "A1000", "80GB+", ""]
CLOUDS = ["aws", "gcp", "azure", "AWS", "Azure", "lambda", "kubernetes", "awz", "*"]
REGIONS = ["us-east-1", "us-west-2", "us-central1", "europe-west4", "eastus", "westus2",
           "us-east-9", ""]
ZONES = ["us-east-1a", "use1-az1", "us-central1-a", "us-central1-zz", "eastus-1", "1"]
MODELS = ["mistralai/Mixtral-8x7B-Instruct-v0.1", "meta-llama/Llama-3.1-8B-Instruct",
          "someone/unknown-7b", "$MODEL_NAME", "${MODEL_NAME}", "./local", "/models/m",
          "m" * 300, "a/b/c", "ÜnïcödÉ/模型"]
WORDS = ["A100:inf", "A100:nan", "A100:1e3", "A100:-1", "A100:2.5", "A100:99999999999",
         "-5", "8080.0", "1e400", "9" * 400, "2020-01-01", "8000-8010", "9000-8000", "0-80",
         "1TB", "65TB", "0.5GB", "8+", "4x", "nan", "inf", "", " ", "*", "/", "//", "$HOME",
         "\u202e\u0000", "\ud7ff", "null", "~", "true", "{", "[", "'", '"', "\\", "- x"]

# --- hostile values ---------------------------------------------------------------------------

numbers = st.one_of(
    st.integers(),
    st.integers(min_value=-10, max_value=70000),
    st.sampled_from([0, -1, -5, 65535, 65536, 10**400, -10**400, 2**63, 16, 17, 1000, 1001]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.5, 8080.0, 1e300, float("inf"), float("-inf"), float("nan"), -0.0]),
)
texts = st.one_of(st.sampled_from(WORDS), st.text(max_size=30),
                  st.text(min_size=200, max_size=400), st.just("x" * 5000))
leaves = st.one_of(numbers, texts, st.booleans(), st.none(), st.binary(max_size=16),
                   st.dates(), st.datetimes(), st.just(datetime.date(2020, 1, 1)))


def nested(depth: int, as_dict: bool) -> object:
    value: object = 1
    for _ in range(depth):
        value = {"a": value} if as_dict else [value]
    return value


deep = st.builds(nested, st.integers(min_value=20, max_value=80), st.booleans())
hostile = st.one_of(
    leaves, deep,
    st.recursive(leaves, lambda inner: st.lists(inner, max_size=4)
                 | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=10),
)


def mostly(usual: st.SearchStrategy, rare: st.SearchStrategy) -> st.SearchStrategy:
    """`usual` 4 times in 5. (st.one_of flattens nested one_ofs, so a branch's weight would
    depend on how many alternatives the other branch has.)"""
    return st.sampled_from([True, True, True, True, False]).flatmap(
        lambda usually: usual if usually else rare)


def field(*valid: st.SearchStrategy) -> st.SearchStrategy:
    """Mostly a plausible value of the field, sometimes anything at all."""
    return mostly(st.one_of(*valid), hostile)


# --- SkyPilot's vocabulary --------------------------------------------------------------------

gpu_count = st.one_of(st.integers(min_value=-2, max_value=20),
                      st.sampled_from(["inf", "nan", "1.5", "0", "1e3", "4.0", "8", ""]))
gpu_text = st.one_of(st.sampled_from(GPUS),
                     st.builds(lambda name, count: f"{name}:{count}", st.sampled_from(GPUS),
                               gpu_count))
accelerators = field(
    gpu_text,
    st.dictionaries(st.sampled_from(GPUS), st.one_of(st.none(), numbers), max_size=4),
    st.dictionaries(gpu_text, st.none(), min_size=1, max_size=5),  # {L4:8, A100:4}
    st.lists(gpu_text, max_size=5),
)
infra = st.builds(lambda *parts: "/".join(p for p in parts if p is not None),
                  st.sampled_from(CLOUDS), st.none() | st.sampled_from(REGIONS),
                  st.none() | st.sampled_from(ZONES))
port = st.one_of(st.integers(min_value=-10, max_value=70000),
                 st.sampled_from(["8000", "8000-8010", "9000-8000", "0-80", " 8080 "]))
size = st.one_of(st.integers(min_value=-5, max_value=100000),
                 st.sampled_from(["1TB", "256GB", "65TB", "0.5GB", "8+", "4x", "32", "1.5"]))
location = {
    "cloud": field(st.sampled_from(CLOUDS)),
    "region": field(st.sampled_from(REGIONS)),
    "zone": field(st.sampled_from(ZONES)),
    "infra": field(infra),
    "accelerators": accelerators,
    "gpus": accelerators,
    "use_spot": field(st.booleans()),
    "instance_type": field(st.sampled_from(["p4d.24xlarge", "g5.48xlarge", "a2-highgpu-4g",
                                            "Standard_NC24ads_A100_v4", "nope"])),
    "cpus": field(size), "memory": field(size), "disk_size": field(size),
    "disk_tier": field(st.sampled_from(["low", "medium", "high", "ultra", "best", "none"])),
    "ports": field(port, st.lists(port, max_size=4)),
    "image_id": field(st.sampled_from(["ami-0123456789abcdef0", "docker:vllm/vllm-openai"]),
                      st.dictionaries(st.sampled_from(REGIONS), st.text(max_size=10),
                                      max_size=3)),
    "labels": field(st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=4)),
    "max_hourly_cost": field(numbers),
}
resources = st.fixed_dictionaries({}, optional={
    **location,
    "any_of": field(st.lists(st.fixed_dictionaries({}, optional=location), max_size=4)),
    "ordered": field(st.lists(st.fixed_dictionaries({}, optional=location), max_size=4)),
})
post_data = field(
    st.dictionaries(st.sampled_from(["model", "prompt", "max_tokens"]), hostile, max_size=3),
    st.builds(json.dumps, st.dictionaries(st.text(max_size=5), st.integers(), max_size=3)),
    st.builds(lambda n: '{"a": ' * n + "1" + "}" * n, st.integers(min_value=1, max_value=2000)),
    st.sampled_from(['{"a": NaN}', '{"a": 1e999}', '{"a": ' + "9" * 5000 + "}", "{bad", "[]"]),
)
readiness_probe = field(
    st.sampled_from(["/", "/health", "/v1/models", "v1/models", ""]),
    st.fixed_dictionaries({"path": field(st.sampled_from(["/", "/v1/chat/completions"]))},
                          optional={
                              "post_data": post_data,
                              "initial_delay_seconds": field(numbers),
                              "timeout_seconds": field(numbers),
                              "headers": field(st.dictionaries(st.text(max_size=8),
                                                               st.text(max_size=8),
                                                               max_size=3)),
                          }),
)
counts = field(st.integers(min_value=-1, max_value=1002), numbers)
replica_policy = field(st.fixed_dictionaries({"min_replicas": counts}, optional={
    "max_replicas": counts, "num_overprovision": counts,
    "base_ondemand_fallback_replicas": counts,
    "target_qps_per_replica": field(numbers, st.dictionaries(st.sampled_from(GPUS), numbers,
                                                             max_size=2)),
    "dynamic_ondemand_fallback": field(st.booleans()),
    "upscale_delay_seconds": field(numbers), "downscale_delay_seconds": field(numbers),
}))
service = st.fixed_dictionaries({}, optional={
    "readiness_probe": readiness_probe, "replicas": counts, "replica_policy": replica_policy,
    "ports": field(port),
    "load_balancing_policy": field(st.sampled_from(["least_load", "round_robin", "x"])),
})
flag_value = st.sampled_from(["0.9", "abc", "inf", "nan", "1.5", "0", "-1", "auto", "32k",
                              "2.5K", "4096.5", "$GMU", "1e3", "9" * 50, ""])
run = field(st.builds(
    lambda model, flag, value: f"vllm serve {model} {flag} {value}".strip(),
    st.sampled_from(MODELS) | st.text(max_size=40),
    st.sampled_from(["", "--gpu-memory-utilization", "--max-model-len", "--dtype",
                     "--quantization", "--model"]),
    flag_value,
))
env_name = st.one_of(st.sampled_from(["MODEL_NAME", "HF_TOKEN", "GMU", "1BAD", "a-b"]),
                     st.text(max_size=8))
spec = st.fixed_dictionaries({"resources": field(resources)}, optional={
    "service": field(service),
    "envs": field(st.dictionaries(env_name, st.one_of(st.none(), st.sampled_from(MODELS),
                                                      numbers, st.booleans()), max_size=4)),
    "secrets": field(st.dictionaries(env_name, st.none() | st.text(max_size=8), max_size=3),
                     st.lists(env_name, max_size=3)),
    "setup": field(texts), "run": run, "name": field(texts),
    "num_nodes": field(st.integers(min_value=-1, max_value=3)),
    "file_mounts": field(st.dictionaries(st.text(max_size=10), hostile, max_size=3)),
    "workdir": field(st.sampled_from([".", "~/src"])),
})


# --- plausible specs, spoiled at one place ------------------------------------------------------

REAL_GPUS = ["A100", "A100-80GB", "L4", "A10G", "a10g", "A10", "H100", "T4", "V100"]
REAL_COUNTS = [1, 2, 4, 8]
real_gpu = st.builds(lambda name, count: f"{name}:{count}", st.sampled_from(REAL_GPUS),
                     st.sampled_from(REAL_COUNTS))
real_location = st.fixed_dictionaries({}, optional={
    "cloud": st.sampled_from(["aws", "gcp", "azure"]),
    "use_spot": st.booleans(),
})
plausible = st.fixed_dictionaries(
    {"resources": st.fixed_dictionaries(
        {"accelerators": st.one_of(
            real_gpu, st.lists(real_gpu, min_size=1, max_size=4, unique=True),
            st.dictionaries(real_gpu, st.none(), min_size=1, max_size=4),
            st.dictionaries(st.sampled_from(REAL_GPUS), st.sampled_from(REAL_COUNTS),
                            min_size=1, max_size=1))},
        optional={
            "cloud": st.sampled_from(["aws", "gcp", "azure"]),
            "ports": st.sampled_from([8000, "8000", 8080]),
            "disk_size": st.sampled_from([256, "1TB", 100]),
            "disk_tier": st.sampled_from(["medium", "best"]),
            "any_of": st.lists(real_location, min_size=1, max_size=3),
        })},
    optional={
        "service": st.fixed_dictionaries({}, optional={
            "readiness_probe": st.one_of(
                st.just("/health"),
                st.fixed_dictionaries({"path": st.just("/v1/chat/completions")}, optional={
                    "post_data": st.just({"model": "$MODEL_NAME", "max_tokens": 1}),
                    "initial_delay_seconds": st.integers(min_value=0, max_value=3600),
                    "timeout_seconds": st.floats(min_value=0.5, max_value=60)})),
            "replicas": st.integers(min_value=1, max_value=4)}),
        "envs": st.just({"MODEL_NAME": "mistralai/Mixtral-8x7B-Instruct-v0.1"}),
        "run": st.sampled_from(["vllm serve $MODEL_NAME --max-model-len 8192",
                                "vllm serve meta-llama/Llama-3.1-8B-Instruct",
                                "python -m vllm.entrypoints.openai.api_server --model "
                                "Qwen/Qwen2.5-7B-Instruct --gpu-memory-utilization 0.95"]),
    })


def places(value: object, path: tuple = ()):
    """Every (container, key) in a spec where a value sits."""
    items = value.items() if isinstance(value, dict) else \
        enumerate(value) if isinstance(value, list) else ()
    for key, inner in items:
        yield value, key
        yield from places(inner, (*path, key))


@st.composite
def spoiled(draw) -> object:
    """A plausible spec with one value, anywhere in it, replaced by a hostile one."""
    value = copy.deepcopy(draw(plausible))  # st.just values are shared between examples
    container, key = draw(st.sampled_from(list(places(value))))
    container[key] = draw(hostile)
    return value


def render(value: object, flow: bool, cut: float) -> bytes:
    """YAML text as a user would write it; sometimes cut short, as a half-saved file is."""
    text = yaml.safe_dump(value, default_flow_style=flow, allow_unicode=True, sort_keys=False)
    return text[:int(len(text) * cut)].encode()


documents = st.builds(render, st.one_of(plausible, spoiled(), mostly(spec, hostile)),
                      st.booleans(),
                      mostly(st.just(1.0), st.floats(min_value=0, max_value=1)))

# --- the property -----------------------------------------------------------------------------

CATALOG = load_catalog(None)
SPEC_FILE = Path(tempfile.mkdtemp(prefix="servestack-fuzz-")) / "serve.yaml"


@pytest.fixture(scope="module", autouse=True)
def shared_catalog():
    """The shipped catalog, read once: loading it is most of an example's time otherwise."""
    with mock.patch("servestack.inputs.load_catalog", return_value=CATALOG):
        yield


def plans_or_refuses_in_one_line(raw: bytes) -> None:
    SPEC_FILE.write_bytes(raw)
    try:
        inputs = load_inputs(str(SPEC_FILE))
        plan(inputs.spec, inputs.catalog, inputs.facts, Options(), model=inputs.model)
        event("planned")
    except NothingFits:
        event("nothing fits")  # the CLI lists what was dropped, one line each, by design
    except UserError as err:
        event(f"refused: {err.field}")  # --hypothesis-show-statistics shows the spread
        message = str(err)
        assert "\n" not in message and len(message) < 1000, message
        assert message.startswith(f"{SPEC_FILE}"), message


@settings(max_examples=3000, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.filter_too_much])
@given(documents)
def test_any_spec_plans_or_is_refused_in_one_line(raw):
    plans_or_refuses_in_one_line(raw)
