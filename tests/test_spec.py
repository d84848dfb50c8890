"""The service spec: SkyPilot's task YAML forms, canonical names, defaults and every error case."""

from __future__ import annotations

import pytest

from servestack.errors import SpecError, UserError
from servestack.inputs import load_inputs
from servestack.spec import DEFAULT_INITIAL_DELAY_SECONDS, DEFAULT_PROBE_TIMEOUT_SECONDS

from .conftest import SHARED_MIXTRAL


def load(write_spec, text: str):
    return load_inputs(str(write_spec(text))).spec


def error(write_spec, text: str | bytes) -> SpecError:
    path = write_spec(text)
    with pytest.raises(SpecError) as info:
        load_inputs(str(path))
    return info.value


def labels(spec) -> list[str]:
    return [a.label for a in spec.alternatives]


@pytest.mark.skipif(not SHARED_MIXTRAL.exists(), reason="shared/ not beside the checkout")
def test_skypilots_own_mixtral_serve_yaml_loads_unchanged():
    spec = load_inputs(str(SHARED_MIXTRAL)).spec
    assert labels(spec) == ["L4:8", "A10G:8", "A10:8", "A100:4", "A100:8", "A100-80GB:2",
                            "A100-80GB:4", "A100-80GB:8"]
    assert not spec.ordered
    assert spec.service.replica_policy.min_replicas == 2
    assert spec.service.readiness_probe.method == "POST"
    assert spec.service.readiness_probe.initial_delay_seconds == 1200
    assert spec.service.port == 8000
    assert spec.disk_tier == "best"


def test_accelerators_as_string_mapping_set_and_list(write_spec):
    assert labels(load(write_spec, "resources: {accelerators: A100:4}")) == ["A100:4"]
    assert labels(load(write_spec, "resources: {accelerators: L4}")) == ["L4:1"]
    assert labels(load(write_spec, "resources:\n  accelerators: {A100: 4}\n")) == ["A100:4"]
    spec = load(write_spec, "resources:\n  accelerators: {A100:4, A100:8}\n")
    assert labels(spec) == ["A100:4", "A100:8"] and not spec.ordered
    spec = load(write_spec, "resources:\n  accelerators: [A100:8, l4:8]\n")
    assert labels(spec) == ["A100:8", "L4:8"] and spec.ordered
    assert [a.preference for a in spec.alternatives] == [0, 1]


def test_names_are_canonicalised_case_insensitively_and_a10_is_not_a10g(write_spec):
    spec = load(write_spec, "resources: {accelerators: {a10g:8, A10:2, a100-80gb:2}}")
    assert labels(spec) == ["A10G:8", "A10:2", "A100-80GB:2"]


def test_any_of_crosses_a_gpu_set_with_locations(write_spec):
    spec = load(write_spec, """
resources:
  accelerators: {L4:8, A100:4}
  any_of:
    - infra: aws/us-east-1
    - cloud: gcp
      region: us-central1
""")
    assert labels(spec) == ["L4:8 on aws/us-east-1", "A100:4 on aws/us-east-1",
                            "L4:8 on gcp/us-central1", "A100:4 on gcp/us-central1"]
    assert not spec.ordered


def test_ordered_items_override_and_keep_order(write_spec):
    spec = load(write_spec, """
resources:
  use_spot: true
  ordered:
    - accelerators: A100-80GB:2
      cloud: azure
    - {accelerators: L4:8, infra: gcp/us-east4/us-east4-a}
    - instance_type: g5.48xlarge
""")
    assert spec.ordered
    assert [a.preference for a in spec.alternatives] == [0, 1, 2]
    assert spec.alternatives[1].zone == "us-east4-a" and spec.alternatives[1].cloud == "gcp"
    assert spec.alternatives[2].instance_type == "g5.48xlarge"
    assert all(a.use_spot for a in spec.alternatives)


