"""The service spec: SkyPilot's task YAML, read unchanged, checked, and turned into dataclasses.

`load_spec` reads the file, validates it against `spec_schema.json` (unknown keys are errors),
then applies the rules SkyPilot enforces on what may be combined, and expands the accelerator
alternatives (`{L4:8, A100:4}` sets, ordered lists, `any_of`, `ordered`) into `Alternative`s
for the planner. Every error names the file, the field and the line.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from servestack import clouds, models, secrets
from servestack.errors import SpecError, UserError
from servestack.yamlsource import MAX_DEPTH, Document, format_path, load_document

CLOUDS = clouds.NAMES
# SkyPilot fields with no counterpart here, and what to use instead.
SKYPILOT_ONLY_FIELDS = {
    "tls": "servestack's --domain NAME gives HTTPS with the cloud's own certificate",
    "config": "servestack's command-line flags set what SkyPilot's config would",
    "job_recovery": "a service's replicas are repaired by the cloud's instance group",
    "accelerator_args": "TPUs are not served",
    "autostop": "a service's replicas run until destroyed; scale with replica_policy",
    "storage_mounts": "the VMs mount no storage; --weight-cache keeps the model weights",
    "volumes": "the VMs mount no volumes",
    "pool": "servestack serves, it runs no job pools",
    "event_callback": "servestack runs no job callbacks",
    "experimental": "servestack's command-line flags set what SkyPilot's config would",
}
OTHER_SKYPILOT_CLOUDS = ("kubernetes", "k8s", "lambda", "oci", "runpod", "fluidstack", "ibm",
                         "scp", "cudo", "paperspace", "vast", "nebius", "do", "vsphere", "ssh")
DEFAULT_INITIAL_DELAY_SECONDS = 1200  # SkyServe's default
DEFAULT_PROBE_TIMEOUT_SECONDS = 15  # SkyServe's default
DEFAULT_DISK_SIZE_GB = 256  # SkyPilot's default
DEFAULT_PORT = 8000  # vLLM's default
# Limits a spec must stay within (the schema holds the same numbers; README, "The spec"):
MAX_GPUS_PER_VM = 16  # the most GPUs one VM has on AWS, GCP or Azure (a2-megagpu-16g, p2.16xlarge)
MAX_DISK_SIZE_GB = 65536  # 64 TiB: the largest GCP persistent disk / AWS io2 Block Express volume
AZURE_MAX_OS_DISK_GB = 4095  # Azure's largest managed OS disk
MAX_CPUS = 4096
MAX_MEMORY_GB = 65536
MAX_ALTERNATIVES = 256  # accelerators x any_of/ordered items: what the planner walks per plan
LB_POLICIES = ("round_robin", "least_load", "instance_aware_least_load")
SIZE_UNITS = {"": 1, "k": 1 / 1024**2, "m": 1 / 1024, "g": 1, "t": 1024, "p": 1024**2}
ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")
FIELD_HELP = {
    "accelerators": "a name ('A100'), name:count ('A100:4'), a set {L4:8, A100:4}, "
                    "a mapping {A100: 4} or a list [A100:4, L4:8]",
    "ports": "a port (8000), a range ('8000-8010') or a list of them",
    "disk_size": "a size in GB (256) or with a unit ('1TB')",
    "cpus": "a number (8), or '8+' for at least 8",
    "memory": "GB (32), '32+' for at least 32, or '4x' for 4 GB per vCPU",
    "readiness_probe": "a path ('/health') or {path, post_data, headers, "
                       "initial_delay_seconds, timeout_seconds}",
    "post_data": "a JSON object or a string holding JSON",
    "image_id": "an image id, or a mapping of region to image id",
    "secrets": "a mapping of names to values or null, or a list of names",
    "envs": "a mapping of NAME to a value (names match [A-Za-z_][A-Za-z0-9_]*)",
    "infra": "cloud[/region[/zone]], e.g. aws/us-east-1 or gcp/us-central1/us-central1-a",
}


@dataclass(frozen=True, slots=True)
class Bound:
    """A vCPU or memory request: exactly `value`, at least it (`8+`), or per vCPU (`4x`)."""

    value: float
    at_least: bool = False
    per_vcpu: bool = False

    def admits(self, amount: float, vcpus: float) -> bool:
        wanted = self.value * vcpus if self.per_vcpu else self.value
        return amount >= wanted - 1e-9 if self.at_least or self.per_vcpu \
            else abs(amount - wanted) < 1e-9

    def __str__(self) -> str:
        return f"{self.value:g}" + ("x" if self.per_vcpu else "+" if self.at_least else "")


@dataclass(frozen=True, slots=True)
class Alternative:
    """One way to run a replica that the spec allows; the planner matches it against offers."""

    accelerator: str | None
    count: int | None
    cloud: str | None = None
    region: str | None = None
    zone: str | None = None
    instance_type: str | None = None
    use_spot: bool = False
    cpus: Bound | None = None
    memory: Bound | None = None
    preference: int | None = None  # position in an ordered list; None: competes on cost
    field: str = "resources"

    @property
    def label(self) -> str:
        what = f"{self.accelerator}:{self.count}" if self.accelerator else self.instance_type
        where = "/".join(p for p in (self.cloud, self.region, self.zone) if p)
        extra = f" {self.instance_type}" if self.accelerator and self.instance_type else ""
        return f"{what}{extra}" + (f" on {where}" if where else "") + \
            (" [spot]" if self.use_spot else "")


@dataclass(frozen=True, slots=True)
class ReadinessProbe:
    path: str = "/"
    post_data: object = None
    headers: dict = field(default_factory=dict)
    initial_delay_seconds: int = DEFAULT_INITIAL_DELAY_SECONDS
    timeout_seconds: int = DEFAULT_PROBE_TIMEOUT_SECONDS

    @property
    def method(self) -> str:
        return "POST" if self.post_data is not None else "GET"


@dataclass(frozen=True, slots=True)
class ReplicaPolicy:
    min_replicas: int = 1
    max_replicas: int | None = None
    target_qps_per_replica: float | dict | None = None
    base_ondemand_fallback_replicas: int = 0
    dynamic_ondemand_fallback: bool = False
    num_overprovision: int = 0
    upscale_delay_seconds: float | None = None
    downscale_delay_seconds: float | None = None

    @property
    def fixed(self) -> bool:
        return self.target_qps_per_replica is None


@dataclass(frozen=True, slots=True)
class Service:
    readiness_probe: ReadinessProbe
    replica_policy: ReplicaPolicy
    port: int
    load_balancing_policy: str = "least_load"


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    file: str
    name: str | None
    alternatives: tuple[Alternative, ...]
    ordered: bool
    ports: tuple[tuple[int, int], ...]
    disk_size_gb: int
    disk_tier: str
    image_id: str | dict | None
    labels: dict
    max_hourly_cost: float | None
    service: Service | None
    envs: dict  # the envs that are not secret, with their values
    secrets: tuple[str, ...]  # secret names (servestack.secrets says which names are)
    setup: str | None
    run: str | None
    num_nodes: int
    notes: tuple[str, ...]
    secret_values: dict = field(default_factory=dict, repr=False, compare=False)
    missing: tuple[str, ...] = ()  # envs and secrets that have no value anywhere

    @property
    def service_name(self) -> str:
        """The spec's name, else one made from its file (see `derived_name`)."""
        return self.name or derived_name(self.file)

    @property
    def replicas(self) -> int:
        """Replicas the plan prices: min_replicas (at least one)."""
        return max(self.service.replica_policy.min_replicas, 1) if self.service else 1

    @property
    def port(self) -> int:
        return self.service.port if self.service else self.ports[0][0] if self.ports \
            else DEFAULT_PORT


