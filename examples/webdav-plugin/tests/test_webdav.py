"""The WebDAV backend: its resolver half (pure) and its step half against a live WsgiDAV."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from wrapresolver.backends.reclaim import STATE, reclaim_run, stored_items
from wrapresolver.backends.registry import backend_for_scheme, get_backend
from wrapresolver.core.refs import producer_ref
from wrapresolver.errors import AuthError, DiskFullError, NetworkError, NotFoundError, ParamError, TransferError
from wrapresolver.steps import engine
from wrapresolver.testing.conformance import BackendConformance, ConformanceTarget, Unusable
from wrapresolver_webdav import (
    BACKEND,
    PASSWORD_ENV,
    USERNAME_ENV,
    Credentials,
    WebdavStore,
    WebdavTarget,
    parse_target,
)
from wrapresolver_webdav.listing import Entry, parse_multistatus

if TYPE_CHECKING:
    from conftest import DavServer

MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def store_for(server: DavServer, target: str | None = None, password: str | None = None) -> WebdavStore:
    credentials = Credentials(server.username, server.password if password is None else password)
    return WebdavStore(parse_target(target or server.fresh_target()), credentials)


# ---- targets and options (resolver half) ----

def test_the_entry_point_makes_the_backend_findable_by_name_and_by_scheme() -> None:
    assert get_backend("webdav") is BACKEND
    assert backend_for_scheme("webdav") is BACKEND
    assert backend_for_scheme("webdav+http") is BACKEND


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("webdav://dav.example.com/ci/src", WebdavTarget("https", "dav.example.com", ("ci", "src"))),
        ("webdav+http://dav.ci.svc:8080/a/", WebdavTarget("http", "dav.ci.svc:8080", ("a",))),
        ("webdav://[::1]:8443/x", WebdavTarget("https", "[::1]:8443", ("x",))),
        ("webdav://host", WebdavTarget("https", "host", ())),
    ],
)
def test_targets_split_into_origin_and_path_segments(target: str, expected: WebdavTarget) -> None:
    assert parse_target(target) == expected


def test_placeholders_in_the_path_are_accepted_at_resolution_time() -> None:
    BACKEND.validate_target("webdav://dav.example.com/runs/$(context.pipelineRun.name)/src")
    BACKEND.validate_target("webdav+http://$(params.dav-host):8080/runs/$(params.id)")


def test_path_segments_are_percent_encoded_in_urls() -> None:
    target = parse_target("webdav://h/team a/ünï")
    assert target.url("refs", "latest") == "https://h/team%20a/%C3%BCn%C3%AF/refs/latest"
    assert target.url("blobs", collection=True).endswith("/blobs/")


@pytest.mark.parametrize(
    "target",
    [
        "s3://bucket/prefix",
        "webdavs://host/path",
        "webdav:///no-host",
        "webdav://user:pw@host/path",
        "webdav://host/a/../b",
        "webdav://host/a//b",
        "webdav://host/a?x=1",
        "webdav://host/a#frag",
        "webdav://host:99999/a",
        "webdav://ho_st/a",
    ],
)
def test_malformed_targets_are_param_errors(target: str) -> None:
    with pytest.raises(ParamError):
        BACKEND.validate_target(target)


def test_credentials_in_the_url_are_refused_pointing_at_the_secret_param() -> None:
    with pytest.raises(ParamError, match="credentials-secret") as info:
        BACKEND.validate_target("webdav://ci:hunter2@host/path")
    assert "hunter2" in str(info.value)  # the author's own text is echoed, so they find it


def test_known_options_are_accepted_and_unknown_ones_are_named() -> None:
    assert BACKEND.validate_options({"credentials-secret": "dav-creds", "compression": "gzip"}) == {
        "credentials-secret": "dav-creds", "compression": "gzip",
    }
    BACKEND.validate_options({"credentials-secret": "$(params.secret)"})
    with pytest.raises(ParamError, match="endpoint"):
        BACKEND.validate_options({"endpoint": "https://x"})


@pytest.mark.parametrize("options", [{"compression": "lz4"}, {"credentials-secret": "Not_A_Name"}])
def test_bad_option_values_are_param_errors(options: dict[str, str]) -> None:
    with pytest.raises(ParamError):
        BACKEND.validate_options(options)


def test_step_requirements_reference_the_secret_and_hold_no_secret_values() -> None:
    reqs = BACKEND.step_requirements({"credentials-secret": "dav-creds"})
    assert reqs.env == (
        {"name": USERNAME_ENV, "valueFrom": {"secretKeyRef": {"name": "dav-creds", "key": "username"}}},
        {"name": PASSWORD_ENV, "valueFrom": {"secretKeyRef": {"name": "dav-creds", "key": "password"}}},
    )
    assert all("value" not in var for var in reqs.env)
    assert not reqs.volumes and not reqs.volume_mounts and not reqs.args


def test_without_a_secret_the_steps_need_nothing() -> None:
    reqs = BACKEND.step_requirements({})
    assert not reqs.env and not reqs.volumes and not reqs.volume_mounts and not reqs.args


def test_the_password_never_shows_in_a_repr() -> None:
    assert "s3cret" not in repr(Credentials("ci", "s3cret"))


# ---- the step half against a live server ----

class TestWebdavConformance(BackendConformance):
    @pytest.fixture
    def conformance_target(self, dav_server: DavServer) -> ConformanceTarget:
        return ConformanceTarget(
            backend="webdav",
            new_target=dav_server.fresh_target,
            options={"credentials-secret": "dav-creds"},
            env={USERNAME_ENV: dav_server.username, PASSWORD_ENV: dav_server.password},
            unreachable=lambda netloc: Unusable(f"webdav+http://{netloc}/ci/src"),
            denied=lambda: Unusable(dav_server.fresh_target(), env={PASSWORD_ENV: "not-the-password"}),
        )


def test_a_blob_lands_under_its_digest_and_leaves_no_upload_behind(dav_server: DavServer) -> None:
    target = dav_server.fresh_target()
    data = b"layer bytes " * 100_000
    with store_for(dav_server, target) as store:
        desc = store.put_blob(io.BytesIO(data), "application/octet-stream")
        assert desc.digest == "sha256:" + hashlib.sha256(data).hexdigest()
        assert desc.size == len(data)
        assert store.blob_exists(desc.digest)
        assert b"".join(store.open_blob(desc.digest)) == data
    root = dav_server.root.joinpath(*parse_target(target).segments)
    assert (root / "blobs" / "sha256" / desc.digest.split(":")[1]).read_bytes() == data
    assert list((root / "uploads").iterdir()) == []


def test_storing_the_same_blob_twice_keeps_one_copy_and_no_upload(dav_server: DavServer) -> None:
    target = dav_server.fresh_target()
    with store_for(dav_server, target) as store:
        first = store.put_blob(io.BytesIO(b"same"), "application/octet-stream")
        second = store.put_blob(io.BytesIO(b"same"), "application/octet-stream")
    assert first == second
    root = dav_server.root.joinpath(*parse_target(target).segments)
    assert len(list((root / "blobs" / "sha256").iterdir())) == 1
    assert list((root / "uploads").iterdir()) == []


def test_a_reference_is_replaced_whole_and_leaves_no_staging_file(dav_server: DavServer) -> None:
    target = dav_server.fresh_target()
    old, new = json.dumps({"v": 1}).encode(), json.dumps({"v": 2}).encode()
    with store_for(dav_server, target) as store:
        assert store.get_manifest("latest") is None
        store.put_manifest("latest", old, MANIFEST)
        store.put_manifest("latest", new, MANIFEST)
        assert store.get_manifest("latest") == new
        assert store.get_manifest("sha256:" + hashlib.sha256(old).hexdigest()) == old
    refs = dav_server.root.joinpath(*parse_target(target).segments, "refs")
    assert sorted(p.name for p in refs.iterdir()) == ["latest"]


def test_a_missing_blob_is_a_not_found_error(dav_server: DavServer) -> None:
    with store_for(dav_server) as store:
        assert not store.blob_exists("sha256:" + "0" * 64)
        with pytest.raises(NotFoundError):
            store.open_blob("sha256:" + "0" * 64)


def test_a_wrong_password_is_an_auth_error_that_names_the_secret_but_not_the_password(
    dav_server: DavServer, tmp_path: Path,
) -> None:
    (tmp_path / "f.txt").write_text("x\n")
    with store_for(dav_server, password="wrong-password") as store:
        with pytest.raises(AuthError) as info:
            engine.push(store, tmp_path)
    message = str(info.value)
    assert "credentials-secret" in message and USERNAME_ENV in message
    assert "wrong-password" not in message and dav_server.password not in message


def test_no_credentials_against_a_protected_server_says_to_set_the_secret(dav_server: DavServer) -> None:
    with WebdavStore(parse_target(dav_server.fresh_target())) as store:
        with pytest.raises(AuthError, match="no credentials were sent"):
            store.get_manifest("latest")


@pytest.mark.parametrize(
    ("status", "error"),
    [(507, DiskFullError), (503, NetworkError), (404, NotFoundError), (403, AuthError)],
)
def test_server_statuses_map_to_the_error_categories_scripts_act_on(status: int, error: type) -> None:
    """The exit code a step reports comes from the error class, so the mapping is the contract."""
    with WebdavStore(parse_target("webdav://dav.example.com/ci"), Credentials("ci", "hunter2-secret")) as store:
        got = store._status_error(status, "uploading", "https://dav.example.com/ci/uploads/x")
    assert type(got) is error
    assert "hunter2-secret" not in str(got)


def test_a_stopped_server_is_a_network_error(private_dav_server: DavServer) -> None:
    target = private_dav_server.fresh_target()
    with store_for(private_dav_server, target) as store:
        store.put_manifest("latest", b"{}", MANIFEST)
    private_dav_server.stop()
    with store_for(private_dav_server, target) as store:
        with pytest.raises(NetworkError, match=private_dav_server.netloc):
            store.get_manifest("latest")


# ---- the delete side ----

def test_reclaiming_a_run_deletes_its_states_and_their_blobs_and_keeps_the_published_target(
    dav_server: DavServer, tmp_path: Path,
) -> None:
    (tmp_path / "a.txt").write_text("published\n")
    target = dav_server.fresh_target()
    run = "3f2b9c1e-run"
    state = producer_ref(run, "build")
    with store_for(dav_server, target) as store:
        engine.push(store, tmp_path)  # the published target
        own = store.put_blob(io.BytesIO(b"only the state names this"), "application/octet-stream")
        manifest = json.dumps({"layers": [{"digest": own.digest, "size": own.size}],
                               "annotations": {"dev.wrapresolver.run": run}}).encode()
        store.put_manifest(state, manifest, MANIFEST)
        items = stored_items(store)
        assert {i.name for i in items if i.kind == STATE} == {state}
        reclaimed = reclaim_run(store, run, ("build",))
        assert reclaimed.deleted == [state] and not reclaimed.failures
        assert not store.blob_exists(own.digest)
        assert {i.name for i in stored_items(store) if i.kind == STATE} == set()
    out = tmp_path / "pulled"
    with store_for(dav_server, target) as store:
        engine.pull(store, out)
    assert (out / "a.txt").read_text() == "published\n"


def test_listing_walks_nested_collections_and_decodes_names(dav_server: DavServer) -> None:
    target = dav_server.fresh_target()
    with store_for(dav_server, target) as store:
        store.prepare()
        store.write("refs/wrap-x", b"{}", MANIFEST)
        deep = dav_server.root.joinpath(*parse_target(target).segments, "uploads", "deep", "er")
        deep.mkdir(parents=True)  # as another client may have left it
        (deep / "odd name %41.bin").write_bytes(b"12345")
        keys = {k.key: k for k in store.list_keys("uploads/")}
        assert set(keys) == {"uploads/deep/er/odd name %41.bin"}
        assert keys["uploads/deep/er/odd name %41.bin"].size == 5
        assert keys["uploads/deep/er/odd name %41.bin"].modified
        assert {k.key for k in store.list_keys("refs/wrap")} == {"refs/wrap-x"}
        assert {k.key for k in store.list_keys("")} >= {"refs/wrap-x", "uploads/deep/er/odd name %41.bin"}


def test_listing_a_target_never_written_finds_nothing_and_deleting_a_missing_object_is_fine(
    dav_server: DavServer,
) -> None:
    with store_for(dav_server) as store:
        assert list(store.list_keys("refs/")) == []
        store.delete("refs/never-there")


def test_a_listing_with_absolute_url_hrefs_and_properties_missing_is_read() -> None:
    body = b"""<?xml version="1.0"?>
    <d:multistatus xmlns:d="DAV:">
      <d:response><d:href>https://dav.example.com/ci/src/refs/</d:href>
        <d:propstat><d:prop><d:resourcetype><d:collection/></d:resourcetype></d:prop>
        <d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>
      <d:response><d:href>/ci/src/refs/wrap-a%20b</d:href>
        <d:propstat><d:prop><d:resourcetype/><d:getcontentlength>7</d:getcontentlength>
          <d:getlastmodified>Mon, 07 Dec 2026 10:00:00 GMT</d:getlastmodified></d:prop>
        <d:status>HTTP/1.1 200 OK</d:status></d:propstat>
        <d:propstat><d:prop><d:quota/></d:prop><d:status>HTTP/1.1 404 Not Found</d:status></d:propstat>
      </d:response>
      <d:response><d:href>/ci/src/refs/latest</d:href>
        <d:propstat><d:prop><d:resourcetype/></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat>
      </d:response>
    </d:multistatus>"""
    entries = parse_multistatus(body, "https://dav.example.com/ci/src/refs/")
    assert entries[0] == Entry(("ci", "src", "refs"), True, None, None)
    assert entries[1].segments == ("ci", "src", "refs", "wrap-a b") and entries[1].size == 7
    assert entries[1].modified == 1796637600.0 and not entries[1].collection
    assert entries[2] == Entry(("ci", "src", "refs", "latest"), False, None, None)


@pytest.mark.parametrize("body", [b"<not xml", b"<html><body>login</body></html>"])
def test_a_listing_that_is_not_a_multistatus_is_a_transfer_error_naming_the_url(body: bytes) -> None:
    with pytest.raises(TransferError, match="dav.example.com/ci/refs/"):
        parse_multistatus(body, "https://dav.example.com/ci/refs/")