def test_region_alone_implies_its_cloud_and_zone_implies_region(write_spec):
    spec = load(write_spec, "resources: {accelerators: A100:8, region: eastus}")
    assert spec.alternatives[0].cloud == "azure"
    spec = load(write_spec, "resources: {accelerators: A100:8, zone: us-central1-b}")
    assert (spec.alternatives[0].cloud, spec.alternatives[0].region) == ("gcp", "us-central1")


def test_ports_forms(write_spec):
    for value, expected in (("8000", ((8000, 8000),)), ('"8000"', ((8000, 8000),)),
                            ('"8000-8010"', ((8000, 8010),)),
                            ('[8000, "9000-9010"]', ((8000, 8000), (9000, 9010)))):
        spec = load(write_spec, f"resources: {{accelerators: A100:4, ports: {value}}}\n"
                                "service: {readiness_probe: /health, ports: 8000}\n")
        assert spec.ports == expected


def test_service_defaults_match_skypilot(write_spec):
    spec = load(write_spec, "service: {readiness_probe: /v1/models}\n"
                            "resources: {accelerators: A100:4, ports: 8000}\n")
    probe = spec.service.readiness_probe
    assert probe.method == "GET" and probe.path == "/v1/models"
    assert probe.initial_delay_seconds == DEFAULT_INITIAL_DELAY_SECONDS == 1200
    assert probe.timeout_seconds == DEFAULT_PROBE_TIMEOUT_SECONDS == 15
    assert spec.service.replica_policy.min_replicas == 1
    assert spec.disk_size_gb == 256 and spec.disk_tier == "medium"


def test_replica_policy_and_spot_fallback_fields(write_spec):
    spec = load(write_spec, """
service:
  readiness_probe: {path: /health, timeout_seconds: 5}
  replica_policy: {min_replicas: 2, max_replicas: 4, target_qps_per_replica: 2.5,
                   base_ondemand_fallback_replicas: 1, dynamic_ondemand_fallback: true}
resources: {accelerators: A100:4, use_spot: true, ports: 8000}
""")
    policy = spec.service.replica_policy
    assert (policy.min_replicas, policy.max_replicas) == (2, 4)
    assert policy.base_ondemand_fallback_replicas == 1 and policy.dynamic_ondemand_fallback
    assert spec.replicas == 2


def test_envs_are_substituted_in_service_and_secrets_keep_only_names(write_spec):
    spec = load(write_spec, """
envs: {MODEL_NAME: mistralai/Mixtral-8x7B-Instruct-v0.1}
secrets: {HF_TOKEN: hf_abc}
service:
  readiness_probe: {path: /v1/chat/completions, post_data: {model: $MODEL_NAME}}
resources: {accelerators: A100:4, ports: 8000}
run: vllm serve ${MODEL_NAME}
""")
    assert spec.service.readiness_probe.post_data == {
        "model": "mistralai/Mixtral-8x7B-Instruct-v0.1"}
    assert spec.secrets == ("HF_TOKEN",)
    assert "hf_abc" not in repr(spec)
    assert any("secrets" in note for note in spec.notes)


def test_post_data_as_json_string(write_spec):
    spec = load(write_spec, "service:\n  readiness_probe:\n    path: /v1/completions\n"
                            "    post_data: '{\"prompt\": \"hi\", \"max_tokens\": 1}'\n"
                            "resources: {accelerators: A100:4, ports: 8000}\n")
    assert spec.service.readiness_probe.post_data == {"prompt": "hi", "max_tokens": 1}


def test_file_mounts_and_workdir_are_accepted_and_reported(write_spec):
    spec = load(write_spec, "workdir: .\nfile_mounts: {/data: ./data}\n"
                            "resources: {accelerators: A100:4}\n")
    assert any("file_mounts" in n for n in spec.notes)
    assert any("workdir" in n for n in spec.notes)


def test_disk_size_with_unit(write_spec):
    assert load(write_spec, "resources: {accelerators: A100:4, disk_size: 1TB}").disk_size_gb \
        == 1024


