"""Config files read strictly, and values checked before the schema sees them.

Every problem names the file and, where there is one, the line: bytes that are not UTF-8, YAML
syntax, tags the safe loader refuses or cannot build, keys given twice in one mapping (YAML loaders
keep the last silently), and aliases that expand past a bound (a few hundred bytes of nested anchors
stand for billions of values, and every later walk of the config would pay for all of them).
Numbers that are not finite are refused by key: JSON-schema bounds are false for NaN, so `.nan`
passes every `minimum` and `.inf` every key without a `maximum`. Values given with `--config`
are typed by the schema (Snakemake leaves nested ones strings).
"""

import math
from pathlib import Path

import yaml


class ConfigError(ValueError):
    pass


# values (scalars, lists, mappings) a config file may stand for once its aliases are expanded:
# the shipped config/config.yaml is about 1,500; a bomb is many orders of magnitude more
MAX_VALUES = 200_000


def _where(path, mark):
    return f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)


def _expanded_size(node, path, sizes, open_nodes):
    """How many values `node` stands for with its aliases expanded, each distinct node counted once
    (so the walk is as long as the file, not as its expansion); ConfigError past MAX_VALUES or for
    an alias inside the node it names."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_nodes:
        raise ConfigError(f"invalid config {_where(path, node.start_mark)}: an alias refers to the value that contains it (a recursive value)")
    open_nodes.add(key)
    if isinstance(node, yaml.MappingNode):
        children = [n for pair in node.value for n in pair]
    elif isinstance(node, yaml.SequenceNode):
        children = node.value
    else:
        children = []
    total = 1
    for child in children:
        total += _expanded_size(child, path, sizes, open_nodes)
        if total > MAX_VALUES:
            raise ConfigError(f"invalid config {_where(path, node.start_mark)}: its aliases expand to more than {MAX_VALUES:,} values "
                              f"(a config needs far fewer; nested anchors that repeat each other look like this)")
    open_nodes.discard(key)
    sizes[key] = total
    return total


def _duplicate_keys(node, path=(), seen_nodes=None):
    """(dotted key, line, first line) of each key given twice in one mapping; a node an alias
    repeats is checked once, where it is first met."""
    seen_nodes = set() if seen_nodes is None else seen_nodes
    if id(node) in seen_nodes:
        return
    seen_nodes.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen = {}
        for key_node, value in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.start_mark)
            if key in seen:
                yield ".".join([*path, key]), key_node.start_mark.line + 1, seen[key]
            else:
                seen[key] = key_node.start_mark.line + 1
            yield from _duplicate_keys(value, (*path, key), seen_nodes)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yield from _duplicate_keys(item, (*path, str(i)), seen_nodes)


def _scalars(node, seen=None):
    seen = set() if seen is None else seen
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.ScalarNode):
        yield node
    elif isinstance(node, yaml.MappingNode):
        for pair in node.value:
            for n in pair:
                yield from _scalars(n, seen)
    elif isinstance(node, yaml.SequenceNode):
        for n in node.value:
            yield from _scalars(n, seen)


def _unbuildable(node, path, error):
    """ConfigError for a document whose construction raised `error` outside PyYAML's own marked
    errors (`!!int abc` raises a bare ValueError): the line of the first scalar that fails alone."""
    for scalar in _scalars(node):
        try:
            yaml.SafeLoader("").construct_object(scalar, deep=True)
        except (ValueError, TypeError, yaml.YAMLError) as e:
            return ConfigError(f"invalid config {_where(path, scalar.start_mark)}: cannot read {scalar.tag} value {scalar.value!r}: {e}")
    return ConfigError(f"invalid config {path}: cannot read a value: {type(error).__name__}: {error}")


def _decoded(path):
    raw = Path(path).read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise ConfigError(f"invalid config {path}:{line}: not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start})") from None


def read_yaml(path):
    """The content of a YAML file; ConfigError naming file and line for anything that keeps it
    from being a plain config (see the module's docstring)."""
    text = _decoded(path)
    loader = None
    try:
        loader = yaml.SafeLoader(text)  # reads (and checks) the characters at once
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, path, {}, set())
        dupes = list(_duplicate_keys(node))
        if dupes:
            lines = "\n".join(f"  - {path}:{line}: duplicate key {key!r} (first given at line {first})" for key, line, first in dupes)
            raise ConfigError(f"invalid config {path}:\n{lines}")
        try:
            return loader.construct_document(node)
        except (ValueError, TypeError) as e:
            raise _unbuildable(node, path, e) from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        raise ConfigError(f"invalid config {_where(path, mark)}: not YAML: {e.problem or e.context}") from None
    except yaml.reader.ReaderError as e:
        line = text[:e.position].count("\n") + 1
        raise ConfigError(f"invalid config {path}:{line}: not YAML: character U+{ord(e.character) if isinstance(e.character, str) else e.character:04X} is not allowed (offset {e.position})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"invalid config {path}: not YAML: {e}") from None
    except RecursionError:
        raise ConfigError(f"invalid config {path}: values nested too deeply to read") from None
    finally:
        if loader is not None:
            loader.dispose()


def check_yaml_files(paths):
    """Read each existing config file strictly. Called by the Snakefile before Snakemake reads
    config/config.yaml, whose own message for a syntax error names neither file nor line."""
    for path in paths:
        if Path(path).is_file():
            read_yaml(path)


def non_finite(config, path=()):
    """(dotted key, value) of every NaN or infinite number in a loaded config."""
    if isinstance(config, dict):
        for key, value in config.items():
            yield from non_finite(value, (*path, str(key)))
    elif isinstance(config, list):
        for i, value in enumerate(config):
            yield from non_finite(value, (*path, str(i)))
    elif isinstance(config, float) and not math.isfinite(config):
        yield ".".join(path) or "<top level>", config


# --- values given with --config ---


def _branches(schema, root):
    """`schema` and the subschemas that apply with it ($ref followed, if/then/else and *Of branches)."""
    if not isinstance(schema, dict):
        return []
    if "$ref" in schema:
        node = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            node = node[part]
        return _branches(node, root)
    found = [schema]
    for key in ("then", "else"):
        found += _branches(schema.get(key), root)
    for key in ("allOf", "anyOf", "oneOf"):
        for sub in schema.get(key, []):
            found += _branches(sub, root)
    return found


def _schema_types(schemas):
    types = set()
    for s in schemas:
        t = s.get("type")
        types.update([t] if isinstance(t, str) else t or [])
    return types


def _typed(value, schemas, root):
    """`value` with the strings the schema wants as numbers, booleans or null read as YAML scalars."""
    if isinstance(value, dict):
        out = {}
        for key, sub in value.items():
            subs = []
            for s in schemas:
                if key in s.get("properties", {}):
                    subs += _branches(s["properties"][key], root)
                elif isinstance(s.get("additionalProperties"), dict):
                    subs += _branches(s["additionalProperties"], root)
            out[key] = _typed(sub, subs, root)
        return out
    if isinstance(value, list):
        items = [b for s in schemas for b in _branches(s.get("items"), root)]
        return [_typed(v, items, root) for v in value]
    types = _schema_types(schemas)
    if not isinstance(value, str) or not types or "string" in types:
        return value
    try:
        scalar = yaml.safe_load(value)
    except yaml.YAMLError:
        return value
    if "number" in types and isinstance(scalar, str):
        try:
            scalar = float(value)
        except ValueError:
            return value
    wanted = {"integer": int, "number": (int, float), "boolean": bool, "null": type(None)}
    if any(isinstance(scalar, wanted[t]) and not (t != "boolean" and isinstance(scalar, bool)) for t in types if t in wanted):
        return scalar
    return value


def typed_by_schema(command_line, schema):
    """The command line's --config values with their nested strings typed by the schema: Snakemake 9
    reads a nested value (`--config 'models={tiny: {base: {steps: 5}}}'`) with YAML's base loader,
    which leaves every scalar a string. Strings the schema does not want as something else stay."""
    return _typed(command_line, _branches(schema, schema), schema)
