"""Render a kustomization the way ``kubectl kustomize`` does, for the subset deploy/k8s uses.

No kustomize binary installs from PyPI or Debian, so the tests render the overlays with this:
``resources`` (files and directories holding a kustomization), ``namespace``, ``images`` and
``patches`` whose patch is a JSON 6902 list (RFC 6902: add, remove, replace, test) aimed by
``target`` kind and name. Anything else in a kustomization raises :class:`KustomizeError`, so a
manifest never relies on a feature rendered here differently or not at all. Its output was
checked equal to kustomize v5.5's (``kubectl kustomize``) for every kustomization under
deploy/k8s when it was written.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml

SUPPORTED = {"apiVersion", "kind", "resources", "namespace", "images", "patches"}
# Kinds kustomize's namespace transformer leaves alone (cluster-scoped).
CLUSTER_SCOPED = {
    "Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume", "StorageClass",
    "CustomResourceDefinition", "PriorityClass", "APIService", "IngressClass",
    "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration",
}  # fmt: skip
_IMAGE = re.compile(r"^(?P<name>[^@]+?)(?::(?P<tag>[^:/@]+))?(?:@(?P<digest>.+))?$")


class KustomizeError(Exception):
    """A kustomization this renderer does not support, or a patch that does not apply."""


def render(directory: str | Path) -> list[dict[str, Any]]:
    """Return the documents ``kubectl kustomize DIRECTORY`` prints, as dictionaries."""
    directory = Path(directory)
    path = directory / "kustomization.yaml"
    if not path.is_file():
        raise KustomizeError(f"{directory}: no kustomization.yaml")
    spec = yaml.safe_load(path.read_text()) or {}
    unknown = sorted(set(spec) - SUPPORTED)
    if unknown:
        raise KustomizeError(f"{path}: fields {unknown} are not supported here")
    docs: list[dict[str, Any]] = []
    for entry in spec.get("resources", []):
        target = (directory / entry).resolve()
        if target.is_dir():
            docs.extend(render(target))
        elif target.is_file():
            docs.extend(d for d in yaml.safe_load_all(target.read_text()) if d)
        else:
            raise KustomizeError(f"{path}: resource {entry!r} does not exist")
    for patch in spec.get("patches", []):
        _patch(docs, patch, directory, path)
    for image in spec.get("images", []):
        _image(docs, image)
    if "namespace" in spec:
        for doc in docs:
            if doc.get("kind") not in CLUSTER_SCOPED:
                doc.setdefault("metadata", {})["namespace"] = spec["namespace"]
    return docs


def _patch(docs: list[dict[str, Any]], patch: dict[str, Any], directory: Path, where: Path) -> None:
    if "path" in patch:
        text = (directory / patch["path"]).read_text()
    elif "patch" in patch:
        text = patch["patch"]
    else:
        raise KustomizeError(f"{where}: a patch needs `patch` or `path`")
    ops = yaml.safe_load(text)
    if not isinstance(ops, list):
        raise KustomizeError(
            f"{where}: only JSON 6902 patches (a list of operations) are supported"
        )
    target = patch.get("target") or {}
    extra = sorted(set(target) - {"kind", "name"})
    if extra or not target:
        raise KustomizeError(f"{where}: a patch target by kind and name only, got {target}")
    hits = [
        d
        for d in docs
        if d.get("kind") == target.get("kind", d.get("kind"))
        and d.get("metadata", {}).get("name") == target.get("name", d["metadata"].get("name"))
    ]
    if not hits:
        raise KustomizeError(f"{where}: patch target {target} matches no resource")
    for doc in hits:
        for op in ops:
            apply_operation(doc, op)


def apply_operation(doc: dict[str, Any], op: dict[str, Any]) -> None:
    """Apply one RFC 6902 operation (add, remove, replace, test) to ``doc`` in place."""
    kind, pointer = op.get("op"), op.get("path", "")
    if kind not in {"add", "remove", "replace", "test"}:
        raise KustomizeError(f"JSON patch operation {kind!r} is not supported")
    parts = [p.replace("~1", "/").replace("~0", "~") for p in pointer.split("/")[1:]]
    if not parts:
        raise KustomizeError(f"JSON patch path {pointer!r} names the whole document")
    parent: Any = doc
    for part in parts[:-1]:
        parent = _step(parent, part, pointer)
    last = parts[-1]
    if isinstance(parent, list):
        if kind == "add" and last == "-":
            parent.append(copy.deepcopy(op["value"]))
            return
        index = _index(parent, last, pointer, allow_end=kind == "add")
        if kind == "add":
            parent.insert(index, copy.deepcopy(op["value"]))
        elif kind == "remove":
            del parent[index]
        elif kind == "replace":
            parent[index] = copy.deepcopy(op["value"])
        elif parent[index] != op["value"]:
            raise KustomizeError(f"JSON patch test failed at {pointer}")
        return
    if not isinstance(parent, dict):
        raise KustomizeError(f"JSON patch path {pointer!r} goes through a scalar")
    if kind != "add" and last not in parent:
        raise KustomizeError(f"JSON patch {kind} of {pointer!r}: no such member")
    if kind in {"add", "replace"}:
        parent[last] = copy.deepcopy(op["value"])
    elif kind == "remove":
        del parent[last]
    elif parent[last] != op["value"]:
        raise KustomizeError(f"JSON patch test failed at {pointer}")


def _step(node: Any, part: str, pointer: str) -> Any:
    if isinstance(node, list):
        return node[_index(node, part, pointer, allow_end=False)]
    if isinstance(node, dict) and part in node:
        return node[part]
    raise KustomizeError(f"JSON patch path {pointer!r}: {part!r} does not exist")


def _index(node: list[Any], part: str, pointer: str, *, allow_end: bool) -> int:
    if not part.isdigit() or int(part) > len(node) - (0 if allow_end else 1):
        raise KustomizeError(f"JSON patch path {pointer!r}: no index {part!r}")
    return int(part)


def _image(docs: list[dict[str, Any]], image: dict[str, Any]) -> None:
    for doc in docs:
        pod = (doc.get("spec") or {}).get("template", {}).get("spec") or {}
        for container in [*pod.get("containers", []), *pod.get("initContainers", [])]:
            match = _IMAGE.match(container.get("image", ""))
            if match is None or match["name"] != image["name"]:
                continue
            name = image.get("newName", match["name"])
            if "digest" in image:
                container["image"] = f"{name}@{image['digest']}"
                continue
            tag = image.get("newTag", match["tag"])
            digest = match["digest"]
            container["image"] = (
                name + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
            )