# --- errors: one message naming file, field and line ----------------------------------------

@pytest.mark.parametrize("text, field, line, words", [
    ("resources:\n  accelerators: [A100:4\n", None, 3, "malformed YAML"),
    ("resources:\n  use_spot: maybe\n  accelerators: A100:4\n", "resources.use_spot", 2,
     "'maybe' is not allowed here; expected true or false"),
    ("resources:\n  accelerators: A100:0\n", "resources.accelerators", 2, "positive whole"),
    ("resources:\n  accelerators: A100:-2\n", "resources.accelerators", 2, "positive whole"),
    ("resources:\n  accelerators: {A100: 0}\n", "resources.accelerators.A100", 2,
     "positive whole"),
    ("resources:\n  accelerators: A1000:4\n", "resources.accelerators", 2,
     "did you mean A100"),
    ("service:\n  replicas: 2\n  replica_policy: {min_replicas: 1}\nresources: "
     "{accelerators: A100:4}\n", "service.replica_policy", 3, "not both"),
    ("service:\n  replica_policy:\n    min_replicas: 3\n    max_replicas: 2\n"
     "resources: {accelerators: A100:4}\n", "service.replica_policy.max_replicas", 4,
     "max_replicas must be >= min_replicas"),
    ("service:\n  readiness_probe: v1/models\nresources: {accelerators: A100:4}\n",
     "service.readiness_probe", 2, "must start with a slash"),
    ("resources:\n  accelerators: A100:4\n  ports: 70000\n", "resources.ports", 3,
     "out of range"),
    ("service:\n  readiness_probe:\n    path: /x\n    post_data: '{bad json'\n"
     "resources: {accelerators: A100:4}\n", "service.readiness_probe.post_data", 4,
     "invalid JSON"),
    ("resources:\n  cloud: awz\n  accelerators: A100:4\n", "resources.cloud", 2,
     "did you mean 'aws'"),
    ("resources:\n  cloud: aws\n  region: us-east-9\n  accelerators: A100:8\n",
     "resources.region", 3, "unknown region 'us-east-9' of aws"),
    ("resources:\n  cloud: gcp\n  region: us-central1\n  zone: us-central1-zz\n"
     "  accelerators: A100:8\n", "resources.zone", 4, "unknown zone"),
    ("resources:\n  accelerators: A100:4\n  acelerators: L4\n", "resources.acelerators", 3,
     "unknown field 'acelerators' (did you mean 'accelerators'?)"),
    ("resources:\n  accelerators: A100:4\nnum_nodes: 2\n", "num_nodes", 3, "num_nodes: 1 only"),
    ("resources:\n  accelerators: [A100:4, L4:8]\n  any_of:\n    - cloud: aws\n",
     "resources.accelerators", 2, "cannot be combined with any_of"),
    ("resources:\n  accelerators: {A100:4, L4:8}\n  ordered:\n    - cloud: aws\n",
     "resources.accelerators", 2, "cannot be combined with ordered"),
    ("resources:\n  any_of: [{cloud: aws}]\n  ordered: [{cloud: gcp}]\n  accelerators: L4\n",
     "resources.ordered", 3, "either any_of or ordered"),
    ("resources:\n  accelerators: A100:2.5\n", "resources.accelerators", 2, "fractional"),
    ("resources:\n  infra: aws/us-east-1\n  cloud: aws\n  accelerators: L4\n",
     "resources.infra", 2, "not both"),
    ("resources:\n  cloud: lambda\n  accelerators: L4\n", "resources.cloud", 2,
     "does not deploy to"),
    ("resources:\n  accelerators: L4\nservice:\n  replica_policy:\n    min_replicas: 1\n"
     "    base_ondemand_fallback_replicas: 1\n", "service.replica_policy", 4, "use_spot"),
])
def test_errors_name_file_field_and_line(write_spec, text, field, line, words):
    err = error(write_spec, text)
    assert err.file.endswith("serve.yaml")
    assert err.field == field
    assert err.line == line
    assert words in str(err)
    assert str(err).startswith(f"{err.file}:{line}: ")


