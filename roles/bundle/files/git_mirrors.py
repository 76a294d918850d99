"""Bare Git mirrors of pinned repositories and, recursively, of every submodule commit they pin.

    git_mirrors.py SPEC_JSON

SPEC: {"dest": DIR, "repos": [{"url": URL, "commit": SHA}], "rewrites": [{"url": .., "insteadof": ..}],
"check": bool}. Each URL is mirrored to DEST/<host>/<path>.git (its scheme dropped), fetched through the
rewrites (the connected controller's own mirror, if any). Prints one JSON object: changed, failed, msg,
mirrors (url -> path), pins ([url, commit, where]). Exits 0; the caller reads "failed".
"""

from __future__ import annotations

import json
import posixpath
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

PIN_REF = "refs/tags/rnn-bootstrap-pin/"


def mirror_path(dest: Path, url: str) -> Path:
    """https://github.com/torch/nn -> DEST/github.com/torch/nn.git (what a consumer's insteadOf maps to)."""
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        raise ValueError(f"{url}: only URLs with a scheme and host can be mirrored")
    path = parts.path.strip("/")
    if not path.endswith(".git"):
        path += ".git"
    return dest / parts.netloc.split("@")[-1] / path


def git(config: list[str], *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *config, *args], cwd=cwd, capture_output=True, text=True, check=False)


def has_commit(repo: Path, sha: str) -> bool:
    return git([], "cat-file", "-e", f"{sha}^{{commit}}", cwd=repo).returncode == 0


def referenced(repo: Path, sha: str) -> bool:
    """A clone gets the commit only if a branch or tag reaches it."""
    out = git([], "for-each-ref", "--contains", sha, "--format=%(refname)", "refs/heads", "refs/tags", cwd=repo)
    return out.returncode == 0 and bool(out.stdout.strip())


def submodules(repo: Path, sha: str, url: str) -> tuple[list[tuple[str, str, str]], str]:
    """(path, url, commit) of every gitlink at SHA; relative submodule URLs resolved against URL."""
    tree = git([], "ls-tree", "-r", "--full-tree", sha, cwd=repo)
    if tree.returncode != 0:
        return [], tree.stderr.strip()
    links = {}
    for line in tree.stdout.splitlines():
        meta, path = line.split("\t", 1)
        mode, kind, obj = meta.split()
        if mode == "160000" and kind == "commit":
            links[path] = obj
    if not links:
        return [], ""
    cfg = git([], "config", "--blob", f"{sha}:.gitmodules", "--get-regexp", r"^submodule\..*\.(path|url)$", cwd=repo)
    names: dict[str, dict[str, str]] = {}
    for line in cfg.stdout.splitlines():
        key, value = [*line.split(" ", 1), ""][:2]
        m = re.match(r"^submodule\.(.*)\.(path|url)$", key)
        if m:
            names.setdefault(m.group(1), {})[m.group(2)] = value
    by_path = {v["path"]: v.get("url", "") for v in names.values() if "path" in v}
    found, errors = [], []
    for path, obj in sorted(links.items()):
        sub = by_path.get(path, "")
        if not sub:
            errors.append(f"gitlink {path} at {url}@{sha[:12]} has no URL in .gitmodules")
            continue
        if sub.startswith(("./", "../")):
            parts = urlsplit(url)
            sub = parts._replace(path=posixpath.normpath(posixpath.join(parts.path.rstrip("/") + "/", sub))).geturl()
        found.append((path, sub, obj))
    return found, "; ".join(errors)


def main(spec: dict) -> dict:
    dest = Path(spec["dest"])
    check = bool(spec.get("check"))
    config = ["-c", "protocol.file.allow=always"]
    for rw in spec.get("rewrites") or []:
        config += ["-c", f"url.{rw['url']}.insteadOf={rw['insteadof']}"]
    queue = [(r["url"], r["commit"], r.get("name", r["url"])) for r in spec["repos"]]
    seen: set[tuple[str, str]] = set()
    changed, errors, pins, mirrors = False, [], [], {}
    while queue:
        url, sha, where = queue.pop(0)
        if (url, sha) in seen:
            continue
        seen.add((url, sha))
        repo = mirror_path(dest, url)
        mirrors[url] = str(repo)
        fetched_from = git(config, "ls-remote", "--get-url", url).stdout.strip() or url
        if not (repo / "HEAD").exists():
            changed = True
            if check:
                pins.append([url, sha, where])
                continue
            # Branches and tags only (what a clone takes), not a --mirror's every ref (GitHub's pull/*).
            repo.mkdir(parents=True, exist_ok=True)
            git([], "init", "--quiet", "--bare", str(repo))
            git([], "config", "remote.origin.url", url, cwd=repo)
            git([], "config", "--add", "remote.origin.fetch", "+refs/heads/*:refs/heads/*", cwd=repo)
            git([], "config", "--add", "remote.origin.fetch", "+refs/tags/*:refs/tags/*", cwd=repo)
        if not has_commit(repo, sha):
            changed = True
            if check:
                pins.append([url, sha, where])
                continue
            out = git(config, "fetch", "--quiet", "origin", cwd=repo)
            head = re.match(r"ref: (refs/heads/\S+)\tHEAD", git(config, "ls-remote", "--symref", url, "HEAD").stdout)
            if head:  # the mirror's default branch is the upstream's
                git([], "symbolic-ref", "HEAD", head.group(1), cwd=repo)
            if not has_commit(repo, sha):
                # a pinned commit no branch or tag reaches (or a remote whose other refs cannot be
                # fetched): fetch it by name, under a tag so that clones of the mirror get it
                pin = git(config, "fetch", "--quiet", "origin", f"{sha}:{PIN_REF}{sha}", cwd=repo)
                if pin.returncode != 0 and not has_commit(repo, sha):
                    errors.append(
                        f"commit {sha} ({where}) could not be fetched from {url} (fetched from {fetched_from}): "
                        f"{(out.stderr.strip() + ' ' + pin.stderr.strip()).strip()}"
                    )
                    continue
        if not has_commit(repo, sha):
            errors.append(f"commit {sha} ({where}) is not in {url} (fetched from {fetched_from})")
            continue
        if not referenced(repo, sha):
            changed = True
            if not check:
                git([], "update-ref", f"{PIN_REF}{sha}", sha, cwd=repo)
        pins.append([url, sha, where])
        subs, error = submodules(repo, sha, url)
        if error:
            errors.append(error)
        for path, sub_url, obj in subs:
            queue.append((sub_url, obj, f"submodule {path} of {where}@{sha[:12]}"))
    msg = "; ".join(errors) if errors else f"{len(pins)} pinned commits in {len(mirrors)} mirrors"
    return {"changed": changed, "failed": bool(errors), "msg": msg, "mirrors": mirrors, "pins": pins}


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
