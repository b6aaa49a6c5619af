"""JSON-schema validation of the project's YAML/JSON files (schemas in ``workflow/schemas``),
with one-line errors that name the file and the key."""

from __future__ import annotations

from functools import lru_cache

import jsonschema
import yaml

from .paths import project_root


@lru_cache(maxsize=32)
def load_schema(name: str) -> dict:
    path = project_root() / "workflow" / "schemas" / f"{name}.schema.yaml"
    return yaml.safe_load(path.read_text())


def validate(data, schema: str | dict, where: str) -> None:
    """Raise ValueError('<where>: <key path>: <what was expected>') on the first problem."""
    sch = load_schema(schema) if isinstance(schema, str) else schema
    validator = jsonschema.Draft202012Validator(sch)
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        key = "/".join(str(p) for p in err.absolute_path) or "(top level)"
        raise ValueError(f"{where}: {key}: {err.message}")