def test_empty_file(write_spec):
    assert "empty" in str(error(write_spec, "   \n"))
    assert "empty" in str(error(write_spec, "# only a comment\n"))


def test_binary_file(write_spec):
    assert "binary" in str(error(write_spec, b"\x7fELF\x02\x01\x00\x00garbage"))
    assert "UTF-8" in str(error(write_spec, b"\xff\xfe\xfa resources"))


def test_alias_bomb_is_refused_before_expansion(write_spec):
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(9))
    err = error(write_spec, bomb)
    assert "anchors and aliases are not allowed" in str(err) and err.line == 1


def test_top_level_must_be_a_mapping(write_spec):
    assert "YAML mapping" in str(error(write_spec, "- resources\n"))


def test_duplicate_keys_are_errors(write_spec):
    err = error(write_spec, "resources:\n  accelerators: L4\n  accelerators: A100\n")
    assert "duplicate key 'accelerators'" in str(err) and err.line == 3


def test_missing_file_is_one_clear_error(tmp_path):
    with pytest.raises(SpecError, match="no such file"):
        load_inputs(str(tmp_path / "nope.yaml"))


def test_aws_zone_id_alone_implies_region_and_cloud(write_spec):
    spec = load(write_spec, "resources: {accelerators: L4:8, zone: use1-az1, use_spot: true}")
    alt = spec.alternatives[0]
    assert (alt.cloud, alt.region, alt.zone) == ("aws", "us-east-1", "use1-az1")


def test_aws_zone_name_implies_region_and_cloud(write_spec):
    spec = load(write_spec, "resources: {accelerators: A100:8, zone: us-east-1a}")
    alt = spec.alternatives[0]
    assert (alt.cloud, alt.region, alt.zone) == ("aws", "us-east-1", "us-east-1a")


def test_zone_of_another_region_names_its_region(write_spec):
    with pytest.raises(SpecError, match="zone 'us-east-1a' is a zone of region 'us-east-1', "
                                        "not of 'us-west-2'"):
        load(write_spec, "resources: {accelerators: A100:8, infra: aws/us-west-2/us-east-1a}")


# --- hostile input: one line naming file, field and line; exit code 2; no traceback ----------

RESOURCES = "resources:\n  accelerators: A100:4\n"
PROBE = "service:\n  readiness_probe:\n    path: /\n"
MIXTRAL_RUN = "run: vllm serve mistralai/Mixtral-8x7B-Instruct-v0.1"
DEEP_JSON = '{"a": ' * 2000 + "1" + "}" * 2000

