"""The YAML layer: what is refused while parsing, with field and line, before anything nests."""

from __future__ import annotations

import pytest

from servestack.errors import SpecError
from servestack.yamlsource import MAX_DEPTH, MAX_NODES, format_path, load_document


def load(text: str):
    return load_document(text.encode(), "serve.yaml")


def refused(text: str) -> SpecError:
    with pytest.raises(SpecError) as info:
        load(text)
    return info.value


def test_fields_and_lines_are_recorded():
    doc = load("name: x\nresources:\n  any_of:\n    - cloud: aws\n    - {cloud: gcp}\n")
    assert doc.data == {"name": "x", "resources": {"any_of": [{"cloud": "aws"},
                                                             {"cloud": "gcp"}]}}
    assert doc.line_of(("resources", "any_of", 1, "cloud")) == 5
    assert doc.line_of(("resources", "any_of", 0, "region")) == 4  # nearest known ancestor


def test_dates_and_timestamps_stay_the_text_written():
    doc = load("labels:\n  release: 2020-01-01\n  at: 2001-12-14 21:59:43.10 -5\n"
               "  odd: 2020-13-45\n")
    assert doc.data == {"labels": {"release": "2020-01-01", "at": "2001-12-14 21:59:43.10 -5",
                                   "odd": "2020-13-45"}}


def test_numbers_booleans_and_null_keep_their_types():
    doc = load("a: 8000\nb: 0.5\nc: true\nd: null\ne: '8000'\n7: x\n")
    assert doc.data == {"a": 8000, "b": 0.5, "c": True, "d": None, "e": "8000", "7": "x"}


@pytest.mark.parametrize("text, field, line, words", [
    ("resources:\n  disk_size: !!binary aGVsbG8=\n", "resources.disk_size", 2,
     "binary values (!!binary) are not allowed"),
    ("resources:\n  accelerators: {A100: .inf}\n", "resources.accelerators.A100", 2,
     ".inf is not a finite number"),
    ("service:\n  readiness_probe:\n    timeout_seconds: .nan\n",
     "service.readiness_probe.timeout_seconds", 3, ".nan is not a finite number"),
    ("x: -.Inf\n", "x", 1, "numbers must be finite"),
    ("x: 1.0e+400\n", "x", 1, "not a finite number"),
    ("x: " + "9" * 5000 + "\n", "x", 1, "cannot read '999999999999999999999999...' as a number"),
    ("resources: !!set {a, b}\n", "resources", 1, "YAML tag 'tag:yaml.org,2002:set'"),
    ("x: !!omap [{a: 1}]\n", "x", 1, "is not allowed"),
    ("x: !custom value\n", "x", 1, "cannot read value"),
    ("x: !!python/name:os.system ''\n", "x", 1, "cannot read value"),
    ("a: 1\n---\nb: 2\n", None, 2, "one YAML document"),
    ("{[a]: 1}\n", None, 1, "a mapping or list cannot be a key"),
    ("true: 1\n", None, 1, "keys must be strings"),
    ("a: &x 1\nb: *x\n", None, 1, "anchors and aliases are not allowed"),
    ("resources:\n  <<: {cloud: aws}\n", "resources", 2, "merge keys (<<) are not allowed"),
])
def test_refused_values_name_field_and_line(text, field, line, words):
    err = refused(text)
    assert (err.field, err.line) == (field, line)
    assert words in err.message
    assert "\n" not in str(err)


@pytest.mark.parametrize("opening, closing", [("[", "]"), ("{a: ", "}"), ("- ", "")])
def test_nesting_is_refused_past_the_limit_before_it_is_built(opening, closing):
    deep = opening * 500 + "1" + closing * 500
    if opening == "- ":
        deep = "".join("  " * i + "-\n" for i in range(500)) + "  " * 500 + "1\n"
    err = refused("x: " + deep if opening != "- " else "x:\n" + deep)
    assert f"nested more than {MAX_DEPTH} levels deep" in err.message
    assert err.field is not None and len(err.field) < 40  # the start of the path, not all of it


def test_nesting_up_to_the_limit_is_read():
    text = "x: " + "[" * (MAX_DEPTH - 1) + "1" + "]" * (MAX_DEPTH - 1) + "\n"
    data = load(text).data
    for _ in range(MAX_DEPTH):
        data = data["x"] if isinstance(data, dict) else data[0]
    assert data == 1


def test_too_many_values_is_refused_while_parsing():
    text = "envs:\n" + "".join(f"  E{i}: x\n" for i in range(MAX_NODES))
    err = refused(text)
    assert f"more than {MAX_NODES} keys and values" in err.message
    assert err.line is not None and err.line < MAX_NODES


@pytest.mark.parametrize("text", ["", "   \n", "# only a comment\n", "---\n", "null\n"])
def test_empty_documents(text):
    with pytest.raises(SpecError, match="empty"):
        load_document(text.encode(), "serve.yaml")


def test_keys_with_newlines_or_spaces_are_quoted_so_errors_stay_one_line():
    # Found by the fuzz test: a key holding a newline broke the message over two lines.
    err = refused("? '\n\n  '\n: !!binary ''\n")
    assert err.field == "['\\n']"
    assert "\n" not in str(err)
    assert format_path(("labels", " a b", 0, "x")) == "labels[' a b'][0].x"
