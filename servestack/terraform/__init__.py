"""Terraform JSON (`main.tf.json`) from the same `Deployment` the Pulumi components read.

`render(deployment)` returns the whole configuration as a dict in Terraform's JSON syntax; one
module per cloud (aws.py, gcp.py, azure.py) builds its resources. The renderers decide nothing:
they read the `Deployment`, and how each cloud spells its decisions from servestack.mechanics,
which the Pulumi components share.

Terraform JSON strings are templates: `${...}` in any string is an expression. A renderer marks
the strings that are expressions with `Ref`/`expr`/`template`; `finish()` escapes `${` and `%{`
in every other string (user data, descriptions), so no spec text is ever evaluated.

The deployment's secrets (servestack.secrets: one env file of NAME=value lines) are an
*ephemeral*, sensitive variable passed to a write-only argument (`value_wo`/`secret_data_wo`):
never a literal, never in the plan or the state. The variable keeps its historical name,
`hf_token`; a bare token in it still means HF_TOKEN.
The operator-tunable values (replica counts, GCP project) are variables whose values go to
`terraform.tfvars.json` (see `tfvars`).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from servestack.deployment.model import (
    OUTPUT_API_KEY,
    OUTPUT_API_KEY_REF,
    OUTPUT_CANDIDATE,
    OUTPUT_ENDPOINT,
    OUTPUT_GROUP_ID,
    OUTPUT_GROUP_NAME,
    OUTPUT_LB_HOST,
    OUTPUT_PRICE,
    OUTPUT_REPLICAS,
    Deployment,
)

TERRAFORM_VERSION = ">= 1.11.0"  # ephemeral variables and write-only arguments
TOKEN_VAR = "hf_token"
TOKEN_VERSION_VAR = "hf_token_version"


class Ref(str):
    """A string Terraform evaluates (it holds `${...}`); `finish()` leaves it as is."""


def expr(expression: str) -> Ref:
    return Ref("${" + expression + "}")


def template(*parts: str) -> Ref:
    """Literal text and `Ref`s joined into one template; the literal parts are escaped."""
    return Ref("".join(p if isinstance(p, Ref) else escape(p) for p in parts))


# The generated API key: two random UUIDs (v4, 122 random bits each) drawn at the first apply,
# then kept: `ignore_changes` stops uuid()'s new value at every later plan from replacing it.
# terraform_data is built into Terraform (no provider to download, so the offline AWS mirror
# suffices); the value is in the state, like every secret a Terraform resource generates, and
# only leaves it as a sensitive output. uuid() is unknown until apply, so no plan shows it.
# A pool of a service over several pools draws none: it reads the one key of the service's
# key stack (servestack.terraform.shared.render_key) from that stack's state.
API_KEY_RESOURCE = "terraform_data.api_key"
KEY_STATE = "data.terraform_remote_state.api_key"
STATE_FILE = "terraform.tfstate"


def draw_api_key() -> dict[str, Any]:
    """The terraform_data block that draws a key (merge it under "resource")."""
    return {"terraform_data": {"api_key": {
        "input": expr('replace(join("", [uuid(), uuid()]), "-", "")'),
        "lifecycle": {"ignore_changes": ["input"]}}}}


def api_key_resources(d: Deployment) -> dict[str, Any]:
    """The resource blocks that draw the deployment's key: none when it has no key or reads
    the service's shared one."""
    if d.api_key is None or d.shared_api_key:
        return {}
    return draw_api_key()


def api_key_value(d: Deployment) -> str:
    """The expression of the deployment's key, sensitive wherever it goes."""
    if d.shared_api_key:
        return f"sensitive({KEY_STATE}.outputs.{OUTPUT_API_KEY})"
    return f"sensitive({API_KEY_RESOURCE}.output)"


def sibling_state(stack: str) -> dict[str, Any]:
    """A terraform_remote_state body reading the local state of the stack `stack`, whose
    folder sits next to this one (generate's stacks/<name>/ and the engine's
    <work dir>/stacks/<name>/ alike)."""
    return {"backend": "local", "config": {"path": f"../{stack}/{STATE_FILE}"}}


def api_key_data(d: Deployment) -> dict[str, Any]:
    """The data block that reads the shared key from the key stack's state (merge it under
    "data"); none when the deployment draws its own key."""
    if d.api_key is None or not d.shared_api_key:
        return {}
    return {"terraform_remote_state": {"api_key": sibling_state(d.shared_api_key)}}