# The crashes reported in issue 10, item 4: (spec text, field, line, words of the message).
HOSTILE = [
    (RESOURCES + "  disk_size: 2020-01-01\n", "resources.disk_size", 3,
     "'2020-01-01' is not allowed here; expected a size in GB"),
    (RESOURCES + "  disk_size: !!binary aGVsbG8=\n", "resources.disk_size", 3,
     "binary values (!!binary) are not allowed"),
    ("resources:\n  accelerators: A100:inf\n", "resources.accelerators", 2,
     "'A100:inf': expected <name> or <name>:<count>"),
    ("resources:\n  accelerators: A100:nan\n", "resources.accelerators", 2,
     "'A100:nan': expected <name> or <name>:<count>"),
    ("resources:\n  accelerators: {A100: .inf}\n", "resources.accelerators.A100", 2,
     ".inf is not a finite number"),
    (RESOURCES + "  ports: -5\n", "resources.ports", 3, "-5 is out of range; it must be >= 1"),
    (RESOURCES + "  ports: 8080.0\n", "resources.ports", 3, "8080.0 is not a port"),
    (RESOURCES + "  disk_size: " + "9" * 400 + "\n", "resources.disk_size", 3,
     "is out of range; it must be <= 65536"),
    (RESOURCES + PROBE + "    initial_delay_seconds: .inf\n",
     "service.readiness_probe.initial_delay_seconds", 6, ".inf is not a finite number"),
    (RESOURCES + PROBE + "    timeout_seconds: .nan\n",
     "service.readiness_probe.timeout_seconds", 6, ".nan is not a finite number"),
    (RESOURCES + PROBE + "    post_data: " + "{a: " * 2000 + "1" + "}" * 2000 + "\n",
     "service.readiness_probe.post_data", 6, "nested more than 32 levels deep"),
    (RESOURCES + PROBE + f"    post_data: '{DEEP_JSON}'\n", "service.readiness_probe.post_data",
     6, "the JSON is nested 2000 levels deep; at most 32"),
    (RESOURCES + "x: " + "[" * 500 + "]" * 500 + "\n", "x[0][0]", 3,
     "nested more than 32 levels deep"),
    (RESOURCES + MIXTRAL_RUN + " --gpu-memory-utilization abc\n", "run", 3,
     "--gpu-memory-utilization 'abc': vLLM takes a fraction"),
    (RESOURCES + MIXTRAL_RUN + " --max-model-len inf\n", "run", 3,
     "--max-model-len 'inf': not a token count"),
    (RESOURCES + "run: vllm serve " + "m" * 300 + "\n", "run", 3,
     "(300 characters) is neither a Hugging Face id"),
    ("resources:\n  accelerators:\n" + "".join(f"    - A100:{i}\n" for i in range(1, 5000)),
     "resources.accelerators", 2, "4999 items; at most 64 allowed"),
    (RESOURCES + "  any_of:\n" + "    - {cloud: aws}\n" * 3000, "resources.any_of", 3,
     "3000 items; at most 64 allowed"),
]


@pytest.mark.parametrize("text, field, line, words", HOSTILE)
def test_hostile_input_is_one_error_naming_file_field_and_line(write_spec, text, field, line,
                                                               words):
    err = error(write_spec, text)
    assert (err.field, err.line) == (field, line)
    assert words in err.message
    assert "\n" not in str(err) and str(err).startswith(f"{err.file}:{line}: {field}: ")


