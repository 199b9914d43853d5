"""Which images the real node drops at start (pure): the project's older builds under
both of their names, never what the cluster runs now nor anyone else's image."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "k8s" / "dev"))

from realnode import stale_image_refs  # noqa: E402

LISTING = """REF TYPE DIGEST SIZE PLATFORMS LABELS
localhost/renderfarm/api:new application/vnd.docker.distribution.manifest.v2+json sha256:aaa 200.0 MiB linux/amd64 -
localhost/renderfarm/api:old application/vnd.docker.distribution.manifest.v2+json sha256:bbb 199.0 MiB linux/amd64 -
localhost/renderfarm/worker:cpu-old application/vnd.docker.distribution.manifest.v2+json sha256:ccc 1.1 GiB linux/amd64 -
localhost/renderfarm/worker:cpu-retagged application/vnd.docker.distribution.manifest.v2+json sha256:aaa 200.0 MiB linux/amd64 -
localhost/renderfarm/pause:node-1e09d8a85b00 application/vnd.oci.image.manifest.v1+json sha256:ddd 300.0 KiB linux/amd64 -
sha256:1111 application/vnd.docker.distribution.manifest.v2+json sha256:aaa 200.0 MiB linux/amd64 io.cri-containerd.image=managed
sha256:2222 application/vnd.docker.distribution.manifest.v2+json sha256:bbb 199.0 MiB linux/amd64 io.cri-containerd.image=managed
sha256:3333 application/vnd.docker.distribution.manifest.v2+json sha256:ccc 1.1 GiB linux/amd64 io.cri-containerd.image=managed
sha256:4444 application/vnd.oci.image.manifest.v1+json sha256:ddd 300.0 KiB linux/amd64 io.cri-containerd.image=managed
"""


def test_older_builds_go_under_both_names_and_the_running_ones_stay():
    keep = ["localhost/renderfarm/api:new", "localhost/renderfarm/worker:cpu-retagged",
            "localhost/renderfarm/pause:node-1e09d8a85b00"]
    stale = stale_image_refs(LISTING, keep, "localhost/renderfarm/")
    assert stale == ["localhost/renderfarm/api:old", "localhost/renderfarm/worker:cpu-old", "sha256:2222", "sha256:3333"]


def test_images_the_node_was_not_given_stay_for_the_next_cluster():
    # A test's node with the API image only leaves the worker's builds and the pause image alone.
    assert stale_image_refs(LISTING, ["localhost/renderfarm/api:new"], "localhost/renderfarm/") == [
        "localhost/renderfarm/api:old", "sha256:2222"]
    assert stale_image_refs(LISTING, [], "localhost/renderfarm/") == []
    assert stale_image_refs("REF TYPE DIGEST SIZE PLATFORMS LABELS\n", ["localhost/renderfarm/api:new"],
                            "localhost/renderfarm/") == []