@dataclass(frozen=True, slots=True)
class SpecContext:
    """What spec checks need from the catalog: GPU names, counts offered, regions, zones."""

    gpus: tuple[str, ...]
    regions: dict[str, frozenset[str]]
    zones: dict[str, frozenset[str]] = field(default_factory=dict)
    zone_regions: dict[str, str] = field(default_factory=dict)  # catalog zone -> its region


def load_spec(path: str | Path, context: SpecContext, *, env_overrides: dict | None = None,
              secret_overrides: dict | None = None, environ: Mapping[str, str] | None = None,
              raw: bytes | None = None) -> ServiceSpec:
    """`env_overrides`/`secret_overrides` are --env/--secret (a None value: read `environ`,
    the deployer's environment, which also fills names the spec gives no value)."""
    file = str(path)
    if raw is None:
        try:
            raw = Path(path).read_bytes()
        except FileNotFoundError:
            raise SpecError("no such file", file=file) from None
        except IsADirectoryError:
            raise SpecError("is a directory, not a spec file", file=file) from None
        except OSError as exc:
            raise SpecError(f"cannot read: {exc.strerror}", file=file) from None
    doc = load_document(raw, file)
    if not isinstance(doc.data, dict):
        raise doc.error((), "a spec is a YAML mapping with keys such as resources, service, run")
    validate_schema(doc)
    given = _Given(env_overrides or {}, secret_overrides or {}, environ or {})
    return _build(doc, context, given)


# --- schema ---------------------------------------------------------------------------------

@cache
def _validator():
    import jsonschema

    schema = json.loads((Path(__file__).parent / "spec_schema.json").read_text())
    return jsonschema.Draft202012Validator(schema)


def validate_schema(doc: Document) -> None:
    import jsonschema

    errors = list(_validator().iter_errors(doc.data))
    if not errors:
        return
    error = jsonschema.exceptions.best_match(errors)
    path = tuple(error.absolute_path)
    raise doc.error(*_describe(error, path))