@pytest.mark.parametrize("text", [case[0] for case in HOSTILE])
def test_plan_exits_2_with_one_line_and_no_traceback(write_spec, capsys, text):
    from servestack.cli.main import main

    path = write_spec(text)
    assert main(["plan", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"servestack: error: {path}:") and err.count("\n") == 1
    assert "Traceback" not in err


@pytest.mark.parametrize("text, field, words", [
    (RESOURCES + "  disk_size: 65537\n", "resources.disk_size", "<= 65536"),
    (RESOURCES + "  disk_size: 65TB\n", "resources.disk_size", "1 to 65536 GB"),
    (RESOURCES + "  disk_size: 0.5GB\n", "resources.disk_size", "1 to 65536 GB"),
    (RESOURCES + "  ports: 65536\n", "resources.ports", "<= 65535"),
    (RESOURCES + "  ports: '0-80'\n", "resources.ports", "port 0 is out of range"),
    (RESOURCES + "  ports: [" + ", ".join(map(str, range(8000, 8061))) + "]\n",
     "resources.ports", "61 items; at most 60"),
    (RESOURCES + "  cpus: 5000\n", "resources.cpus", "<= 4096"),
    (RESOURCES + "  memory: '99999+'\n", "resources.memory", "<= 65536"),
    ("resources:\n  accelerators: A100:32\n", "resources.accelerators", "at most 16"),
    ("resources:\n  accelerators: {A100: 1.0e+3}\n", "resources.accelerators.A100",
     "at most 16"),
    ("resources:\n  accelerators: A100:1e3\n", "resources.accelerators", "expected <name>"),
    (RESOURCES + "  labels: {" + ", ".join(f"k{i}: v" for i in range(51)) + "}\n",
     "resources.labels", "51 entries; at most 50"),
    (RESOURCES + "service:\n  replicas: 1001\n", "service.replicas", "<= 1000"),
    (RESOURCES + "service:\n  replicas: true\n", "service.replicas",
     "true is not allowed here; expected a whole number"),
    (RESOURCES + "service:\n  ports: 8080.5\n", "service.ports", "8080.5 is not allowed here"),
    (RESOURCES + "service:\n  ports: 8080.0\n", "service.ports", "8080.0 is not a port"),
    (RESOURCES + PROBE + "    initial_delay_seconds: 86401\n",
     "service.readiness_probe.initial_delay_seconds", "<= 86400"),
    (RESOURCES + PROBE + "    timeout_seconds: 301\n",
     "service.readiness_probe.timeout_seconds", "<= 300"),
    (RESOURCES + PROBE + "    post_data: '{\"a\": NaN}'\n", "service.readiness_probe.post_data",
     "NaN is not a number"),
    (RESOURCES + PROBE + "    post_data: '{\"a\": 1e999}'\n",
     "service.readiness_probe.post_data", "numbers must be finite"),
    (RESOURCES + MIXTRAL_RUN + " --gpu-memory-utilization 1.5\n", "run", "at most 1"),
    (RESOURCES + MIXTRAL_RUN + " --max-model-len 0\n", "run", "at least 1 token"),
    ("resources:\n  accelerators: {" + ", ".join(f"A100:{i}" for i in range(1, 17)) + "}\n"
     "  any_of:\n" + "    - {cloud: aws}\n" * 17, "resources",
     "272 alternatives (accelerators times any_of/ordered items); at most 256"),
])
def test_numbers_and_lists_are_bounded_to_what_the_clouds_accept(write_spec, text, field, words):
    err = error(write_spec, text)
    assert err.field == field
    assert words in err.message


def test_whole_numbers_written_as_floats_and_fractional_seconds(write_spec):
    spec = load(write_spec, RESOURCES + "  disk_size: 512.0\n" + PROBE +
                "    initial_delay_seconds: 600.5\n    timeout_seconds: 0.5\n"
                "  replica_policy: {min_replicas: 2.0, max_replicas: 2}\n")
    assert spec.disk_size_gb == 512
    probe = spec.service.readiness_probe
    assert (probe.initial_delay_seconds, probe.timeout_seconds) == (601, 1)  # rounded up
    assert spec.service.replica_policy.min_replicas == 2
    assert isinstance(spec.service.replica_policy.min_replicas, int)


def test_a_disk_beyond_azures_os_disk_is_a_note(write_spec):
    spec = load(write_spec, RESOURCES + "  disk_size: 8TB\n")
    assert spec.disk_size_gb == 8192
    assert any("Azure's largest OS disk" in note for note in spec.notes)


def test_a_date_where_text_is_meant_is_text(write_spec):
    spec = load(write_spec, RESOURCES + "  labels: {release: 2024-05-01}\n")
    assert spec.labels == {"release": "2024-05-01"}


def test_run_values_known_only_on_the_vm_are_left_alone(write_spec):
    spec = load(write_spec, RESOURCES + "run: vllm serve $MODEL --gpu-memory-utilization $GMU "
                            "--max-model-len -1\n")
    assert spec.run.startswith("vllm serve $MODEL")


def test_a_long_model_name_is_an_unknown_model_not_a_path_crash():
    from servestack import models

    assert models.lookup("m" * 300) is None
    assert models.lookup("bad\0name") is None
    assert models.model_name_problem("m" * 200) is None  # may be a folder on the VM
    assert models.model_name_problem("org/" + "m" * 96) is None


def test_vllm_flag_values_as_vllm_reads_them():
    from servestack import models

    flags = models.vllm_flags("vllm serve m --max-model-len 2.5k --gpu-memory-utilization .95 "
                              "--dtype half")
    assert flags == {"max_model_len": 2560, "gpu_memory_utilization": 0.95,
                     "bytes_per_param": 2}
    with pytest.raises(UserError, match="--max-model-len '4096.5'"):
        models.vllm_flags("vllm serve m --max-model-len 4096.5")
    with pytest.raises(UserError, match="--gpu-memory-utilization 'nan'"):
        models.vllm_flags("vllm serve m --gpu-memory-utilization=nan")


def test_a_one_megabyte_spec_of_the_slow_shape_is_refused_at_once(write_spec):
    import time

    # 58,000 accelerators took 7 s to plan; now the list is refused while it is being read.
    text = "resources:\n  accelerators:\n" + "".join(f"    - A100:{i}\n"
                                                   for i in range(1, 58_000))
    path = write_spec(text[:990_000])
    started = time.monotonic()
    with pytest.raises(SpecError, match="more than 20000 keys and values"):
        load_inputs(str(path))
    assert time.monotonic() - started < 2  # about 0.1 s; generous for slow CI machines


@pytest.mark.parametrize("header", ["Authorization", "X-Api-Key", "X-Auth-Token", "Cookie"])
def test_a_credential_in_a_probe_header_is_refused_not_copied_to_the_vms(write_spec, header):
    err = error(write_spec, "resources: {accelerators: L4:1}\nservice:\n  readiness_probe:\n"
                            f"    path: /v1/models\n    headers: {{{header}: Bearer sk-abc}}\n")
    text = str(err)
    assert f"service.readiness_probe.headers.{header}" in text and ":5:" in text
    assert "plain text" in text and "sk-abc" not in text


def test_a_plain_probe_header_is_kept(write_spec):
    spec = load(write_spec, "resources: {accelerators: L4:1}\nservice:\n  readiness_probe:\n"
                            "    path: /v1/models\n    headers: {X-Custom: hello}\n")
    assert spec.service.readiness_probe.headers == {"X-Custom": "hello"}


@pytest.mark.parametrize("text, served", [
    ("resources: {accelerators: L4:1, ports: 8000}\nservice: {readiness_probe: /health, "
     "ports: 8080}\nrun: vllm serve m --port 8000\n", "port 8000 (--port)"),
    ("resources: {accelerators: L4:1, ports: 8081}\nrun: vllm serve m\n",
     "port 8000 (no --port: vLLM's default)"),
])
def test_vllm_on_another_port_than_the_service_is_refused(write_spec, text, served):
    message = str(error(write_spec, text))
    assert f"run: vLLM serves on {served}" in message and "make them one port" in message


def test_vllm_on_the_service_port_or_a_port_set_on_the_vm_is_accepted(write_spec):
    load(write_spec, "resources: {accelerators: L4:1, ports: 8081}\n"
                     "run: vllm serve m --host 0.0.0.0 --port 8081\n")
    load(write_spec, "resources: {accelerators: L4:1, ports: 8081}\nrun: vllm serve m "
                     "--port $PORT\n")
    load(write_spec, "envs: {PORT: '8081'}\nresources: {accelerators: L4:1, ports: 8081}\n"
                     "run: vllm serve m --port $PORT\n")


@pytest.mark.parametrize("run, path", [
    (None, "/health"), ("vllm serve m --port 8000", "/health"),
    ("python -m http.server 8000", "/")])
def test_a_service_without_a_readiness_probe_is_probed_where_its_server_answers(
        write_spec, run, path):
    text = "resources: {accelerators: L4:1}\nservice: {replicas: 1}\n"
    spec = load(write_spec, text + (f"run: {run}\n" if run else ""))
    assert spec.service.readiness_probe.path == path
    assert any(f"service.readiness_probe not given: servestack probes {path}" in note
               for note in spec.notes)


def test_a_spec_without_a_service_section_says_what_it_gets(write_spec):
    from servestack.deployment.build import _readiness

    spec = load(write_spec, "resources: {accelerators: L4:1}\nrun: vllm serve m\n")
    assert spec.service is None
    assert any(note.startswith("no service section: one replica, probed at /health")
               for note in spec.notes)
    assert _readiness(None, spec.run).path == "/health"


def test_min_replicas_zero_and_network_tier_are_not_silently_changed_or_dropped(write_spec):
    spec = load(write_spec, "resources:\n  accelerators: L4:1\n  any_of:\n"
                            "    - {cloud: gcp, network_tier: best}\nservice:\n"
                            "  readiness_probe: /health\n  replica_policy: {min_replicas: 0, "
                            "max_replicas: 3, target_qps_per_replica: 1}\n")
    assert spec.replicas == 1
    assert any(n.startswith("service.replica_policy.min_replicas 0: kept at 1")
               for n in spec.notes)
    assert any(n.startswith("resources.network_tier: accepted but not used")
               for n in spec.notes)


def test_labels_that_become_one_are_refused_and_changed_ones_noted(write_spec):
    message = str(error(write_spec, "resources:\n  accelerators: L4:1\n  labels:\n"
                                    "    Team: ML Infra\n    team: other\n"))
    assert ":5:" in message and "'team' and 'Team' both become the label 'team'" in message
    spec = load(write_spec, "resources:\n  accelerators: L4:1\n  labels: {Team: ML, env: prod}\n")
    assert spec.labels == {"Team": "ML", "env": "prod"}
    assert any(n.startswith("resources.labels Team: written lowercased") for n in spec.notes)


def test_an_image_map_names_known_regions_only(write_spec):
    message = str(error(write_spec, "resources:\n  accelerators: L4:1\n  image_id:\n"
                                    "    us-east-99: ami-0123\n"))
    assert ":4: resources.image_id.us-east-99: unknown region 'us-east-99'" in message


@pytest.mark.parametrize("text, where", [
    ("resources: {accelerators: L4:1}\nservice:\n  readiness_probe: /health\n"
     "  tls: {keyfile: k, certfile: c}\n", ":4: service.tls: "),
    ("resources: {accelerators: L4:1, job_recovery: FAILOVER}\n", ":1: resources.job_recovery: "),
    ("config: {aws: {}}\nresources: {accelerators: L4:1}\n", ":1: config: "),
])
def test_skypilot_fields_with_no_counterpart_say_so(write_spec, text, where):
    message = str(error(write_spec, text))
    assert where + "a SkyPilot field servestack does not support (" in message


def test_ports_beyond_the_service_port_are_noted_and_a_range_alone_needs_service_ports(
        write_spec):
    spec = load(write_spec, "resources: {accelerators: L4:1, ports: [8000, 9000-9010]}\n"
                            "service: {readiness_probe: /health, ports: 8000}\n")
    assert any(n.startswith("resources.ports 9000-9010: only the service's port 8000")
               for n in spec.notes)
    message = str(error(write_spec, "resources:\n  accelerators: L4:1\n  ports: 8000-8010\n"))
    assert ":3: resources.ports: a service with several ports needs service.ports" in message


def test_two_unnamed_specs_in_two_folders_get_two_stable_names(tmp_path):
    from servestack.deployment.choices import service_slug

    names = []
    for folder in ("a", "b"):
        path = tmp_path / folder / "serve.yaml"
        path.parent.mkdir()
        path.write_text("resources: {accelerators: L4:1}\nrun: vllm serve m\n")
        spec = load_inputs(str(path)).spec
        assert spec.service_name == load_inputs(str(path)).spec.service_name  # stable
        assert service_slug(spec.service_name) == spec.service_name  # a valid resource name
        assert any(n.startswith(f"no name: the service is {spec.service_name}")
                   for n in spec.notes)
        names.append(spec.service_name)
    assert names[0] != names[1] and all(n.startswith("serve-") for n in names)
