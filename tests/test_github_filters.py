"""The github trigger's filters on real GitHub deliveries (tests/fixtures/github, see SOURCE.md)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from wfsched import SpecError
from wfsched.plugins import load_registry
from wfsched.spec import load_specs
from wfsched.triggers.github.config import validate_config
from wfsched.triggers.github.filters import Facts, Filters, PatternList, facts_of, glob_regex

FIXTURES = Path(__file__).parent / "fixtures" / "github"


@cache
def _load(name: str) -> str:
    return (FIXTURES / f"{name}.json").read_text()


def delivery(name: str) -> tuple[str, dict[str, Any]]:
    """(X-GitHub-Event, body) of a fixture; the event is the file name's first part."""
    return name.split(".")[0], json.loads(_load(name))


def facts(name: str) -> Facts:
    return facts_of(*delivery(name))


def matches(name: str, pr_files: list[str] | None = None, **config: Any) -> bool:
    return Filters.from_config(validate_config(config)).match(facts(name), pr_files)


# --- glob patterns -------------------------------------------------------------------------


@pytest.mark.parametrize(("pattern", "value", "expected"), [
    ("*.md", "README.md", True),
    ("*.md", "docs/README.md", False),  # * stays within one segment
    ("docs/**", "docs/a/b/c.md", True),
    ("**/*.md", "README.md", True),  # **/ also matches no directory
    ("**/*.md", "a/b/README.md", True),
    ("src/**/test_*.py", "src/test_a.py", True),
    ("src/**/test_*.py", "src/x/y/test_a.py", True),
    ("feature/*", "feature/login", True),
    ("feature/*", "feature/login/v2", False),
    ("v?.*", "v1.2", True),
    ("release-[0-9]*", "release-2", True),
    ("release-[!0-9]*", "release-2", False),
    ("Codertocat/*", "codertocat/Hello-World", False),  # case-sensitive
    ("a+b(c)", "a+b(c)", True),  # regex characters are literal
])  # fmt: skip
def test_it_matches_globs_like_github_actions_filters(
    pattern: str, value: str, expected: bool
) -> None:
    assert bool(glob_regex(pattern).fullmatch(value)) is expected


def test_it_lets_a_pattern_match_a_value_equal_to_it() -> None:
    bots = PatternList.parse(["dependabot[bot]"])
    assert bots.matches(["dependabot[bot]"])
    assert bots.matches(["dependabott"])  # and still a glob: [bot] is one of b, o, t
    assert not bots.matches(["dependabot", "dependabot[bot]x"])
    assert PatternList.parse(["!dependabot[bot]"]).matches(["octocat"])
    assert not PatternList.parse(["!dependabot[bot]"]).matches(["octocat", "dependabot[bot]"])


def test_it_includes_on_any_positive_and_excludes_on_any_negative() -> None:
    rule = PatternList.parse(["src/**", "!src/vendor/**"])
    assert rule.matches(["src/a.py", "README.md"])
    assert not rule.matches(["src/a.py", "src/vendor/x.py"])
    assert not rule.matches(["README.md"])
    assert not rule.matches([])
    only_negative = PatternList.parse(["!*.md"])
    assert only_negative.matches(["a.py"]) and only_negative.matches([])
    assert not only_negative.matches(["a.py", "b.md"])


# --- each filter kind on real deliveries ----------------------------------------------------


def test_it_filters_on_repository_globs_and_exclusions() -> None:
    assert matches("push.new-branch", repository="Codertocat/Hello-World")
    assert matches("push.new-branch", repository=["octo-org/*", "Codertocat/*"])
    assert not matches("push.branch-created", repository="Codertocat/*")
    assert matches("push.branch-created", repository=["*/*", "!Codertocat/*"])
    assert not matches("push.new-branch", repository=["*/*", "!Codertocat/*"])
    # installation deliveries name no repository: a positive pattern cannot match them
    assert not matches("installation.created", events="installation", repository="*/*")
    assert matches("installation.created", events="installation")


def test_it_filters_on_events_with_push_as_the_default() -> None:
    assert matches("push.new-branch")
    assert not matches("pull_request.opened")
    assert matches("pull_request.opened", events=["push", "pull_request"])
    assert matches("pull_request_review.submitted", events="pull_request*")
    assert not matches(
        "pull_request_review.submitted", events=["pull_request*", "!pull_request_review"]
    )


