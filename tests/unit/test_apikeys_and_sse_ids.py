"""The API-key record format and the SSE state ids (pure)."""

from __future__ import annotations

import pytest

from renderfarm.api import sse
from renderfarm.core.apikeys import (
    ALL_SCOPES,
    ApiKeyRecord,
    Scope,
    check_tenant,
    decode_record,
    encode_record,
    hash_key,
    new_api_key,
)


def test_a_record_round_trips_and_never_holds_the_key():
    key = new_api_key()
    record = ApiKeyRecord(tenant="media-team", scopes=frozenset({Scope.admin, Scope.jobs}))
    raw = encode_record(record)
    assert raw == '{"tenant":"media-team","scopes":["admin","jobs"]}'
    assert decode_record(raw) == record and key not in raw
    assert len(hash_key(key)) == 64 and hash_key(key) != key


def test_a_bare_tenant_from_before_scopes_reads_as_jobs_only():
    assert decode_record("media-team") == ApiKeyRecord(tenant="media-team", scopes=frozenset({Scope.jobs}))


@pytest.mark.parametrize("raw", [None, "", "{", '{"tenant":"a"}', '{"tenant":"a","scopes":["root"]}',
                                 '{"tenant":"a","scopes":[]}', '{"tenant":"a:b","scopes":["jobs"]}', "bad tenant"])
def test_an_unreadable_record_is_no_key_at_all(raw):
    assert decode_record(raw) is None


@pytest.mark.parametrize("name", ["a", "media-team", "Team_2.eu", "x" * 64])
def test_tenant_names_that_fit_in_key_names_are_accepted(name):
    assert check_tenant(name) == name


@pytest.mark.parametrize("name", ["", "-a", "a:b", "a b", "a*", "x" * 65, "ä"])
def test_tenant_names_that_would_break_key_names_are_refused(name):
    with pytest.raises(ValueError):
        check_tenant(name)


def test_scope_checks():
    jobs_only = ApiKeyRecord(tenant="t", scopes=frozenset({Scope.jobs}))
    assert jobs_only.allows(Scope.jobs) and not jobs_only.allows(Scope.admin)
    assert ApiKeyRecord(tenant="t", scopes=ALL_SCOPES).allows(Scope.admin)


def test_state_ids_name_the_state_not_the_moment():
    same = sse.state_id("running", 12.5, "transcode 240p", "rendition 1 of 2")
    assert same == sse.state_id("running", 12.50, "transcode 240p", "rendition 1 of 2")
    assert same != sse.state_id("running", 12.51, "transcode 240p", "rendition 1 of 2")
    assert same != sse.state_id("succeeded", 12.5, "transcode 240p", "rendition 1 of 2")
    assert sse.event("job", "{}", same) == f"id: {same}\nevent: job\ndata: {{}}\n\n"
    assert sse.comment("keep-alive") == ": keep-alive\n\n"
