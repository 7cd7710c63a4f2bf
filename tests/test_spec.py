"""Spec files: TOML and JSON, defaults, validation errors naming file, trigger and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from wfsched.errors import SpecError
from wfsched.plugins import load_registry
from wfsched.spec import InvalidSpecs, load_specs, parse_spec, spec_hash

REGISTRY = load_registry(None)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_it_reads_toml_and_json_with_defaults(tmp_path: Path) -> None:
    write(
        tmp_path / "a.toml",
        'id = "a"\n[[triggers]]\ntype = "manual"\n[[triggers]]\n'
        'type = "manual"\nenabled = false\npayload = {k = 1}\n',
    )
    write(
        tmp_path / "b.json",
        json.dumps({"id": "b", "name": "B", "triggers": [{"type": "manual", "id": "go"}]}),
    )
    a, b = load_specs([tmp_path], REGISTRY)
    assert [t.id for t in a.triggers] == ["manual", "manual-2"]
    assert a.triggers[0].config == {"require_confirmation": True}
    assert (a.triggers[1].enabled, a.triggers[1].payload) == (False, {"k": 1})
    assert a.name == "a" and b.name == "B" and b.triggers[0].id == "go"


def test_the_hash_ignores_key_order_but_not_values() -> None:
    assert spec_hash({"id": "a", "name": "x"}) == spec_hash({"name": "x", "id": "a"})
    assert spec_hash({"id": "a"}) != spec_hash({"id": "b"})


@pytest.mark.parametrize(
    ("text", "trigger", "field", "needle"),
    [
        ('id = "a"\n[[triggers]]\ntype = "nope"\n', "#1", "type", "unknown trigger type"),
        (
            'id = "a"\n[[triggers]]\ntype = "manual"\nrequire_confirmaton = true\n',
            "#1",
            "require_confirmaton",
            "did you mean 'require_confirmation'",
        ),
        ('id = "a"\n[[triggers]]\nid = "m"\n', "m", "type", "required"),
        ('name = "x"\n', None, "id", "required"),
        ('id = "bad id!"\n', None, "id", "A-Z"),
        ('id = "a"\ntrigers = []\n', None, "trigers", "did you mean 'triggers'"),
        (
            'id = "a"\n[[triggers]]\ntype = "manual"\nid = "x"\n[[triggers]]\ntype = "manual"\nid = "x"\n',
            "x",
            "id",
            "duplicate",
        ),
        ('id = "a"\n[[triggers]]\ntype = "manual"\nenabled = "yes"\n', "#1", "enabled", "true or"),
    ],
)
def test_invalid_specs_name_file_trigger_and_field(
    tmp_path: Path, text: str, trigger: str | None, field: str, needle: str
) -> None:
    path = write(tmp_path / "w.toml", text)
    with pytest.raises(InvalidSpecs) as err:
        load_specs([path], REGISTRY)
    [error] = err.value.errors
    assert error.source == str(path)
    assert error.trigger == (None if trigger is None else trigger)
    assert error.field == field
    assert needle in str(error)


def test_bad_syntax_names_the_file(tmp_path: Path) -> None:
    bad_toml = write(tmp_path / "x.toml", "id = \n")
    bad_json = write(tmp_path / "y.json", "{nope")
    with pytest.raises(InvalidSpecs) as err:
        load_specs([tmp_path], REGISTRY)
    messages = [str(e) for e in err.value.errors]
    assert any(str(bad_toml) in m and "invalid TOML" in m for m in messages)
    assert any(str(bad_json) in m and "invalid JSON" in m for m in messages)


def test_one_bad_file_fails_the_whole_set_and_duplicate_ids_are_refused(tmp_path: Path) -> None:
    write(tmp_path / "a.toml", 'id = "same"\n')
    write(tmp_path / "b.toml", 'id = "same"\n')
    with pytest.raises(InvalidSpecs, match="also defined"):
        load_specs([tmp_path], REGISTRY)


def test_nulls_are_refused_with_the_field() -> None:
    with pytest.raises(Exception, match="null"):
        parse_spec({"id": "a", "name": None}, REGISTRY)


def test_every_trigger_error_of_every_file_is_reported(tmp_path: Path) -> None:
    write(
        tmp_path / "a.toml",
        'id = "a"\n[[triggers]]\ntype = "cron"\nid = "one"\ncron = "99 * * * *"\n'
        '[[triggers]]\ntype = "cron"\nid = "two"\nevery = "soon"\n',
    )
    write(tmp_path / "b.toml", 'id = "b"\n[[triggers]]\ntype = "nope"\n')
    with pytest.raises(InvalidSpecs) as caught:
        load_specs([tmp_path], REGISTRY)
    located = [(e.source, e.trigger) for e in caught.value.errors]
    assert located == [
        (str(tmp_path / "a.toml"), "one"),
        (str(tmp_path / "a.toml"), "two"),
        (str(tmp_path / "b.toml"), "#1"),
    ]


def test_a_lone_surrogate_is_refused_naming_the_field(tmp_path: Path) -> None:
    spec = write(
        tmp_path / "s.json",
        '{"id": "s", "name": "bad \\ud800", "triggers": [{"type": "manual", '
        '"payload": {"k\\udfff": 1}}]}',
    )
    with pytest.raises(InvalidSpecs, match="field 'name': contains a lone surrogate"):
        load_specs([spec], REGISTRY)
    with pytest.raises(
        SpecError, match=r"field 'triggers\[0\].payload': contains a lone surrogate"
    ):
        parse_spec(
            {"id": "s", "triggers": [{"type": "manual", "payload": {"k\udfff": 1}}]}, REGISTRY
        )
