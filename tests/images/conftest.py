"""The built images, and a way to run a command in the image as the Deployment runs it.

The images are built once per test run by scripts/build-images.sh (buildah), under a tag
made of the hash of every build input (Dockerfiles, lock, project sources, the script): a
run whose inputs match an image already in local storage reuses it, so the cost is paid
once per change. Without buildah, or when not root, every test here is skipped with the reason.

How a command runs "as the Deployment runs it" (config/deployment.yaml), approximated without
a container runtime: the image's root filesystem (a buildah working container, mounted) is
bound read-only in a private mount namespace, with an empty tmpfs on each emptyDir mount of
the Deployment (/tmp), the host's /dev and /proc, and the test's directories bound where a
Pod would mount volumes; then `chroot --userspec=UID:GID` starts the image's entrypoint as
that user, with the image's environment plus the Deployment's and nothing of the host's.
The UID has no passwd entry (neither 65532 nor a random UID is in the image's /etc/passwd).
Not reproduced: network, PID and user namespaces (the process shares the host's loopback,
which is how it reaches the test servers), seccomp, cgroup limits, capabilities beyond what
dropping to a non-root UID removes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
TEST_IMAGE = "localhost/wrapresolver-test"
TEST_BASE_IMAGE = "localhost/wrapresolver-test-base"
RANDOM_UID = "1000680000:0"
"""An OpenShift-style identity: a UID from the namespace's range, GID 0, no passwd entry."""

BUILD_INPUTS = ("images", "pyproject.toml", "README.md", "scripts/build-images.sh", "wrapresolver")


