"""Fail when an image override that we declare or document renders unchanged.

Two sources of overrides, both checked against `kubectl kustomize` output:

- each overlay's own `images:` entries (dev's `newTag: dev`);
- the release step documented in deploy/README.md (`kustomize edit set image
  OLD=NEW@sha256:...`), applied to a scratch copy of the prod overlay.

An override whose `name` matches no image in the manifests is silently
ignored by kustomize; this is the check that it is not.

    python deploy/check_overrides.py KUBECTL
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parent
OVERLAYS = DEPLOY / "k8s" / "overlays"
README = DEPLOY / "README.md"
EXAMPLE_DIGEST = "sha256:" + "0" * 64


def rendered_images(kubectl: str, overlay: Path) -> set[str]:
    """Every container image in the rendered overlay."""
    out = subprocess.run(
        [kubectl, "kustomize", str(overlay)], check=True, capture_output=True, text=True
    ).stdout
    return set(re.findall(r"^\s+(?:- )?image: (\S+)$", out, re.M))


def expected_image(entry: dict[str, str]) -> str:
    """What an `images:` entry turns its image into (name, then tag or digest)."""
    name = entry.get("newName", entry["name"])
    if "digest" in entry:
        return f"{name}@{entry['digest']}"
    return f"{name}:{entry['newTag']}" if "newTag" in entry else name


def documented_release_overrides() -> list[dict[str, str]]:
    """The `kustomize edit set image OLD=NEW@sha256:...` pairs in deploy/README.md."""
    block = re.search(r"kustomize edit set image \\\n(.*?)\ncd ", README.read_text(), re.S)
    if block is None:
        raise SystemExit("deploy/README.md: no `kustomize edit set image` release step found")
    entries = []
    for old, new in re.findall(r"^\s+(\S+)=(\S+?)@sha256:\.\.\.", block.group(1), re.M):
        entries.append({"name": old, "newName": new, "digest": EXAMPLE_DIGEST})
    return entries


def check(kubectl: str, overlay: Path, entries: list[dict[str, str]]) -> list[str]:
    images = rendered_images(kubectl, overlay)
    return [
        f"{overlay.name}: override {e['name']} -> {expected_image(e)} did not take effect"
        for e in entries
        if expected_image(e) not in images
    ]


def main(kubectl: str) -> int:
    problems: list[str] = []
    checked = 0
    for overlay in sorted(p for p in OVERLAYS.iterdir() if p.is_dir()):
        entries = yaml.safe_load((overlay / "kustomization.yaml").read_text()).get("images", [])
        problems += check(kubectl, overlay, entries)
        checked += len(entries)
    release = documented_release_overrides()
    with tempfile.TemporaryDirectory() as scratch:
        prod = Path(scratch) / "overlays" / "prod"
        shutil.copytree(OVERLAYS / "prod", prod)
        (Path(scratch) / "base").symlink_to(DEPLOY / "k8s" / "base")
        kustomization = yaml.safe_load((prod / "kustomization.yaml").read_text())
        kustomization["images"] = [*kustomization.get("images", []), *release]
        (prod / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
        problems += check(kubectl, prod, release)
    checked += len(release)
    for problem in problems:
        print(problem, file=sys.stderr)
    if not release:
        problems.append("no release overrides documented")
    print(f"image overrides: {checked} checked, {len(problems)} without effect")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