def _describe(error, path: tuple) -> tuple[tuple, str]:
    name = next((p for p in reversed(path) if isinstance(p, str)), "")
    if error.validator == "anyOf":
        while error.parent is not None and error.parent.validator == "anyOf":
            error = error.parent  # best_match may pick a nested alternative
        limit = _limit_error(error)  # the value has a right form but is too large or too long
        if limit is not None:
            return _describe(limit, tuple(limit.absolute_path))
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(allowed))
        if unknown and unknown[0] in SKYPILOT_ONLY_FIELDS:
            return (*path, unknown[0]), ("a SkyPilot field servestack does not support "
                                         f"({SKYPILOT_ONLY_FIELDS[unknown[0]]}); remove it")
        hint = _did_you_mean(unknown[0], allowed) if unknown else ""
        return (*path, unknown[0]) if unknown else path, \
            f"unknown field {_short(unknown[0])}{hint}; allowed: {', '.join(allowed)}"
    if error.validator == "propertyNames":
        return path, f"{_short(error.instance)}: names must match [A-Za-z_][A-Za-z0-9_]*"
    if error.validator == "required":
        return path, error.message
    if error.validator in ("anyOf", "oneOf", "type", "pattern") and name in FIELD_HELP:
        return path, f"{_short(error.instance)} is not allowed here; expected {FIELD_HELP[name]}"
    if error.validator == "enum":
        return path, f"{_short(error.instance)} is not one of: " + \
            ", ".join(map(str, error.validator_value))
    if error.validator in BOUND_WORDS:
        return path, f"{_short(error.instance)} is out of range; it must be " \
            f"{BOUND_WORDS[error.validator]} {error.validator_value}"
    if error.validator in SIZE_WORDS:
        size = len(error.instance)
        return path, f"{size} {SIZE_WORDS[error.validator]}; at most " \
            f"{error.validator_value} allowed"
    if error.validator in ("minItems", "minProperties", "minLength"):
        return path, f"{_short(error.instance)} is empty; give at least one"
    if error.validator in ("anyOf", "oneOf", "type"):
        return path, f"{_short(error.instance)} is not allowed here; expected " \
            f"{_expected_types(error)}"
    return path, error.message


BOUND_WORDS = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}
SIZE_WORDS = {"maxItems": "items", "maxProperties": "entries", "maxLength": "characters"}
TYPE_WORDS = {"object": "a mapping", "array": "a list", "string": "text",
              "integer": "a whole number", "number": "a number", "boolean": "true or false",
              "null": "nothing"}


def _expected_types(error) -> str:
    """`text or a mapping`: the types a type or anyOf error allowed, in the user's words."""
    if error.validator == "type":
        types = error.validator_value
        types = types if isinstance(types, list) else [types]
    else:
        types = [branch.get("type") for branch in error.validator_value]
    words = list(dict.fromkeys(TYPE_WORDS.get(str(t), str(t)) for t in types if t))
    return " or ".join(words) or "another form"


def _limit_error(error):
    """A bound or size error among an anyOf's alternatives: only a branch of the value's own
    type can report one (maxItems applies to lists only, maximum to numbers only)."""
    for sub in error.context or ():
        if sub.validator in BOUND_WORDS or sub.validator in SIZE_WORDS:
            return sub
        found = _limit_error(sub)
        if found is not None:
            return found
    return None


def _short(value: object) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) < 60 else text[:57] + "..."