def input_hash() -> str:
    """sha256 over the paths and contents of every file the image build reads."""
    digest = hashlib.sha256()
    for top in BUILD_INPUTS:
        root = REPO / top
        paths = [root] if root.is_file() else sorted(
            p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
        for path in paths:
            digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def buildah(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["buildah", *args], capture_output=True, text=True, check=check, timeout=timeout)


def image_exists(ref: str) -> bool:
    return buildah("inspect", "--type", "image", ref, check=False).returncode == 0


@dataclass(frozen=True)
class BuiltImages:
    image: str
    base: str


@pytest.fixture(scope="session")
def built_images() -> BuiltImages:
    if shutil.which("buildah") is None:
        pytest.skip("buildah is not installed (scripts/install-test-servers.sh installs it): image tests skipped")
    if os.geteuid() != 0:
        pytest.skip("the image tests mount the image and switch users: they need root")
    tag = input_hash()
    image, base = f"{TEST_IMAGE}:{tag}", f"{TEST_BASE_IMAGE}:{tag}"
    if image_exists(image) and image_exists(base):
        return BuiltImages(image, base)
    done = subprocess.run(
        [str(REPO / "scripts" / "build-images.sh"), "--image", TEST_IMAGE, "--base-image", TEST_BASE_IMAGE,
         "--tag", tag], capture_output=True, text=True, timeout=1200, cwd=REPO)
    if done.returncode != 0:
        pytest.fail(f"scripts/build-images.sh failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    _forget_older_test_images(tag)
    return BuiltImages(image, base)


def _forget_older_test_images(keep: str, min_age: float = 3600) -> None:
    """Untag test images of earlier inputs built over an hour ago (a test run of other
    inputs going on at the same time may still be about to use a newer one); one in use by a container stays."""
    listed = json.loads(buildah("images", "--json", check=False).stdout or "[]")
    stale = set()
    for entry in listed:
        for ref in entry.get("names") or []:
            name, _, tag = ref.rpartition(":")
            if name == TEST_IMAGE and tag != keep and time.time() - entry.get("created", 0) > min_age:
                stale.add(tag)
    for tag in stale:
        buildah("rmi", f"{TEST_IMAGE}:{tag}", check=False)
        buildah("rmi", f"{TEST_BASE_IMAGE}:{tag}", check=False)


@dataclass(frozen=True)
class PodSettings:
    """What config/deployment.yaml gives the controller container, as far as a chroot can."""

    user: str
    """`runAsUser:runAsGroup` of the pod (or the container)."""
    read_only_root: bool
    empty_dirs: tuple[str, ...]
    env: dict[str, str]


POD_NAME = "wrapresolver-5f7c9d8b6-x2k4q"
"""metadata.name of the Pod, for env vars the Deployment takes from the downward API."""


def deployment_settings(namespace: str) -> PodSettings:
    deployment = yaml.safe_load((REPO / "config" / "deployment.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    empty = {v["name"] for v in pod.get("volumes") or [] if "emptyDir" in v}
    fields = {"metadata.namespace": namespace, "metadata.name": POD_NAME}
    env = {}
    for var in container.get("env") or []:
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            path = var.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
            if path not in fields:
                raise ValueError(f"config/deployment.yaml sets {var['name']} from {var.get('valueFrom')}: "
                                 "tests/images/conftest.py must learn to provide it")
            env[var["name"]] = fields[path]
    security = {**(pod.get("securityContext") or {}), **(container.get("securityContext") or {})}
    return PodSettings(
        user=f"{security['runAsUser']}:{security['runAsGroup']}",
        read_only_root=bool(security.get("readOnlyRootFilesystem")),
        empty_dirs=tuple(m["mountPath"] for m in container.get("volumeMounts") or [] if m["name"] in empty),
        env=env,
    )


@dataclass
class ImageRoot:
    """A mounted working container of the image; `run` starts commands in it."""

    container: str
    root: Path
    config: dict
    mount_points: set[str] = field(default_factory=set)

    @property
    def user(self) -> str:
        return self.config.get("User") or "0:0"

    @property
    def entrypoint(self) -> list[str]:
        return list(self.config.get("Entrypoint") or [])

    def env(self, extra: dict[str, str]) -> dict[str, str]:
        env = dict(e.split("=", 1) for e in self.config.get("Env") or [])
        return {**env, **extra}

    def command(self, args: list[str], *, user: str, settings: PodSettings, binds: dict[str, Path] | None = None,
                env: dict[str, str] | None = None, entrypoint: list[str] | None = None) -> list[str]:
        """The host command that runs `entrypoint + args` in the image as `user` ("UID:GID")."""
        points = {target: self._mount_point(target, is_dir=Path(source).is_dir())
                  for target, source in (binds or {}).items()}
        root = shlex.quote(str(self.root))
        lines = ["set -e", f"mount --bind {root} {root}",
                 f"mount --rbind /dev {root}/dev", f"mount --rbind /proc {root}/proc"]
        for path in settings.empty_dirs:
            lines.append(f"mount -t tmpfs -o mode=1777,size=64m tmpfs {shlex.quote(str(self.inside(path)))}")
        for target, source in (binds or {}).items():
            lines.append(f"mount --bind {shlex.quote(str(source))} {shlex.quote(str(points[target]))}")
        if settings.read_only_root:
            lines.append(f"mount -o remount,bind,ro {root} {root}")
        merged = self.env({**settings.env, **(env or {})})
        argv = ["/usr/bin/env", "-i", *(f"{k}={v}" for k, v in merged.items()),
                *(self.entrypoint if entrypoint is None else entrypoint), *args]
        lines.append(f"exec chroot --userspec={shlex.quote(user)} {root} " + " ".join(map(shlex.quote, argv)))
        return ["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", "\n".join(lines)]

    def run(self, args: list[str], *, user: str, settings: PodSettings, binds: dict[str, Path] | None = None,
            env: dict[str, str] | None = None, entrypoint: list[str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(args, user=user, settings=settings, binds=binds, env=env,
                                           entrypoint=entrypoint),
                              capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def inside(self, target: str) -> Path:
        """The host path of `target` in the image: symlinks resolve against the image's root
        (/var/run -> /run), as they would in the container, never against the host's."""
        path, parts, hops = self.root, list(Path(target).parts[1:]), 0
        while parts:
            part = parts.pop(0)
            if part == "..":
                path = path.parent if path != self.root else path
                continue
            candidate = path / part
            if candidate.is_symlink():
                hops += 1
                if hops > 40:
                    raise ValueError(f"too many symlinks under {target}")
                link = Path(os.readlink(candidate))
                path = self.root if link.is_absolute() else path
                parts = list(link.parts[1:] if link.is_absolute() else link.parts) + parts
                continue
            path = candidate
        return path

    def _mount_point(self, target: str, is_dir: bool) -> Path:
        """Create a mount point in the working container's own layer, as a runtime does."""
        path = self.inside(target)
        if target not in self.mount_points:
            if is_dir:
                path.mkdir(parents=True, exist_ok=True)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.touch()
            self.mount_points.add(target)
        return path


def mounted(image: str) -> Iterator[ImageRoot]:
    container = buildah("from", "--pull-never", "--quiet", image).stdout.strip()
    try:
        root = Path(buildah("mount", container).stdout.strip())
        config = json.loads(buildah("inspect", "--type", "image", image).stdout)["OCIv1"]["config"]
        yield ImageRoot(container, root, {k: v for k, v in config.items()})
    finally:
        buildah("umount", container, check=False)
        buildah("rm", container, check=False)


@pytest.fixture(scope="session")
def image_root(built_images: BuiltImages) -> Iterator[ImageRoot]:
    yield from mounted(built_images.image)


@pytest.fixture(params=["deployment-user", "random-uid-gid-0"])
def identity(request: pytest.FixtureRequest) -> str:
    """The controller's identities: the Deployment's runAsUser/runAsGroup, then an arbitrary
    UID with GID 0 (OpenShift); neither has a passwd entry."""
    return deployment_settings("default").user if request.param == "deployment-user" else RANDOM_UID


@pytest.fixture(params=["image-default-user", "random-uid-gid-0"])
def step_identity(request: pytest.FixtureRequest, image_root: ImageRoot) -> str:
    """The injected steps' identities: the image's default user (root, for a task that states
    none: docs/semantics.md, "Who owns the files"), then an arbitrary UID with GID 0."""
    return image_root.user if request.param == "image-default-user" else RANDOM_UID
