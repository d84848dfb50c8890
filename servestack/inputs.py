"""Load what every command starts from: the catalog, the spec, and the model the spec serves."""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from servestack import models
from servestack.catalog import CLOUDS, Catalog, CatalogError, known_regions, load_catalog
from servestack.errors import UserError
from servestack.models import ModelFacts
from servestack.spec import ServiceSpec, SpecContext, load_spec, substitute_envs

EXAMPLE_SPEC = "mixtral.yaml"


@dataclass
class Inputs:
    spec: ServiceSpec
    catalog: Catalog
    model: str | None
    facts: ModelFacts | None


def example_spec_bytes() -> bytes:
    return resources.files("servestack").joinpath("examples", EXAMPLE_SPEC).read_bytes()


def load_inputs(spec_path: str | None, *, catalog_dir: str | None = None,
                model: str | None = None, model_config: str | None = None,
                env: dict | None = None, secrets: dict | None = None) -> Inputs:
    """`env`/`secrets`: --env and --secret (NAME -> value, or None to read the environment)."""
    try:
        catalog = load_catalog(catalog_dir)
    except CatalogError as exc:
        raise UserError(str(exc)) from None
    context = SpecContext(
        gpus=tuple(catalog.gpus),
        regions={c: frozenset(r) | catalog.regions(c) for c, r in known_regions().items()},
        zones={c: frozenset(catalog.zones(c)) for c in CLOUDS},
        zone_regions={o.zone: o.region for o in catalog.offers if o.zone},
    )
    if spec_path is None:
        spec = load_spec(f"<embedded {EXAMPLE_SPEC}>", context, env_overrides=env,
                         secret_overrides=secrets, environ=os.environ, raw=example_spec_bytes())
    else:
        spec = load_spec(Path(spec_path), context, env_overrides=env,
                         secret_overrides=secrets, environ=os.environ)
    command = substitute_envs(spec.run, spec.envs) if spec.run else None
    name = model or models.model_from_command(command)
    facts = models.lookup(name, model_config) if name else None
    if facts is not None:
        facts = models.apply_flags(facts, command)
    return Inputs(spec=spec, catalog=catalog, model=name, facts=facts)
