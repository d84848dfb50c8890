"""Read a YAML file safely and remember the line of every field, for error messages.

The document is built in one pass over the parser's events, without composing a node tree and
without recursion, so every refusal happens before anything is expanded or nested further.
Refused: binary files and `!!binary` values, anchors and aliases (alias bombs are never
expanded), duplicate keys, non-string keys, tags other than plain mappings, lists and values,
non-finite numbers (`.inf`, `.nan`), nesting deeper than MAX_DEPTH and more than MAX_NODES
keys and values. YAML 1.1 dates and
timestamps (`2020-01-01`) are kept as the text written: SkyPilot users mean text there, and a
date where a number is wanted then fails validation with a clear message.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import yaml

from servestack.errors import SpecError

Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
MAX_BYTES = 1_000_000
# The deepest a spec needs is 5 (resources.any_of[0].accelerators.A100); a probe's post_data
# body rarely nests beyond a few levels. 32 leaves room and keeps every later step shallow.
MAX_DEPTH = 32
# Keys, values, lists and mappings in one spec. A real one has a few hundred; refusing here,
# while parsing, keeps a 1 MB file of tiny items from costing seconds to read and validate.
MAX_NODES = 20_000
Path = tuple  # a field path: ("resources", "any_of", 0, "region")

TAG = "tag:yaml.org,2002:"
COLLECTION_TAGS = (None, "!", TAG + "map", TAG + "seq")
PLAIN_TYPES = (str, int, float, bool, type(None))


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
    """`resources.any_of[0].cloud`; a key with spaces, newlines or controls is quoted, so an
    error message stays one line."""
    out = ""
    for part in path:
        if isinstance(part, int) or not _plain(part):
            out += f"[{part!r}]"
        else:
            out += f".{part}" if out else part
    return out


def _plain(text: str) -> bool:
    return bool(text) and text.isprintable() and text.strip() == text


def load_document(raw: bytes, file: str) -> Document:
    text = _decode(raw, file)
    doc = Document(data=None, file=file)
    loader = Loader(text)
    try:
        doc.data = _Builder(loader, doc).build()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = exc.problem or exc.context or "invalid YAML"
        raise SpecError(f"malformed YAML: {problem}", file=file, line=line) from None
    except yaml.YAMLError as exc:
        raise SpecError(f"malformed YAML: {exc}", file=file) from None
    finally:
        loader.dispose()
    if doc.data is None:
        raise SpecError("the file is empty; a spec needs at least `resources:`", file=file)
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


_NO_KEY = object()


@dataclass
class _Open:
    """A mapping or list being filled; for a mapping, the key waiting for its value."""

    path: tuple
    value: dict | list
    key: object = _NO_KEY


class _Builder:
    def __init__(self, loader, doc: Document) -> None:
        self.loader = loader
        self.doc = doc
        self.open: list[_Open] = []
        self.documents = 0
        self.root: object = None
        self.nodes = 0

    def build(self) -> object:
        while self.loader.check_event():
            event = self.loader.get_event()
            if isinstance(event, yaml.DocumentStartEvent):
                self.documents += 1
                if self.documents > 1:
                    raise self._error((), event, "a spec is one YAML document; found a second "
                                      "(---)")
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                self.open.pop()
            elif isinstance(event, yaml.NodeEvent):
                self._node(event)
        return self.root

    def _node(self, event) -> None:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise self._error((), event, f"more than {MAX_NODES} keys and values; a spec holds "
                              f"at most {MAX_NODES}")
        if isinstance(event, yaml.AliasEvent) or event.anchor is not None:
            raise SpecError("YAML anchors and aliases are not allowed in a spec "
                            "(refused, nothing expanded)", file=self.doc.file,
                            line=_line(event))
        parent = self.open[-1] if self.open else None
        if parent is not None and isinstance(parent.value, dict) and parent.key is _NO_KEY:
            self._key(parent, event)
            return
        path = self._child_path(parent)
        self.doc.lines.setdefault(path, _line(event))
        if isinstance(event, yaml.ScalarEvent):
            self._attach(parent, self._scalar(event, path))
            return
        if event.tag not in COLLECTION_TAGS:
            raise self._error(path, event, f"YAML tag {event.tag!r} is not allowed; a spec "
                              "holds plain mappings, lists and values")
        if len(self.open) >= MAX_DEPTH:
            raise self._error(path[:3], event, f"nested more than {MAX_DEPTH} levels deep; a "
                              f"spec nests at most {MAX_DEPTH}")
        container: dict | list = {} if isinstance(event, yaml.MappingStartEvent) else []
        self._attach(parent, container)
        self.open.append(_Open(path, container))

    def _child_path(self, parent: _Open | None) -> tuple:
        if parent is None:
            return ()
        if isinstance(parent.value, dict):
            return (*parent.path, parent.key)
        return (*parent.path, len(parent.value))

    def _attach(self, parent: _Open | None, value: object) -> None:
        if parent is None:
            self.root = value
            return
        if isinstance(parent.value, dict):
            parent.value[parent.key] = value
            parent.key = _NO_KEY
        else:
            parent.value.append(value)

    def _key(self, parent: _Open, event) -> None:
        where = parent.path
        if not isinstance(event, yaml.ScalarEvent):
            raise self._error(where, event, "a mapping or list cannot be a key")
        key = self._scalar(event, where)
        if isinstance(key, int | float) and not isinstance(key, bool):
            key = str(key)
        if not isinstance(key, str):
            raise self._error(where, event, f"keys must be strings, got {key!r}")
        if key in parent.value:
            raise self._error(where, event, f"duplicate key {key!r}")
        self.doc.lines[(*where, key)] = _line(event)
        parent.key = key

    def _scalar(self, event, path: tuple) -> object:
        tag = event.tag
        if tag in (None, "!"):
            tag = self.loader.resolve(yaml.ScalarNode, event.value, event.implicit)
        if tag in (TAG + "str", TAG + "timestamp"):
            return event.value
        if tag == TAG + "binary":
            raise self._error(path, event, "binary values (!!binary) are not allowed; "
                              "write the value as text")
        if tag == TAG + "merge":
            raise self._error(path, event, "merge keys (<<) are not allowed; write the keys "
                              "out")
        node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, event.style)
        try:
            value = self.loader.construct_object(node)
        except yaml.constructor.ConstructorError as exc:
            raise self._error(path, event, f"cannot read value: {exc.problem}") from None
        except (ValueError, OverflowError):  # e.g. an integer of more than 4300 digits
            raise self._error(path, event, f"cannot read {_clip(event.value)} as a number; "
                              "numbers have at most a few digits") from None
        finally:
            self.loader.constructed_objects.clear()
        if isinstance(value, float) and not math.isfinite(value):
            raise self._error(path, event, f"{_clip(event.value)} is not a finite number; "
                              "numbers must be finite (no .inf or .nan)")
        if not isinstance(value, PLAIN_TYPES):
            raise self._error(path, event, f"YAML tag {tag!r} is not allowed; a spec holds "
                              "plain mappings, lists and values")
        return value

    def _error(self, path: tuple, event, message: str) -> SpecError:
        return SpecError(message, file=self.doc.file, field=format_path(path) or None,
                         line=_line(event))


def _line(event) -> int:
    """The 1-based line an event starts on (0: unknown, which messages leave out)."""
    return event.start_mark.line + 1 if event.start_mark else 0


def _clip(text: str, limit: int = 24) -> str:
    """Scalar text for a message: as written if short and plain, else quoted and cut."""
    if len(text) <= limit:
        return text if _plain(text) else repr(text)
    return repr(text[:limit] + "...")