def _did_you_mean(word: str, choices) -> str:
    close = difflib.get_close_matches(word[:100], list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


# --- building the spec ------------------------------------------------------------------------

@dataclass(frozen=True)
class _Given:
    """What the command line and the deployer's environment add to the spec's envs/secrets."""

    envs: dict
    secrets: dict
    environ: Mapping[str, str]


def _build(doc: Document, context: SpecContext, given: _Given) -> ServiceSpec:
    data: dict = doc.data  # type: ignore[assignment]
    notes: list[str] = []
    num_nodes = data.get("num_nodes", 1)
    if num_nodes != 1:
        raise doc.error(("num_nodes",), f"{num_nodes} nodes per replica: servestack supports "
                        "num_nodes: 1 only for now (one VM per replica, tensor parallel "
                        "within it)")
    if not data.get("name"):
        notes.append(f"no name: the service is {derived_name(doc.file)} (the file's name and "
                     "a digest of its path); set name: to choose one")
    for key in ("file_mounts", "workdir"):
        if data.get(key):
            notes.append(f"{key}: accepted but not used by servestack (the bootstrap does not "
                         "copy files to the VMs)")
    if _anywhere_in_resources(data.get("resources") or {}, "network_tier"):
        notes.append("resources.network_tier: accepted but not used: the VMs get their cloud's "
                     "default network for the instance type (A3 types get gVNIC)")
    envs, secret_names, secret_values, missing = _envs_and_secrets(data, given)
    _check_run(doc, data.get("run"), envs)
    resources = data.get("resources") or {}
    alternatives, ordered = _alternatives(doc, resources, context)
    ports = _ports(doc, resources.get("ports"), ("resources", "ports"))
    service = None
    if data.get("service") is not None:
        service_data = substitute_envs(data["service"], envs)
        service = _service(doc, service_data, ports, alternatives, notes, data.get("run"))
        left = sorted(_references(service_data) & set(secret_names))
        if left:
            notes.append(f"service: {', '.join('$' + n for n in left)} stay as written: a "
                         "secret is never put into the service section, which the stack and "
                         "the VMs' user data hold in plain text")
    else:
        path = default_probe_path(data.get("run"))
        notes.append(f"no service section: one replica, probed at {path}; SkyServe asks for "
                     "service: {readiness_probe: PATH, replicas: N}")
    _check_ports(doc, data.get("run"), envs, service, ports, notes)
    declared = data.get("secrets")
    if isinstance(declared, dict) and any(v is not None for v in declared.values()):
        notes.append("secrets with values in the spec file are used but never written out; "
                     "prefer the environment or --secret NAME")
    return ServiceSpec(
        file=doc.file,
        name=data.get("name"),
        alternatives=tuple(alternatives),
        ordered=ordered,
        ports=ports,
        disk_size_gb=_disk_size(doc, resources.get("disk_size"), notes),
        disk_tier=resources.get("disk_tier", "medium"),
        image_id=_image_id(doc, resources.get("image_id"), context),
        labels=_labels(doc, dict(resources.get("labels") or {}), notes),
        max_hourly_cost=resources.get("max_hourly_cost"),
        service=service,
        envs=envs,
        secrets=secret_names,
        setup=data.get("setup"),
        run=data.get("run"),
        num_nodes=num_nodes,
        notes=tuple(notes),
        secret_values=secret_values,
        missing=missing,
    )


def _image_id(doc, value, context: SpecContext):
    """The image, or a map of region to image whose regions are all known ones."""
    if isinstance(value, dict):
        for region in value:
            _check_region(doc, None, str(region), ("resources", "image_id", region), context)
    return value


def label_key(key: str) -> str:
    """A label as every cloud takes it: GCP's rule, the strictest (lowercase [a-z0-9_-],
    at most 63 characters)."""
    return re.sub(r"[^a-z0-9_-]", "-", key.lower())[:63]


def label_value(value: object) -> str:
    return re.sub(r"[^a-z0-9_-]", "-", str(value).lower())[:63]


def _labels(doc, labels: dict, notes: list[str]) -> dict:
    """The spec's labels, refused where two become one label, noted where they change."""
    seen: dict[str, str] = {}
    for key in labels:
        made = label_key(str(key))
        if made in seen:
            raise doc.error(("resources", "labels", key), f"{key!r} and {seen[made]!r} both "
                            f"become the label {made!r} (labels are lowercased to a-z, 0-9, "
                            "_ and -, GCP's rule, on every cloud); rename one")
        seen[made] = str(key)
    changed = sorted(str(k) for k, v in labels.items()
                     if label_key(str(k)) != k or label_value(v) != str(v))
    if changed:
        notes.append(f"resources.labels {', '.join(changed)}: written lowercased to a-z, 0-9, "
                     "_ and - (at most 63 characters), as GCP requires, on every cloud")
    return labels


def derived_name(file: str) -> str:
    """The name of a spec without `name:`: its file's name and a digest of the file's full
    path, so two unnamed specs (two serve.yaml in two folders) never share stacks and names;
    a fixed default did. At most 20 characters once made a resource name."""
    where = file if file.startswith("<") else str(Path(file).resolve())
    stem = re.sub(r"[^a-z0-9]+", "-", Path(file).stem.lower()).strip("-")[:11] or "service"
    return f"{stem}-{hashlib.sha256(where.encode()).hexdigest()[:6]}"


def _anywhere_in_resources(resources: dict, key: str) -> bool:
    """Whether `key` is set in resources or any of its any_of / ordered entries."""
    entries = [resources, *(e for k in ("any_of", "ordered")
                            for e in (resources.get(k) or []) if isinstance(e, dict))]
    return any(entry.get(key) is not None for entry in entries)


def _references(value) -> set[str]:
    """The $NAME and ${NAME} names a service section still holds."""
    if isinstance(value, str):
        return {m.group(1) or m.group(2) for m in ENV_REF.finditer(value)}
    if isinstance(value, dict):
        return set().union(*map(_references, value.values()), set())
    if isinstance(value, list):
        return set().union(*map(_references, value), set())
    return set()


def substitute_envs(value, envs: dict):
    """Replace $VAR and ${VAR} with envs values, as SkyPilot does in the service section."""
    if isinstance(value, str):
        def repl(match: re.Match) -> str:
            name = match.group(1) or match.group(2)
            found = envs.get(name)
            return found if found is not None else match.group(0)
        return ENV_REF.sub(repl, value)
    if isinstance(value, dict):
        return {k: substitute_envs(v, envs) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute_envs(v, envs) for v in value]
    return value


def _envs_and_secrets(data: dict, given: _Given):
    """(envs that are not secret, secret names, secret values, names without a value)."""
    spec_envs = {k: (None if v is None else str(v)) for k, v in (data.get("envs") or {}).items()}
    declared = data.get("secrets") or {}
    spec_secrets = dict.fromkeys(declared) if isinstance(declared, list) else dict(declared)
    env_names = list(dict.fromkeys([*spec_envs, *given.envs]))
    credentials = [name for name in env_names
                   if secrets.is_credential(name, {**spec_envs, **given.envs}.get(name))]
    names = tuple(dict.fromkeys([*spec_secrets, *given.secrets, *credentials]))
    secret_values, missing = {}, []
    for name in names:
        value = secrets.resolve(name, [given.secrets, given.envs], [spec_secrets, spec_envs],
                                given.environ)
        if value:
            secret_values[name] = value
        else:
            missing.append(name)
    envs = {}
    for name in env_names:
        if name in names:
            continue
        value = secrets.resolve(name, [given.envs], [spec_envs], given.environ)
        if value is None:
            missing.append(name)
        else:
            envs[name] = value
    return envs, names, secret_values, tuple(missing)


# --- resources: accelerators, any_of, ordered, locations ---------------------------------------

def _alternatives(doc: Document, resources: dict, context: SpecContext):
    base_path = ("resources",)
    if "gpus" in resources and "accelerators" in resources:
        raise doc.error(("resources", "gpus"), "give either gpus or accelerators, not both")
    if "any_of" in resources and "ordered" in resources:
        raise doc.error(("resources", "ordered"), "give either any_of or ordered, not both")
    base = {k: v for k, v in resources.items() if k not in ("any_of", "ordered")}
    base_requests, base_is_list = _accelerators(doc, base, base_path, context)
    items, ordered = [], bool(base_is_list)
    if "ordered" in resources:
        if len(base_requests) > 1:
            raise doc.error(("resources", "accelerators"), "several accelerators cannot be "
                            "combined with ordered; put one per ordered item")
        items, ordered = [(i, item) for i, item in enumerate(resources["ordered"])], True
        key = "ordered"
    elif "any_of" in resources:
        if base_is_list:
            raise doc.error(("resources", "accelerators"), "an ordered list of accelerators "
                            "cannot be combined with any_of; use a set {A:1, B:1} or ordered")
        items, key = [(i, item) for i, item in enumerate(resources["any_of"])], "any_of"
    alternatives: list[Alternative] = []
    if not items:
        alternatives.extend(_expand(doc, base, base_path, base_requests, base_is_list, None,
                                    context))
    for index, item in items:
        path = ("resources", key, index)
        merged = {**base, **item}
        if "gpus" in item or "accelerators" in item:
            merged.pop("gpus" if "accelerators" in item else "accelerators", None)
            requests, _ = _accelerators(doc, item, path, context)
        else:
            requests = base_requests
        preference = index if key == "ordered" else None
        alternatives.extend(_expand(doc, merged, path, requests, False, preference, context))
        if len(alternatives) > MAX_ALTERNATIVES:
            break  # refused below; no need to expand the rest
    if not alternatives:
        raise doc.error(base_path, "name at least one accelerator (e.g. accelerators: A100:4) "
                        "or an instance_type: servestack plans GPU VMs")
    if len(alternatives) > MAX_ALTERNATIVES:
        raise doc.error(base_path, f"{len(alternatives)} alternatives (accelerators times "
                        f"any_of/ordered items); at most {MAX_ALTERNATIVES} allowed")
    _check_spot_agreement(doc, alternatives)
    return alternatives, ordered


def _expand(doc, config, path, requests, is_list, preference, context) -> list[Alternative]:
    cloud, region, zone = _location(doc, config, path, context)
    common = dict(
        cloud=cloud, region=region, zone=zone,
        instance_type=config.get("instance_type"),
        use_spot=bool(config.get("use_spot", False)),
        cpus=_bound(doc, config.get("cpus"), (*path, "cpus"), allow_ratio=False),
        memory=_bound(doc, config.get("memory"), (*path, "memory"), allow_ratio=True),
        field=format_path(path),
    )
    if not requests:
        if not config.get("instance_type"):
            return []
        return [Alternative(accelerator=None, count=None, preference=preference, **common)]
    return [Alternative(accelerator=name, count=count,
                        preference=i if is_list else preference, **common)
            for i, (name, count) in enumerate(requests)]


def _accelerators(doc, config: dict, path: tuple, context: SpecContext):
    key = "gpus" if "gpus" in config else "accelerators"
    value = config.get(key)
    field_path = (*path, key)
    if value is None:
        return [], False
    if isinstance(value, str):
        return [_parse_accelerator(doc, value, field_path, context)], False
    if isinstance(value, list):
        requests = [_parse_accelerator(doc, v, (*field_path, i), context)
                    for i, v in enumerate(value)]
        return _unique(doc, requests, field_path), True
    requests = []
    for name, count in value.items():
        item_path = (*field_path, name)
        if count is None:
            requests.append(_parse_accelerator(doc, name, item_path, context))
        else:
            requests.append((canonical_gpu(doc, name.strip(), item_path, context),
                             _gpu_count(doc, count, f"{name}: {count}", item_path)))
    return _unique(doc, requests, field_path), False


def _unique(doc, requests, path):
    seen = set()
    for request in requests:
        if request in seen:
            raise doc.error(path, f"{request[0]}:{request[1]} is listed twice")
        seen.add(request)
    return requests


def _parse_accelerator(doc, text: str, path: tuple, context: SpecContext) -> tuple[str, int]:
    name, _, count_text = str(text).strip().partition(":")
    count_text = count_text.strip() or "1"
    if not GPU_COUNT.fullmatch(count_text):
        raise doc.error(path, f"{_short(text)}: expected <name> or <name>:<count>, e.g. A100:4")
    count = _gpu_count(doc, float(count_text), text, path)
    return canonical_gpu(doc, name.strip(), path, context), count


GPU_COUNT = re.compile(r"[+-]?[0-9]{1,9}(\.[0-9]{1,9})?")  # no exponents, inf or nan


def _gpu_count(doc, value: float, text: str, path: tuple) -> int:
    """A GPU count: whole, positive, at most what one VM of any cloud has."""
    if value <= 0:
        raise doc.error(path, f"{_short(text)}: the GPU count must be a positive whole number")
    if value != int(value):
        raise doc.error(path, f"{_short(text)}: fractional GPUs are not supported; "
                        "use a whole count such as 1")
    if value > MAX_GPUS_PER_VM:
        raise doc.error(path, f"{_short(text)}: {int(value)} GPUs in one VM; AWS, GCP and "
                        f"Azure have at most {MAX_GPUS_PER_VM}")
    return int(value)


def canonical_gpu(doc, name: str, path: tuple, context: SpecContext) -> str:
    """`A10g` -> `A10G`; names match case-insensitively and exactly (A10 is not A10G)."""
    by_upper = {g.upper(): g for g in context.gpus}
    found = by_upper.get(name.upper())
    if found:
        return found
    close = difflib.get_close_matches(name.upper(), list(by_upper), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(by_upper[c] for c in close)}?" if close else ""
    raise doc.error(path, f"unknown accelerator {_short(name)}{hint} "
                    f"(known: {', '.join(sorted(context.gpus))})")


def _location(doc, config: dict, path: tuple, context: SpecContext):
    infra = config.get("infra")
    cloud, region, zone = config.get("cloud"), config.get("region"), config.get("zone")
    if infra is not None:
        if any(v is not None for v in (cloud, region, zone)):
            raise doc.error((*path, "infra"), "give either infra or cloud/region/zone, not both")
        parts = [None if p == "*" else p for p in infra.split("/")]
        cloud, region, zone = (parts + [None, None, None])[:3]
        field_of = {"cloud": "infra", "region": "infra", "zone": "infra"}
    else:
        field_of = {"cloud": "cloud", "region": "region", "zone": "zone"}
    if cloud is not None:
        cloud = _cloud(doc, cloud, (*path, field_of["cloud"]))
    if zone is not None and region is None:
        region = _region_of_zone(zone, cloud, context)
    if region is not None:
        cloud = _check_region(doc, cloud, region, (*path, field_of["region"]), context)
    if zone is not None:
        _check_zone(doc, cloud, region, zone, (*path, field_of["zone"]), context)
    return cloud, region, zone


def _cloud(doc, value: str, path: tuple) -> str:
    cloud = value.strip().lower()
    if cloud in CLOUDS:
        return cloud
    if cloud in OTHER_SKYPILOT_CLOUDS:
        raise doc.error(path, f"{_short(value)} is a SkyPilot cloud servestack does not deploy to; "
                        f"allowed: {', '.join(CLOUDS)}")
    raise doc.error(path, f"unknown cloud {_short(value)}{_did_you_mean(cloud, CLOUDS)}; "
                    f"allowed: {', '.join(CLOUDS)}")


def _check_region(doc, cloud, region: str, path: tuple, context: SpecContext) -> str:
    owners = [c for c in CLOUDS if region in context.regions.get(c, ())]
    if cloud is not None and cloud in owners:
        return cloud
    if cloud is None and len(owners) == 1:
        return owners[0]
    pool = context.regions.get(cloud, frozenset()) if cloud else \
        frozenset().union(*context.regions.values())
    hint = _did_you_mean(region, sorted(pool))
    scope = f" of {cloud}" if cloud else ""
    raise doc.error(path, f"unknown region {_short(region)}{scope}{hint}")


def _region_of_zone(zone: str, cloud, context: SpecContext):
    if zone in context.zone_regions:
        return context.zone_regions[zone]
    for c in ([cloud] if cloud else CLOUDS):
        for region in context.regions.get(c, ()):
            if zone.startswith(region) and len(zone) > len(region):
                return region
    return None


def _check_zone(doc, cloud, region, zone: str, path: tuple, context: SpecContext) -> None:
    if region is None:
        raise doc.error(path, f"unknown zone {_short(zone)}: it names no known region")
    known = context.zones.get(cloud or "", frozenset())
    if zone in known:
        return
    if cloud and clouds.get(cloud).zone_matches(region, zone):
        return
    elsewhere = _region_of_zone(zone, cloud, context)
    if elsewhere and elsewhere != region:
        raise doc.error(path, f"zone {_short(zone)} is a zone of region {_short(elsewhere)}, "
                        f"not of {_short(region)}")
    raise doc.error(path, f"unknown zone {_short(zone)} for region {_short(region)}"
                    f"{_did_you_mean(zone, sorted(z for z in known if z.startswith(region)))}")


def _check_spot_agreement(doc, alternatives: list[Alternative]) -> None:
    spots = {a.use_spot for a in alternatives}
    if len(spots) > 1 and "service" in doc.data:  # type: ignore[operator]
        raise doc.error(("resources",), "the alternatives of a service must all use spot or "
                        "none; to mix, use spot with replica_policy.base_ondemand_fallback_"
                        "replicas or dynamic_ondemand_fallback")


def _bound(doc, value, path: tuple, allow_ratio: bool) -> Bound | None:
    if value is None:
        return None
    text = str(value).strip()
    per_vcpu = text.endswith("x")
    at_least = text.endswith("+")
    if per_vcpu and not allow_ratio:
        raise doc.error(path, f"{_short(value)}: expected {FIELD_HELP['cpus']}")
    number = float(text.rstrip("+x").strip())  # the schema let only digits through
    most = MAX_MEMORY_GB if allow_ratio else MAX_CPUS
    if not 0 < number <= most:
        raise doc.error(path, f"{_short(value)} is out of range; it must be > 0 and <= {most}")
    return Bound(number, at_least=at_least, per_vcpu=per_vcpu)


def _disk_size(doc, value, notes: list[str]) -> int:
    path = ("resources", "disk_size")
    if value is None:
        return DEFAULT_DISK_SIZE_GB
    if isinstance(value, str):
        match = re.match(r"^\s*([0-9.]+)\s*([kmgtp]?)i?b?\s*$", value, re.IGNORECASE)
        if not match:
            raise doc.error(path, f"{_short(value)}: expected {FIELD_HELP['disk_size']}")
        size = float(match.group(1)) * SIZE_UNITS[match.group(2).lower()]
    else:
        size = value  # the schema let only a whole number through
    if not 1 <= size <= MAX_DISK_SIZE_GB:
        raise doc.error(path, f"{_short(value)} is out of range; a disk is 1 to "
                        f"{MAX_DISK_SIZE_GB} GB (64 TiB, the largest the clouds allow)")
    if size > AZURE_MAX_OS_DISK_GB:
        notes.append(f"disk_size {size:g} GB is above Azure's largest OS disk "
                     f"({AZURE_MAX_OS_DISK_GB} GB): Azure would refuse its candidates")
    return int(round(size))


# --- ports and service ----------------------------------------------------------------------

def _ports(doc, value, path: tuple) -> tuple[tuple[int, int], ...]:
    if value is None:
        return ()
    values = value if isinstance(value, list) else [value]
    ports = []
    for i, item in enumerate(values):
        item_path = (*path, i) if isinstance(value, list) else path
        if isinstance(item, str):
            low_text, _, high_text = item.partition("-")
            low, high = _port(doc, low_text, item_path), _port(doc, high_text or low_text,
                                                               item_path)
        else:
            low = high = _port(doc, item, item_path)
        if low > high:
            raise doc.error(item_path, f"{_short(item)}: a range runs from low to high")
        ports.append((low, high))
    return tuple(ports)


def _port(doc, value, path: tuple) -> int:
    """A port: a whole number 1-65535, written as such (8080.0 is refused, as SkyPilot would)."""
    text = value.strip() if isinstance(value, str) else None
    if text is not None and text.isdigit() and len(text) <= 5:
        value = int(text)
    if isinstance(value, bool) or not isinstance(value, int):
        raise doc.error(path, f"{_short(value)} is not a port; expected {FIELD_HELP['ports']}")
    if not 1 <= value <= 65535:
        raise doc.error(path, f"port {value} is out of range; ports are 1-65535")
    return value


def default_probe_path(run: str | None) -> str:
    """Where a spec without a readiness probe is probed: vLLM's /health when the replicas run
    vLLM (servestack's own command, or a run that starts it), else /."""
    return "/health" if not run or models.VLLM_SERVER.search(run) else "/"


def _service(doc, data: dict, ports, alternatives, notes: list[str],
             run: str | None) -> Service:
    if data.get("readiness_probe") is None:
        path = default_probe_path(run)
        probe = ReadinessProbe(path=path)
        notes.append(f"service.readiness_probe not given: servestack probes {path}" + (
            " (vLLM's health endpoint)" if path == "/health" else
            "; set readiness_probe to your server's health path"))
    else:
        probe = _probe(doc, data["readiness_probe"])
    policy = _replica_policy(doc, data)
    if policy.base_ondemand_fallback_replicas or policy.dynamic_ondemand_fallback:
        if not all(a.use_spot for a in alternatives):
            raise doc.error(("service", "replica_policy"), "base_ondemand_fallback_replicas and "
                            "dynamic_ondemand_fallback need spot resources; set use_spot: true")
    policy_name = data.get("load_balancing_policy", "least_load").lower()
    if policy_name not in LB_POLICIES:
        raise doc.error(("service", "load_balancing_policy"), f"unknown policy "
                        f"{_short(policy_name)}; allowed: {', '.join(LB_POLICIES)}")
    if "load_balancing_policy" in data:
        notes.append(f"service.load_balancing_policy {policy_name}: accepted but not used: the "
                     "cloud's own load balancer picks the replica for each request")
    if policy.min_replicas == 0:
        notes.append("service.replica_policy.min_replicas 0: kept at 1; the clouds' autoscalers "
                     "scale on the load balancer's requests per replica, which a group of zero "
                     "replicas does not have, so it could never scale up again")
    if "spot_placer" in (data.get("replica_policy") or {}):
        notes.append("service.replica_policy.spot_placer: accepted but not used: servestack "
                     "spreads a spot group over every zone of the region that sells its types "
                     "and leaves the choice of zone to the cloud's capacity-aware allocation")
    return Service(readiness_probe=probe, replica_policy=policy,
                   port=_service_port(doc, data, ports, notes),
                   load_balancing_policy=policy_name)


def _service_port(doc, data: dict, ports, notes: list[str]) -> int:
    if "ports" in data:
        return _port(doc, data["ports"], ("service", "ports"))
    if not ports:
        notes.append(f"no port given: the service uses vLLM's default port {DEFAULT_PORT}")
        return DEFAULT_PORT
    if len(ports) > 1 or ports[0][0] != ports[0][1]:
        raise doc.error(("resources", "ports"), "a service with several ports needs "
                        "service.ports to name the one vLLM serves on")
    return ports[0][0]


def _probe(doc, value) -> ReadinessProbe:
    path_key = ("service", "readiness_probe")
    if value is None:
        return ReadinessProbe()
    as_string = isinstance(value, str)
    if as_string:
        value = {"path": value}
    path = value["path"]
    if not path.startswith("/"):
        raise doc.error(path_key if as_string else (*path_key, "path"),
                        f"readiness path must start with a slash (/); got {_short(path)}")
    post_data = value.get("post_data")
    if isinstance(post_data, str):
        post_data = _json_body(doc, post_data, (*path_key, "post_data"))
    headers = dict(value.get("headers") or {})
    for name in headers:
        if _credential_header(str(name)):
            raise doc.error((*path_key, "headers", name), "a credential in the spec would be "
                            "copied in plain text into the VMs' user data and the stack; leave "
                            "it out: servestack's probes send the service's API key themselves "
                            "(Authorization: Bearer)")
    # The clouds take whole seconds; rounding up keeps a 0.5 s timeout from becoming 0.
    return ReadinessProbe(
        path=path, post_data=post_data, headers=headers,
        initial_delay_seconds=math.ceil(value.get("initial_delay_seconds",
                                                  DEFAULT_INITIAL_DELAY_SECONDS)),
        timeout_seconds=math.ceil(value.get("timeout_seconds", DEFAULT_PROBE_TIMEOUT_SECONDS)),
    )


def _json_body(doc, text: str, path: tuple):
    """post_data given as a JSON string, held to the same rules as YAML values."""
    depth = _json_depth(text)
    if depth > MAX_DEPTH:
        raise doc.error(path, f"the JSON is nested {depth} levels deep; at most {MAX_DEPTH}")
    try:
        return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        raise doc.error(path, f"invalid JSON: {exc.msg} at character {exc.pos}") from None
    except ValueError as exc:  # a non-finite or over-long number
        raise doc.error(path, f"invalid JSON: {exc}; numbers must be finite") from None


def _json_depth(text: str) -> int:
    """How deeply brackets nest outside strings: measured before json.loads recurses."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif in_string:
            escaped = char == "\\"
            in_string = char != '"'
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:20]} is too large")
    return value


def _replica_policy(doc, data: dict) -> ReplicaPolicy:
    if "replicas" in data and "replica_policy" in data:
        raise doc.error(("service", "replica_policy"), "give either replicas or "
                        "replica_policy, not both")
    if "replica_policy" not in data:
        count = _whole(data.get("replicas", 1))
        return ReplicaPolicy(min_replicas=count, max_replicas=count)
    raw = data["replica_policy"]
    path = ("service", "replica_policy")
    low, high = _whole(raw["min_replicas"]), _whole(raw.get("max_replicas"))
    qps = raw.get("target_qps_per_replica")
    if high is not None and high < low:
        raise doc.error((*path, "max_replicas"), f"max_replicas must be >= min_replicas; "
                        f"got min_replicas={low}, max_replicas={high}")
    if qps is not None and high is None:
        raise doc.error((*path, "target_qps_per_replica"), "max_replicas must be set where "
                        "target_qps_per_replica is set")
    if qps is None and high is not None and high != low:
        raise doc.error((*path, "max_replicas"), "min_replicas and max_replicas differ but "
                        "target_qps_per_replica is not set; set it to enable autoscaling")
    base = _whole(raw.get("base_ondemand_fallback_replicas", 0))
    return ReplicaPolicy(
        min_replicas=low, max_replicas=high if high is not None else low,
        target_qps_per_replica=qps, base_ondemand_fallback_replicas=base,
        dynamic_ondemand_fallback=raw.get("dynamic_ondemand_fallback", False),
        num_overprovision=_whole(raw.get("num_overprovision", 0)),
        upscale_delay_seconds=raw.get("upscale_delay_seconds"),
        downscale_delay_seconds=raw.get("downscale_delay_seconds"),
    )


def _whole(value):
    """A count the schema accepted as an integer: 2 or 2.0 (finite and bounded there)."""
    return None if value is None else int(value)


# --- run: what vLLM would refuse at start ----------------------------------------------------

def _check_ports(doc, run: str | None, envs: dict, service: Service | None, ports,
                 notes: list[str]) -> None:
    """The run's vLLM must listen where the balancer and the firewall send requests; the
    other ports the spec opens are not opened, and a note says so."""
    port = service.port if service else _service_port(doc, {}, ports, [])
    served = models.vllm_port(substitute_envs(run, envs)) if run else None
    if served is not None and served[0] != port:
        how = "--port" if served[1] else "no --port: vLLM's default"
        raise doc.error(("run",), f"vLLM serves on port {served[0]} ({how}) but the service's "
                        f"port is {port} (service.ports, else resources.ports, else "
                        f"{DEFAULT_PORT}); the balancer would never reach it: make them one port")
    others = [f"{low}-{high}" if high > low else str(low) for low, high in ports
              if not low <= port <= high or high > low]
    if others:
        notes.append(f"resources.ports {', '.join(others)}: only the service's port {port} is "
                     "opened, behind the load balancer; the VMs take nothing on the others")


CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "x-api-key",
                                "api-key"})


def _credential_header(name: str) -> bool:
    """Whether a probe header carries a credential (Authorization, Cookie, X-Auth-Token...)."""
    return name.lower() in CREDENTIAL_HEADERS or \
        secrets.is_credential_name(name.replace("-", "_"))


def _check_run(doc, run: str | None, envs: dict) -> None:
    if not run:
        return
    command = substitute_envs(run, envs)
    model = models.model_from_command(command)
    problem = models.model_name_problem(model) if model else None
    if problem:
        raise doc.error(("run",), problem)
    try:
        models.vllm_flags(command)
    except UserError as exc:
        raise doc.error(("run",), exc.message) from None