def test_it_filters_on_actions() -> None:
    assert matches("pull_request.opened", events="pull_request", actions=["opened", "reopened"])
    assert not matches("pull_request.synchronize", events="pull_request", actions="opened")
    assert not matches("pull_request.closed", events="pull_request", actions="!closed")
    assert matches("pull_request.labeled", events="pull_request", actions="!closed")
    assert matches("workflow_run.completed", events="workflow_run", actions="completed")
    # push has no action: a positive actions list never matches it
    assert not matches("push.new-branch", events=["push", "pull_request"], actions="opened")


def test_it_filters_push_refs_on_branches_and_tags() -> None:
    assert matches("push.new-branch", branches="master")
    assert matches("push.new-branch", branches="refs/heads/master")  # prefix normalised
    assert matches("push.branch-created", branches="feature-*")
    assert not matches("push.branch-created", branches=["*", "!feature-*"])
    # a tag ref never matches a branches-only filter, and a branch ref a tags-only one
    assert not matches("push.tag-deleted", branches="*")
    assert matches("push.tag-deleted", tags="simple-*")
    assert not matches("push.new-branch", tags="*")
    # with both set, either kind may match
    assert matches("push.tag-deleted", branches="main", tags="simple-tag")
    assert matches("push.new-branch", branches="master", tags="v*")
    assert not matches("push.tag-deleted", branches="main", tags="v*")


def test_it_takes_create_and_delete_refs_from_ref_and_ref_type() -> None:
    assert matches("create.branch", events="create", branches="feature-branch")
    assert not matches("create.branch", events="create", tags="*")
    assert matches("create", events="create", tags="simple-tag")
    assert not matches("create", events="create", branches="*")
    assert matches("delete", events="delete", tags=["*", "!v*"])


def test_it_takes_the_base_branch_of_pull_requests() -> None:
    # head "changes" → base "master": the base branch is what branches filter on
    assert matches("pull_request.opened", events="pull_request", branches="master")
    assert not matches("pull_request.opened", events="pull_request", branches="changes")
    assert not matches("pull_request.opened", events="pull_request", branches="!master")
    assert matches("pull_request_review.submitted", events="pull_request_review", branches="mas*")
    assert not matches("pull_request.opened", events="pull_request", tags="*")


def test_it_takes_head_branches_of_runs_and_tags_of_releases() -> None:
    assert matches("workflow_run.completed", events="workflow_run", branches="master")
    assert matches("check_suite.requested", events="check_suite", branches="master")
    assert matches("release.published", events="release", tags="0.0.*")
    assert not matches("release.published", events="release", branches="*")
    assert not matches("issues.opened", events="issues", branches="*")


def test_it_filters_push_paths_from_commits_and_head_commit() -> None:
    assert facts("push.new-branch").paths == ("README.md",)
    assert matches("push.new-branch", paths="*.md")
    assert not matches("push.new-branch", paths="src/**")
    assert not matches("push.new-branch", paths=["**", "!README.md"])
    # commits[] is empty here: the head commit's modified file is what counts
    assert facts("push.branch-created").paths == (".drone.yml",)
    assert matches("push.branch-created", paths=".drone.y*ml")
    # a deleted tag changes no file: a positive paths filter does not match
    assert not matches("push.tag-deleted", tags="*", paths="**")
    assert matches("push.tag-deleted", tags="*", paths="!docs/**")


def test_it_filters_pull_request_paths_on_the_files_the_api_lists() -> None:
    pr = facts("pull_request.synchronize")
    assert pr.paths is None and pr.pull_number == 2
    rule = Filters.from_config(
        validate_config({"events": "pull_request", "paths": ["docs/**", "!docs/drafts/**"]})
    )
    assert rule.wants_pull_files(pr)
    assert rule.match(pr, ["docs/guide.md", "src/app.py"])
    assert not rule.match(pr, ["src/app.py"])
    assert not rule.match(pr, ["docs/guide.md", "docs/drafts/x.md"])
    # without the API's answer the paths filter is not applied (the event says so)
    assert rule.match(pr, None)
    plain = Filters.from_config(validate_config({"events": "pull_request"}))
    assert not plain.wants_pull_files(pr)


