"""Tests of the drop-in ``file`` trigger, through the public API and a real daemon."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest

PLUGINS = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PLUGINS))

from file_trigger import FileTrigger, scan

from tests.daemon_proc import Daemon, wait_for
from wfsched import SpecError


def test_it_validates_fields_and_names_the_bad_one() -> None:
    assert FileTrigger.validate({"directory": "/tmp"})["pattern"] == "*"
    with pytest.raises(SpecError) as err:
        FileTrigger.validate({"directory": "/tmp", "patern": "*.csv"})
    assert err.value.field == "patern" and "pattern" in err.value.message
    with pytest.raises(SpecError) as err:
        FileTrigger.validate({})
    assert err.value.field == "directory"
    with pytest.raises(SpecError) as err:
        FileTrigger.validate({"directory": "/tmp", "pattern": "../*"})
    assert err.value.field == "pattern"


def test_scan_hashes_new_and_changed_files_only(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("1")
    (tmp_path / "b.txt").write_text("x")
    first = scan(tmp_path, "*.csv", {})
    assert list(first) == [str(tmp_path / "a.csv")]
    assert first[str(tmp_path / "a.csv")][2] == hashlib.sha256(b"1").hexdigest()
    assert scan(tmp_path, "*.csv", first) == first
    (tmp_path / "a.csv").write_text("22")
    assert scan(tmp_path, "*.csv", first)[str(tmp_path / "a.csv")][1] == 2


@pytest.mark.slow
def test_it_fires_from_a_deployed_spec_when_a_file_appears_or_changes(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "old.csv").write_text("already here")
    spec = tmp_path / "files.toml"
    spec.write_text(
        f'id = "files"\n[[triggers]]\ntype = "file"\ndirectory = "{inbox}"\n'
        'pattern = "*.csv"\ninterval = 0.1\n'
    )
    with Daemon(tmp_path / "d", env={"WFSCHED_PLUGINS_DIR": str(PLUGINS)}) as d:
        assert {
            "kind": "trigger",
            "type": "file",
            "source": "plugins-dir",
            "module": str(PLUGINS / "file_trigger.py"),
        } in d.cli_json("plugins")
        d.cli("deploy", str(spec))
        wait_for(
            lambda: (
                d.cli_json("status", "files")["triggers"][0]["health"] == "healthy"
                and d.get("/health").json()["triggers"]
            ),
            message="trigger running",
        )
        new = inbox / "new.csv"
        new.write_text("a,b\n1,2\n")

        def events() -> list[dict[str, object]]:
            return list(d.cli_json("history", "files"))

        [event] = wait_for(events, message="file event")
        payload = event["payload"]
        assert isinstance(payload, dict)
        assert payload["path"] == str(new)
        assert payload["size"] == 8
        assert payload["sha256"] == hashlib.sha256(b"a,b\n1,2\n").hexdigest()
        new.write_text("changed")
        wait_for(lambda: len(events()) == 2, message="change event")
        wait_for(lambda: all(e["status"] == "dispatched" for e in events()), message="dispatch")
        assert all(e["payload"]["path"] != str(inbox / "old.csv") for e in events())  # type: ignore[index]