def service_outputs(d: Deployment, address: str, group: str,
                    api_key_ref: str | None = None) -> dict[str, Any]:
    """The outputs every cloud exports, as the Pulumi program does: `address` is the
    expression of the load balancer's address (the endpoint's host without TLS, and always
    `lb_host`, what a front reaches), `group` the instance group's resource, `api_key_ref`
    the expression naming where the key is kept."""
    outputs = _common_outputs(d, address, group)
    outputs[OUTPUT_LB_HOST] = {"value": expr(address),
                               "description": "the load balancer's address (for a front)"}
    if d.api_key is not None and api_key_ref is not None:
        outputs[OUTPUT_API_KEY] = {"value": expr(api_key_value(d)), "sensitive": True,
                                   "description": "the API key vLLM requires (Bearer token)"}
        outputs[OUTPUT_API_KEY_REF] = {"value": expr(api_key_ref),
                                       "description": "where the secret store keeps the key"}
    return outputs


def _common_outputs(d: Deployment, address: str, group: str) -> dict[str, Any]:
    url = template("https://", d.tls.domain) if d.tls else \
        template("http://", expr(address), f":{d.listener_port}")
    return {
        OUTPUT_ENDPOINT: {"value": url, "description": "the service's URL"},
        OUTPUT_GROUP_NAME: {"value": expr(f"{group}.name")},
        OUTPUT_GROUP_ID: {"value": expr(f"{group}.id")},
        OUTPUT_CANDIDATE: {"value": d.candidate_id},
        OUTPUT_PRICE: {"value": d.primary.price_per_hour},
        OUTPUT_REPLICAS: {"value": expr("var.desired_replicas")},
    }


def escape(text: str) -> str:
    return text.replace("${", "$${").replace("%{", "%%{")


def finish(node: Any) -> Any:
    """Escape every plain string (keys included) so only `Ref`s are templates."""
    if isinstance(node, Ref):
        return str(node)
    if isinstance(node, str):
        return escape(node)
    if isinstance(node, dict):
        return {finish(k): finish(v) for k, v in node.items()}
    if isinstance(node, list | tuple):
        return [finish(v) for v in node]
    return node


def header(d: Deployment) -> dict[str, Any]:
    """terraform + provider requirements, the variables every cloud shares."""
    local, requirement = renderer(d.cloud).PROVIDER
    variables: dict[str, Any] = {
        "min_replicas": _number("fewest replicas the group keeps"),
        "max_replicas": _number("most replicas the group may run"),
        "desired_replicas": _number("replicas to run now"),
    }
    if d.secret is not None:
        variables[TOKEN_VAR] = {
            "type": "string", "sensitive": True, "ephemeral": True, "nullable": False,
            "description": "the secrets as NAME=value lines, or a bare Hugging Face token "
                           f"(set TF_VAR_hf_token); written to {d.token_secret.store} "
                           f"{d.token_secret.name}, never stored in the state"}
        variables[TOKEN_VERSION_VAR] = _number(
            "bump to write new secrets (hf_token is write-only)")
    return {"terraform": {"required_version": TERRAFORM_VERSION,
                          "required_providers": {local: requirement}},
            "variable": variables}


def _number(description: str) -> dict[str, Any]:
    return {"type": "number", "nullable": False, "description": description}


def tfvars(d: Deployment) -> dict[str, Any]:
    """terraform.tfvars.json: the variables' values from the Deployment (no secret)."""
    values: dict[str, Any] = {"min_replicas": d.min_replicas, "max_replicas": d.max_replicas,
                              "desired_replicas": d.desired_replicas}
    if d.secret is not None:
        values[TOKEN_VERSION_VAR] = 1
    return {**values, **renderer(d.cloud).variable_values(d)}


def renderer(cloud: str) -> Any:
    """The cloud's renderer module (servestack.terraform.<cloud>)."""
    return import_module(f"servestack.terraform.{cloud}")


def render(d: Deployment) -> dict[str, Any]:
    """The whole main.tf.json for the deployment's cloud."""
    document = header(d)
    body = renderer(d.cloud).render(d)
    for section, blocks in body.items():
        if section == "variable":
            document["variable"].update(blocks)
        else:
            document[section] = blocks
    shared = api_key_data(d)
    if shared:  # every cloud reads the shared key alike; the renderers only use its value
        document["data"] = merge(document.get("data") or {}, shared)
    return finish(document)


def merge(*parts: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Merge {type: {name: body}} maps (resource or data blocks) from several helpers."""
    merged: dict[str, dict[str, Any]] = {}
    for part in parts:
        for kind, blocks in part.items():
            merged.setdefault(kind, {}).update(blocks)
    return merged


def compact(values: dict[str, Any]) -> dict[str, Any]:
    """Drop None values: Terraform JSON has no 'unset' other than leaving a key out."""
    return {k: v for k, v in values.items() if v is not None}