def test_it_filters_on_authors_sender_pusher_and_commit_authors() -> None:
    assert facts("push.new-branch").authors == ("Codertocat",)
    assert facts("push.branch-created").authors == ("bradrydzewski",)
    assert matches("push.new-branch", authors="Codertocat")
    assert not matches("push.new-branch", authors="!Codertocat")
    assert matches("push.branch-created", authors=["*", "!Codertocat", "!dependabot[bot]"])
    assert matches("issue_comment.created", events="issue_comment", authors="Code*")
    assert not matches("pull_request.opened", events="pull_request", authors="octocat")


def test_it_filters_on_issue_and_pull_request_labels() -> None:
    assert facts("issues.labeled").labels == ("bug",)
    assert matches("issues.labeled", events="issues", labels="bug")
    assert not matches("issues.labeled", events="issues", labels="!bug")
    assert matches("pull_request.labeled", events="pull_request", labels=["bug", "security"])
    assert not matches("pull_request.labeled", events="pull_request", labels="enhancement")
    assert matches("issue_comment.created", events="issue_comment", labels="b?g")
    assert not matches("push.new-branch", labels="*")  # a push has no labels


def test_it_combines_every_filter_on_one_delivery() -> None:
    config = {
        "repository": "Codertocat/*",
        "events": "pull_request",
        "actions": "opened",
        "branches": "master",
        "authors": "Codertocat",
        "labels": "bug",
        "paths": "docs/**",
    }
    assert matches("pull_request.opened", ["docs/a.md"], **config)
    for key, value in [
        ("repository", "octo-org/*"),
        ("actions", "closed"),
        ("branches", "main"),
        ("authors", "!Codertocat"),
        ("labels", "!bug"),
        ("paths", "src/**"),
    ]:
        assert not matches("pull_request.opened", ["docs/a.md"], **{**config, key: value}), key


def test_it_reads_odd_shapes_without_failing() -> None:
    odd = facts_of(
        "push",
        {
            "ref": 7,
            "commits": "x",
            "head_commit": [],
            "sender": "me",
            "repository": {"full_name": None},
        },
    )
    assert odd == Facts(
        event="push",
        action=None,
        repository=None,
        ref_kind=None,
        ref_name=None,
        authors=(),
        labels=(),
        paths=(),
    )


# --- validation ----------------------------------------------------------------------------


def test_it_normalises_a_valid_config() -> None:
    assert validate_config({}) == {"events": ["push"], "fetch_context": False}
    out = validate_config(
        {
            "repository": "o/*",
            "branches": ["refs/heads/main", "!refs/heads/x"],
            "tags": "refs/tags/v*",
            "fetch_context": True,
        }
    )
    assert out == {
        "repository": ["o/*"],
        "events": ["push"],
        "branches": ["main", "!x"],
        "tags": ["v*"],
        "fetch_context": True,
    }


@pytest.mark.parametrize(("config", "field", "words"), [
    ({"event": "push"}, "event", "did you mean 'events'"),
    ({"events": "pull_requests"}, "events", "did you mean 'pull_request'"),
    ({"events": "ping"}, "events", "answered by wfsched"),
    ({"events": []}, "events", "at least one"),
    ({"repository": "Hello-World"}, "repository", "owner/name"),
    ({"branches": ["!"]}, "branches", "nothing after"),
    ({"paths": [1]}, "paths", "list of strings"),
    ({"fetch_context": "yes"}, "fetch_context", "true or false"),
])  # fmt: skip
def test_it_refuses_bad_configs_naming_the_field(
    config: dict[str, Any], field: str, words: str
) -> None:
    with pytest.raises(SpecError) as caught:
        validate_config(config)
    assert caught.value.field == field
    assert words in str(caught.value)


def test_the_example_try_it_delivery_matches_an_example_workflow() -> None:
    """examples/github/README.md's "Try it without GitHub" delivery fires incident-triage."""
    root = Path(__file__).resolve().parent.parent / "examples" / "github"
    body = json.loads((root / "try" / "issues.labeled.json").read_text())
    facts = facts_of("issues", body)
    matched = [
        spec.id
        for spec in load_specs([root / "workflows"], load_registry(None))
        for trigger in spec.triggers
        if Filters.from_config(trigger.config).match(facts)
    ]
    assert matched == ["incident-triage"]
