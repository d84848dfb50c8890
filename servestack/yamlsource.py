"""Read a YAML file safely and remember the line of every field, for error messages.

Refuses what a spec never needs and an attacker may send: binary files, anchors and aliases
(alias bombs are refused before anything is expanded), duplicate keys, and non-string keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import yaml

from servestack.errors import SpecError

Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
MAX_BYTES = 1_000_000
Path = tuple  # a field path: ("resources", "any_of", 0, "region")


@dataclass
class Document:
    data: object
    file: str
    lines: dict[tuple, int] = field(default_factory=dict)  # path -> 1-based line

    def line_of(self, path: tuple) -> int | None:
        """The line of `path`, or of its nearest ancestor the YAML has a line for."""
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return None

    def error(self, path: tuple, message: str) -> SpecError:
        return SpecError(message, file=self.file, field=format_path(path) or None,
                         line=self.line_of(path))


def format_path(path: tuple) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def load_document(raw: bytes, file: str) -> Document:
    text = _decode(raw, file)
    try:
        for event in yaml.parse(text, Loader=Loader):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                line = event.start_mark.line + 1 if event.start_mark else None
                raise SpecError("YAML anchors and aliases are not allowed in a spec "
                                "(refused, nothing expanded)", file=file, line=line)
        node = yaml.compose(text, Loader=Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = exc.problem or exc.context or "invalid YAML"
        raise SpecError(f"malformed YAML: {problem}", file=file, line=line) from None
    except yaml.YAMLError as exc:
        raise SpecError(f"malformed YAML: {exc}", file=file) from None
    if node is None:
        raise SpecError("the file is empty; a spec needs at least `resources:`", file=file)
    doc = Document(data=None, file=file)
    doc.data = _to_python(node, (), doc)
    return doc


def _decode(raw: bytes, file: str) -> str:
    if len(raw) > MAX_BYTES:
        raise SpecError(f"the file is {len(raw)} bytes; a spec is at most {MAX_BYTES}", file=file)
    if b"\x00" in raw:
        raise SpecError("this is a binary file, not a YAML spec", file=file)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SpecError(f"not UTF-8 text (byte {exc.start}); a spec is a YAML text file",
                        file=file) from None
    if not text.strip():
        raise SpecError("the file is empty; a spec needs at least `resources:`", file=file)
    return text


def _to_python(node: yaml.Node, path: tuple, doc: Document):
    doc.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out = {}
        for key_node, value_node in node.value:
            key = _scalar(key_node, path, doc)
            if not isinstance(key, str):
                key = str(key) if isinstance(key, int | float) and not isinstance(key, bool) \
                    else key
            if not isinstance(key, str):
                raise SpecError(f"keys must be strings, got {key!r}", file=doc.file,
                                field=format_path(path) or None, line=key_node.start_mark.line + 1)
            if key in out:
                raise SpecError(f"duplicate key {key!r}", file=doc.file,
                                field=format_path(path) or None, line=key_node.start_mark.line + 1)
            doc.lines[(*path, key)] = key_node.start_mark.line + 1
            out[key] = _to_python(value_node, (*path, key), doc)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(item, (*path, i), doc) for i, item in enumerate(node.value)]
    return _scalar(node, path, doc)


def _scalar(node: yaml.Node, path: tuple, doc: Document):
    if not isinstance(node, yaml.ScalarNode):
        raise SpecError("a mapping or list cannot be a key", file=doc.file,
                        field=format_path(path) or None, line=node.start_mark.line + 1)
    loader = Loader("")
    try:
        return loader.construct_object(node, deep=True)
    except yaml.constructor.ConstructorError as exc:
        raise SpecError(f"cannot read value: {exc.problem}", file=doc.file,
                        field=format_path(path) or None, line=node.start_mark.line + 1) from None
    finally:
        loader.dispose()
