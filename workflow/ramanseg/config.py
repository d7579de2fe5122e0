"""The workflow configuration: loading, validation against the JSON schema, accessors.

The same YAML that drives Snakemake drives the ``ramanseg`` commands: a command takes
``--config FILE`` (one or more YAML files, later ones override earlier ones, as with
``snakemake --configfile``) or ``--settings JSON`` (the subset of the configuration the
command needs, which is how the Snakemake rules call it so that a rule reruns only when
its own settings change).
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

#: The repository's ``workflow/`` folder; schemas live beside the package.
WORKFLOW_DIR = Path(__file__).resolve().parent.parent
SCHEMA_DIR = WORKFLOW_DIR / "schemas"


class ConfigError(ValueError):
    """A configuration value is missing or invalid; the message names the key."""


def load_schema(name: str) -> dict:
    """Load ``workflow/schemas/<name>.schema.yaml``.

    Args:
        name: ``config`` or ``samples``.
    """
    path = SCHEMA_DIR / f"{name}.schema.yaml"
    if not path.is_file():
        raise FileNotFoundError(
            f"schema {path} not found: ramanseg must run from a checkout of the repository "
            "(install it with `pip install -e .`)"
        )
    with path.open() as handle:
        return yaml.safe_load(handle)


def _key_path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(part) for part in error.absolute_path) or "(top level)"


def _with_defaults(validator_class):
    """A validator class that also fills in the schema's defaults, like Snakemake's."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if isinstance(subschema, dict) and "default" in subschema:
                    instance.setdefault(name, copy.deepcopy(subschema["default"]))
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


def validate_config(config: Mapping[str, Any], *, partial: bool = False) -> dict:
    """Validate a configuration against ``config.schema.yaml`` and fill in defaults.

    Args:
        config: the configuration mapping.
        partial: accept a subset of the top-level keys (the ``--settings`` of a rule).

    Returns:
        A deep copy of ``config`` with schema defaults filled in.

    Raises:
        ConfigError: naming the offending key and what the schema expects.
    """
    schema = load_schema("config")
    if partial:
        schema = dict(schema)
        schema.pop("required", None)
    config = copy.deepcopy(dict(config))
    given = set(config)
    validator = _with_defaults(jsonschema.Draft202012Validator)(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"  {_key_path(e)}: {e.message}" for e in errors]
        raise ConfigError("invalid configuration:\n" + "\n".join(lines))
    # A rule's settings are checked for the relations between the sections it passes,
    # not with a section's defaults: the default `interpret.ablation_class` would
    # otherwise reject the `annotations` of every preprocess job whose classes lack it.
    check_config_semantics({key: config[key] for key in given} if partial else config)
    return config


def _json_types(value: Any) -> set[str]:
    """The JSON Schema types a parsed scalar satisfies (an int is also a number)."""
    if value is None:
        return {"null"}
    if isinstance(value, bool):
        return {"boolean"}
    if isinstance(value, int):
        return {"integer", "number"}
    if isinstance(value, float):
        return {"number", "integer"} if value.is_integer() else {"number"}
    return set()


