"""The httpx client against the test API server, which behaves as a real API server does
where the controller depends on it (status schema, conflicts, watch expiry)."""

from __future__ import annotations

import asyncio

import pytest

from tests.fixtures.kubeapi import ensure_namespace
from wrapresolver.controller.kube import CONFIGMAPS, RESOLUTION_REQUESTS, Credentials, HttpKube, KubeError

REQUEST = {"apiVersion": "resolution.tekton.dev/v1beta1", "kind": "ResolutionRequest",
           "metadata": {"name": "r1", "labels": {"resolution.tekton.dev/type": "wrap"}}, "spec": {"params": []}}
REF = {"uri": "/apis/tekton.dev/v1/namespaces/default/pipelines/p@u", "digest": {"sha256": "0" * 64}}


def run(kubeapi, body):
    async def main():
        kube = HttpKube(Credentials.load(str(kubeapi.kubeconfig)))
        try:
            return await body(kube)
        finally:
            await kube.close()
    ensure_namespace(kubeapi.api, "default")
    return asyncio.run(main())


def test_a_status_with_data_but_without_ref_source_and_source_is_rejected_like_tektons_schema(kubeapi):
    async def body(kube):
        await kube.create(RESOLUTION_REQUESTS, "default", REQUEST)
        with pytest.raises(KubeError) as err:
            await kube.patch_status(RESOLUTION_REQUESTS, "default", "r1", {"data": "eA==", "refSource": REF})
        assert err.value.status == 422 and "status.source" in err.value.message
        done = await kube.patch_status(RESOLUTION_REQUESTS, "default", "r1",
                                       {"data": "eA==", "refSource": REF, "source": REF, "kopf": {"x": 1}})
        assert done["status"]["data"] == "eA==" and "kopf" not in done["status"], "unknown fields are pruned"
    run(kubeapi, body)


def test_a_status_write_from_a_stale_resource_version_conflicts(kubeapi):
    async def body(kube):
        created = await kube.create(RESOLUTION_REQUESTS, "default", REQUEST)
        with pytest.raises(KubeError) as err:
            await kube.create(RESOLUTION_REQUESTS, "default", REQUEST)
        assert err.value.status == 409
        status = {"data": "eA==", "refSource": REF, "source": REF}
        await kube.patch_status(RESOLUTION_REQUESTS, "default", "r1", status,
                                resource_version=created["metadata"]["resourceVersion"])
        with pytest.raises(KubeError) as err:
            await kube.patch_status(RESOLUTION_REQUESTS, "default", "r1", status,
                                    resource_version=created["metadata"]["resourceVersion"])
        assert err.value.status == 409
        assert await kube.get(RESOLUTION_REQUESTS, "default", "absent") is None
    run(kubeapi, body)


def test_a_watch_lists_again_after_410_expired_and_sees_later_changes(kubeapi):
    api = kubeapi.api
    api.bookmark_interval = 60  # a bookmark would move the client past the compaction
    ensure_namespace(api, "sys")
    api.create("v1", "configmaps", "sys", {"metadata": {"name": "cfg"}, "data": {"a": "1"}})
    api.create("v1", "configmaps", "sys", {"metadata": {"name": "other"}, "data": {"a": "1"}})

    async def body(kube):
        async def next_event():
            kind, obj = await asyncio.wait_for(stream.__anext__(), 10)
            return kind, ([i["data"]["a"] for i in obj["items"]] if kind == "LIST" else obj["data"]["a"])

        stream = kube.watch(CONFIGMAPS, "sys", field_selector="metadata.name=cfg")
        seen = [await next_event()]
        api.patch("v1", "configmaps", "sys", "cfg", {"data": {"a": "2"}})
        seen.append(await next_event())
        api.patch("v1", "configmaps", "sys", "other", {"data": {"a": "3"}})
        api.compact()  # the reconnect below starts from a forgotten resourceVersion: 410 Expired
        api.drop_watches()
        seen.append(await next_event())
        api.patch("v1", "configmaps", "sys", "cfg", {"data": {"a": "4"}})
        seen.append(await next_event())
        await stream.aclose()
        return seen

    assert run(kubeapi, body) == [("LIST", ["1"]), ("MODIFIED", "2"), ("LIST", ["2"]), ("MODIFIED", "4")]