def _parse_scalar(text: str) -> Any:
    """``text`` read as a YAML scalar (``3``, ``0.5``, ``1e-3``, ``true``, ``null``), or
    ``text`` itself when it is none of these."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        # YAML 1.1 reads `1e-3` (no dot) as a string.
        try:
            number = float(text)
        except ValueError:
            return text
        return number if math.isfinite(number) else text
    return value if _json_types(value) else text


class _SchemaWalker:
    """Follows a configuration through the schema: ``$ref``, combinators, properties."""

    def __init__(self, schema: Mapping[str, Any]):
        self.root = schema
        self.validator = jsonschema.Draft202012Validator(schema)

    def branches(self, schema: Any) -> list[Mapping[str, Any]]:
        """The schemas a value at ``schema``'s place must or may satisfy.

        Args:
            schema: a schema or subschema of the configuration schema.

        Returns:
            ``schema``, what its ``$ref`` names and the branches of its ``allOf``,
            ``anyOf`` and ``oneOf``, recursively.
        """
        if not isinstance(schema, Mapping):
            return []
        found = [schema]
        if "$ref" in schema:
            # The schema's references are all local (`#/$defs/...`).
            target: Any = self.root
            for part in schema["$ref"].removeprefix("#/").split("/"):
                target = target[part]
            found += self.branches(target)
        for keyword in ("allOf", "anyOf", "oneOf"):
            for branch in schema.get(keyword, []):
                found += self.branches(branch)
        return found

    def declared_types(self, schema: Any) -> set[str]:
        """The JSON types ``schema`` names (``type``, and those of its ``enum``/``const``).

        Args:
            schema: a subschema of the configuration schema.
        """
        types: set[str] = set()
        for branch in self.branches(schema):
            declared = branch.get("type", [])
            types.update([declared] if isinstance(declared, str) else declared)
            values = branch.get("enum", []) + ([branch["const"]] if "const" in branch else [])
            for value in values:
                types.update({"string"} if isinstance(value, str) else _json_types(value))
        return types

    def value_schemas(self, schema: Any, key: str) -> list[Any]:
        """The schemas of the value of ``key`` in a mapping at ``schema``'s place.

        Args:
            schema: the mapping's schema.
            key: the key.
        """
        found = []
        for branch in self.branches(schema):
            if key in branch.get("properties", {}):
                found.append(branch["properties"][key])
            elif isinstance(branch.get("additionalProperties"), Mapping):
                found.append(branch["additionalProperties"])
        return found

    def item_schemas(self, schema: Any) -> list[Any]:
        """The schemas of the items of a list at ``schema``'s place.

        Args:
            schema: the list's schema.
        """
        return [b["items"] for b in self.branches(schema) if isinstance(b.get("items"), Mapping)]

    def coerce(self, value: Any, schema: Any) -> Any:
        """``value`` with its strings parsed where ``schema`` wants another type.

        Args:
            value: a configuration value (a mapping, a list or a scalar).
            schema: its subschema.
        """
        if isinstance(value, Mapping):
            return {
                key: self._first_fit(item, self.value_schemas(schema, key))
                for key, item in value.items()
            }
        if isinstance(value, list):
            schemas = self.item_schemas(schema)
            return [self._first_fit(item, schemas) for item in value]
        valid = self.validator.evolve(schema=schema).is_valid
        if value is None and not valid(value) and valid(""):
            # `KEY=` with no value is Snakemake's None: here, the empty string (unset).
            return ""
        if not isinstance(value, str) or valid(value):
            return value
        parsed = _parse_scalar(value)
        if parsed is value:
            return value
        if valid(parsed):
            return parsed
        # A number of the wrong range: the validation error then names the range rather
        # than the type.
        types = self.declared_types(schema)
        return parsed if "string" not in types and _json_types(parsed) & types else value

    def _first_fit(self, value: Any, schemas: list[Any]) -> Any:
        """``value`` coerced by the first schema it then fits (by the first, if none).

        Args:
            value: a configuration value.
            schemas: the schemas it may have (one per branch that names it).
        """
        if not schemas:
            return value
        candidates = [self.coerce(value, schema) for schema in schemas]
        for candidate, schema in zip(candidates, schemas, strict=True):
            if self.validator.evolve(schema=schema).is_valid(candidate):
                return candidate
        return candidates[0]


def coerce_command_line_values(config: Mapping[str, Any]) -> dict:
    """Parse the strings of ``config`` where ``config.schema.yaml`` wants a number, an
    integer, a boolean or null; an empty value becomes an empty string.

    Snakemake's ``--config KEY=VALUE`` parses a top-level value as an int, a float or
    ``True``/``False``, but leaves as strings a list's items (``seeds=[0,1,2]``), a
    mapping's values (``split={folds: 3}``) and YAML's ``true``. Each such string is read
    as a YAML scalar where the schema declares another type and does not accept the
    string itself; what does not parse stays a string, for the validation to name. An
    empty value (``model_package=``, None) is the empty string where the schema wants a
    string, so that it unsets a path set in a configuration file.

    Args:
        config: the values given with ``--config`` (or any configuration mapping).

    Returns:
        A copy of ``config`` with those strings parsed.
    """
    schema = load_schema("config")
    return _SchemaWalker(schema).coerce(copy.deepcopy(dict(config)), schema)


#: Settings that are ``[low, high]`` pairs: JSON Schema checks each number, not their order.
ORDERED_PAIR_KEYS = (
    "preprocess.percentiles.raman",
    "preprocess.percentiles.transmission",
    "preprocess.percentiles.tpef",
    "preprocess.percentiles.shg",
    "preprocess.foreground_fraction",
    "hsrs.cells.wavenumber_range",
)


def _interpret_problems(config: Mapping[str, Any]) -> list[str]:
    """The ``interpret`` settings that name things the rest of the configuration lacks."""
    interpret = config.get("interpret")
    if not isinstance(interpret, Mapping):
        return []
    problems = []
    if interpret.get("target_pixel", "auto") != "auto" and interpret.get("sample") == "auto":
        problems.append(
            "interpret.target_pixel is given, so interpret.sample must name the sample it is in"
        )
    classes = (config.get("annotations") or {}).get("classes")
    ablation = interpret.get("ablation_class")
    if isinstance(classes, Mapping) and ablation is not None and ablation not in classes:
        problems.append(
            f"interpret.ablation_class {ablation!r} is not in annotations.classes {list(classes)}"
        )
    channels = config.get("channels")
    display = interpret.get("display_channel", "auto")
    if isinstance(channels, list) and display != "auto":
        names = [channel.get("name") for channel in channels if isinstance(channel, Mapping)]
        if display not in names:
            problems.append(f"interpret.display_channel {display!r} is not a channel: {names}")
    return problems


def _nnunet_prediction_problems(config: Mapping[str, Any]) -> list[str]:
    """Prediction folds (``nnunet.prediction.folds``, ``nnunet.fast_prediction.folds``)
    beyond the ``split.folds`` cross-validation folds that are trained."""
    nnunet, split = config.get("nnunet"), config.get("split")
    if not isinstance(nnunet, Mapping) or not isinstance(split, Mapping):
        return []
    count = split.get("folds", 5)
    problems = []
    for section in ("prediction", "fast_prediction"):
        folds = (nnunet.get(section) or {}).get("folds")
        beyond = [fold for fold in folds if fold >= count] if isinstance(folds, list) else []
        if beyond:
            problems.append(
                f"nnunet.{section}.folds lists folds {beyond}, but split.folds trains "
                f"{count} folds (0 to {count - 1})"
            )
    return problems


def check_config_semantics(config: Mapping[str, Any]) -> None:
    """Check what the schema cannot express: relations between values of a valid config.

    Each ``[low, high]`` pair of :data:`ORDERED_PAIR_KEYS` that is present must have
    ``low < high`` (with ``low >= high`` every preprocessing job would fail, after the dry
    run had passed); the ``interpret`` section must name a configured class and channel,
    and a target pixel only with its sample; nnU-Net's prediction folds must be trained
    ones (below ``split.folds``). Keys that are absent (a partial
    ``--settings``) are not checked.

    Args:
        config: a configuration that passed the schema.

    Raises:
        ConfigError: naming every offending key and its values.
    """
    problems = []
    for dotted_key in ORDERED_PAIR_KEYS:
        node: Any = config
        for part in dotted_key.split("."):
            node = node.get(part) if isinstance(node, Mapping) else None
        if isinstance(node, list | tuple) and len(node) == 2:
            low, high = node
            if not low < high:
                problems.append(f"  {dotted_key}: low {low:g} must be below high {high:g}")
    problems += [f"  {problem}" for problem in _interpret_problems(config)]
    problems += [f"  {problem}" for problem in _nnunet_prediction_problems(config)]
    if problems:
        raise ConfigError("invalid configuration:\n" + "\n".join(problems))


def merge_configs(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict:
    """Recursively merge ``override`` into ``base`` the way Snakemake merges configfiles."""
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_configs(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _load_yaml_file(path: Path) -> Any:
    """Parse a YAML (or JSON) file; any problem is a :class:`ConfigError` naming the file.

    Args:
        path: the file.

    Raises:
        ConfigError: the file is missing or unreadable, not UTF-8, or not valid YAML (the
            message gives the line and column of the error).
    """
    if not path.is_file():
        raise ConfigError(f"configuration file {str(path)!r} does not exist")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8-sig"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError(
            f"configuration file {str(path)!r} is not valid YAML{where}: {problem}. Fix: "
            "correct the syntax there (indent with spaces, quote values holding ': ' or '#')"
        ) from error
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(
            f"configuration file {str(path)!r} cannot be read ({error}). Fix: save it as UTF-8 text"
        ) from error


def load_config_files(paths: list[str | Path]) -> dict:
    """Load and merge YAML configuration files (later ones win), then validate.

    Args:
        paths: the files, in order.

    Raises:
        ConfigError: a file that is missing, not valid YAML (naming the line) or not a
            mapping, or a merged configuration the schema rejects.
    """
    config: dict = {}
    for path in paths:
        path = Path(path)
        loaded = _load_yaml_file(path) or {}
        if not isinstance(loaded, Mapping):
            raise ConfigError(f"configuration file {str(path)!r} must hold a mapping")
        config = merge_configs(config, loaded)
    return validate_config(config)


def parse_settings(text: str) -> dict:
    """Parse a ``--settings`` value: inline JSON, or ``@path`` to a JSON/YAML file.

    Raises:
        ConfigError: invalid JSON or YAML, a missing file, or settings the schema rejects.
    """
    if text.startswith("@"):
        settings = _load_yaml_file(Path(text[1:]))
    else:
        try:
            settings = json.loads(text)
        except json.JSONDecodeError as error:
            raise ConfigError(f"--settings is not valid JSON: {error}") from error
    if not isinstance(settings, Mapping):
        raise ConfigError("--settings must be a JSON object")
    return validate_config(settings, partial=True)


def require(config: Mapping[str, Any], dotted_key: str) -> Any:
    """Return ``config[a][b]...`` for ``"a.b..."`` or fail naming the missing key."""
    node: Any = config
    for part in dotted_key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise ConfigError(f"configuration key {dotted_key!r} is required here but missing")
        node = node[part]
    return node


# The accessors below are kept for the stages that still read the configuration dict
# (models, nnunet, interpret); each is a thin wrapper over the typed settings of
# ramanseg.settings, the one place that interprets these sections. The import is local:
# ramanseg.settings imports this module.


def channel_names(config: Mapping[str, Any]) -> list[str]:
    """The channel names, in file order (:attr:`ramanseg.settings.ChannelLayout.names`)."""
    from ramanseg.settings import ChannelLayout

    return ChannelLayout.from_config(config).names


def channel_roles(config: Mapping[str, Any]) -> list[str]:
    """The channel roles, in file order (:attr:`ramanseg.settings.ChannelLayout.roles`)."""
    from ramanseg.settings import ChannelLayout

    return ChannelLayout.from_config(config).roles


def raman_wavenumbers(config: Mapping[str, Any]) -> list[float]:
    """Wavenumbers (cm-1) of the Raman channels, in file order."""
    from ramanseg.settings import ChannelLayout

    return ChannelLayout.from_config(config).raman_wavenumbers


def class_names(config: Mapping[str, Any]) -> list[str]:
    """Annotation class names in class-map order (value 1 is the first, 0 = unannotated)."""
    from ramanseg.settings import AnnotationSettings

    return AnnotationSettings.from_config(config).class_names


def foreground_classes(config: Mapping[str, Any]) -> list[str]:
    """Annotation classes mapped to the foreground label."""
    from ramanseg.settings import AnnotationSettings

    return AnnotationSettings.from_config(config).foreground_classes


def display_channel_index(config: Mapping[str, Any], name: str = "auto") -> int:
    """The channel a figure shows (:meth:`ramanseg.settings.ChannelLayout.display_index`).

    Args:
        config: the configuration (``channels``).
        name: a channel name, or ``auto`` (the Raman band nearest 2930 cm-1).

    Raises:
        ConfigError: a name that is not a configured channel.
    """
    from ramanseg.settings import ChannelLayout

    return ChannelLayout.from_config(config).display_index(name)
