# Copyright: rnn_bootstrap maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Decision logic for the rnn_bootstrap.char_rnn.luarocks module.

Kept free of AnsibleModule so that unit tests can drive it with a fake runner. Everything
here must run on target Pythons 3.8+.

Compatibility notes:
* Options are passed as ``--opt=value``: LuaRocks 3.x (argparse) accepts that form and so
  does the LuaRocks 2.2.0beta1 that Torch7's luajit-rocks ships, which does not accept
  ``--opt value`` for every flag.
* Idempotence relies on ``luarocks list --porcelain`` (name, version, status, tree; tab
  separated) and ``luarocks search --porcelain`` (name, version, arch, repo), both of which
  exist in LuaRocks 2.2 and 3.x. ``list --outdated`` is deliberately not used.
"""

from __future__ import annotations

import os
import re
import shlex

TAIL_LINES = 20

# Ported from luarocks/core/vers.lua (LuaRocks 3.8).
_DELTAS = {
    "dev": 120000000,
    "scm": 110000000,
    "cvs": 100000000,
    "rc": -1000,
    "pre": -10000,
    "beta": -100000,
    "alpha": -1000000,
}
_NUM_RE = re.compile(r"^(\d+)[.\-_]*(.*)$", re.S)
_WORD_RE = re.compile(r"^([A-Za-z]+)[.\-_]*(.*)$", re.S)
_REV_RE = re.compile(r"^(.*)-(\d+)$", re.S)


class LuaRocksError(Exception):
    """A failure to report through fail_json; ``details`` are extra result keys."""

    def __init__(self, msg, **details):
        super().__init__(msg)
        self.msg = msg
        self.details = details


def parse_version(vstring):
    """Return (components, revision) the way LuaRocks' vers.parse_version does."""
    v = vstring.strip()
    revision = None
    m = _REV_RE.match(v)
    if m:
        v, revision = m.group(1), int(m.group(2))
    comps = []
    i = 0
    while v:
        m = _NUM_RE.match(v)
        if m:
            number = int(m.group(1))
            if i < len(comps):
                comps[i] = comps[i] + number / 100000.0
            else:
                comps.append(float(number))
            i += 1
        else:
            m = _WORD_RE.match(v)
            if not m:
                # LuaRocks warns and stores 0 here.
                if i < len(comps):
                    comps[i] = 0.0
                else:
                    comps.append(0.0)
                break
            token = m.group(1)
            value = float(_DELTAS.get(token, ord(token[0]) / 1000.0))
            # LuaRocks stores the word at the current slot without advancing.
            if i < len(comps):
                comps[i] = value
            else:
                comps.append(value)
        v = m.group(2)
    return comps, revision


def compare_versions(a, b):
    """-1, 0 or 1 comparing LuaRocks versions ``a`` and ``b`` (revisions ignored if one lacks it)."""
    ca, ra = parse_version(a)
    cb, rb = parse_version(b)
    for i in range(max(len(ca), len(cb))):
        x = ca[i] if i < len(ca) else 0.0
        y = cb[i] if i < len(cb) else 0.0
        if x != y:
            return -1 if x < y else 1
    if ra is not None and rb is not None and ra != rb:
        return -1 if ra < rb else 1
    return 0


def version_matches(installed, wanted):
    """True if ``installed`` satisfies a requested ``wanted`` version.

    ``1.0`` matches ``1.0-1`` (no revision requested); ``1.0-2`` only matches ``1.0-2``.
    """
    if installed == wanted:
        return True
    ci, ri = parse_version(installed)
    cw, rw = parse_version(wanted)
    if ci != cw:
        return False
    return rw is None or ri == rw


def max_version(versions):
    best = None
    for v in versions:
        if best is None or compare_versions(v, best) > 0:
            best = v
    return best


def parse_list_porcelain(text, name=None):
    """Parse ``luarocks list --porcelain``: ``name\\tversion\\tstatus\\ttree`` per line.

    ``luarocks list FILTER`` matches substrings, so filter to the exact ``name`` here.
    """
    rocks = []
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2:
            continue
        fields += [""] * (4 - len(fields))
        rock = {"name": fields[0], "version": fields[1], "status": fields[2], "tree": fields[3]}
        if name is None or rock["name"] == name:
            rocks.append(rock)
    return rocks


def parse_search_porcelain(text, name=None):
    """Parse ``luarocks search --porcelain``: ``name\\tversion\\tarch\\trepo`` per line."""
    found = []
    for line in text.splitlines():
        fields = line.split("\t")
        if len(fields) < 3:
            continue
        fields += [""] * (4 - len(fields))
        entry = {"name": fields[0], "version": fields[1], "arch": fields[2], "repo": fields[3]}
        if name is None or entry["name"] == name:
            found.append(entry)
    return found


_RS_FIELD = r"^[ \t]*{key}[ \t]*=[ \t]*(?:\"([^\"\n]*)\"|'([^'\n]*)'|\[\[([^\]\n]*)\]\])"


def parse_rockspec(path, content=None):
    """Return (package, version) of a rockspec; falls back to the NAME-VERSION.rockspec filename."""
    if content is None:
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                content = fh.read()
        except OSError as exc:
            raise LuaRocksError(f"Cannot read rockspec {path}: {exc}") from exc
    values = {}
    for key in ("package", "version"):
        m = re.search(_RS_FIELD.format(key=key), content, re.M)
        if m:
            values[key] = next(g for g in m.groups() if g is not None).strip()
    if "package" not in values or "version" not in values:
        base = os.path.basename(path)
        m = re.match(r"^(.+)-([^-]+-\d+)\.rockspec$", base)
        if m:
            values.setdefault("package", m.group(1))
            values.setdefault("version", m.group(2))
    if not values.get("package") or not values.get("version"):
        raise LuaRocksError(
            f"Cannot determine package and version of rockspec {path}: expected top-level "
            "'package = \"...\"' and 'version = \"...\"' or a NAME-VERSION.rockspec file name"
        )
    return values["package"], values["version"]


def tail(text, lines=TAIL_LINES):
    return "\n".join((text or "").strip().splitlines()[-lines:])


def format_cmd(argv):
    return " ".join(shlex.quote(a) for a in argv)


class LuaRocks:
    """Builds luarocks argv lists and runs them through ``run(argv, cwd=None) -> (rc, out, err)``."""

    def __init__(self, run, executable, tree=None, server=None, only_server=False, extra_args=None):
        self._run = run
        self.executable = executable
        self.tree = tree
        self.server = server
        self.only_server = only_server
        self.extra_args = list(extra_args or [])
        self.commands = []

    def _base(self, with_server=False):
        argv = [self.executable]
        if self.tree:
            argv.append(f"--tree={self.tree}")
        if with_server and self.server:
            argv.append(f"--{'only-server' if self.only_server else 'server'}={self.server}")
        return argv

    def run(self, argv, what, rock, cwd=None):
        self.commands.append(format_cmd(argv))
        rc, out, err = self._run(argv, cwd=cwd)
        if rc != 0:
            output = tail(err) or tail(out)
            raise LuaRocksError(
                f"luarocks {what} failed for rock '{rock}' (rc={rc}): {output}",
                rock=rock,
                rc=rc,
                stdout=out,
                stderr=err,
                failed_cmd=format_cmd(argv),
            )
        return out

    def installed(self, name):
        out = self.run([*self._base(), "list", "--porcelain", name], "list", name)
        return [r["version"] for r in parse_list_porcelain(out, name)]

    def available(self, name):
        out = self.run([*self._base(True), "search", "--porcelain", name], "search", name)
        return sorted({e["version"] for e in parse_search_porcelain(out, name)}, key=_VersionKey)

    def install(self, name, version=None):
        argv = [*self._base(True), "install", name]
        if version:
            argv.append(version)
        self.run(argv + self.extra_args, "install", name)

    def remove(self, name, version=None, force=False):
        argv = [*self._base(), "remove"]
        if force:
            argv.append("--force")
        argv.append(name)
        if version:
            argv.append(version)
        self.run(argv, "remove", name)

    def make(self, name, rockspec, chdir):
        argv = [*self._base(True), "make", rockspec]
        self.run(argv + self.extra_args, "make", f"{name} ({rockspec})", cwd=chdir)


class _VersionKey:
    """Sort key using LuaRocks ordering."""

    def __init__(self, v):
        self.v = v

    def __lt__(self, other):
        return compare_versions(self.v, other.v) < 0


def _plan(name, state, version, force, installed, lr):
    """Return (action, action_version, target_version) for one named rock.

    action is None, 'install' or 'remove'. target_version is what is expected afterwards
    (used for check-mode reporting); None when not known in advance.
    """
    if state == "absent":
        doomed = [v for v in installed if version_matches(v, version)] if version else list(installed)
        return ("remove", doomed, None) if doomed else (None, None, None)
    if state == "present":
        ok = any(version_matches(v, version) for v in installed) if version else bool(installed)
        if ok and not force:
            return None, None, None
        return "install", version, version
    # latest
    available = lr.available(name)
    newest = available[-1] if available else None
    current = max_version(installed)
    if current is None:
        return "install", None, newest
    if newest is not None and compare_versions(newest, current) > 0:
        return "install", None, newest
    if force:
        return "install", None, current
    return None, None, None


def ensure(params, lr, check_mode):
    """Bring rocks to ``params['state']``. Returns the module result (without ``changed`` merging)."""
    state = params["state"]
    force = params.get("force") or False
    rockspec = params.get("rockspec")
    result = {
        "changed": False,
        "name": [],
        "versions_before": {},
        "versions_after": {},
        "actions": [],
        "cmd": lr.commands,
    }

    try:
        if rockspec:
            _ensure_rockspec(params, lr, check_mode, result)
        else:
            names = params.get("name") or []
            for name in names:
                _ensure_named(name, state, params.get("version"), force, lr, check_mode, result)
    except LuaRocksError as exc:
        exc.details = dict(result, **exc.details)
        raise
    return result


def _record(result, name, before, after, action):
    result["name"].append(name)
    result["versions_before"][name] = before
    result["versions_after"][name] = after
    if action:
        result["actions"].append(action)
        result["changed"] = True


def _ensure_named(name, state, version, force, lr, check_mode, result):
    before = lr.installed(name)
    action, arg, target = _plan(name, state, version, force, before, lr)
    if action is None:
        _record(result, name, before, before, None)
        return
    if action == "remove":
        desc = {"rock": name, "action": "remove", "versions": arg}
        if check_mode:
            after = [v for v in before if v not in arg]
        else:
            # luarocks remove NAME without a version removes every version at once.
            if len(arg) == len(before):
                lr.remove(name, force=force)
            else:
                for v in arg:
                    lr.remove(name, v, force=force)
            after = lr.installed(name)
    else:
        desc = {"rock": name, "action": "install", "version": target}
        if check_mode:
            after = [target] if target else ["(unknown)"]
        else:
            lr.install(name, arg)
            after = lr.installed(name)
            if not after:
                raise LuaRocksError(
                    f"luarocks install reported success for rock '{name}' but "
                    "`luarocks list` does not show it afterwards (wrong --tree or a different Lua version?)"
                )
    _record(result, name, before, after, desc)


def _ensure_rockspec(params, lr, check_mode, result):
    rockspec = os.path.abspath(params["rockspec"])
    state = params["state"]
    force = params.get("force") or False
    if not os.path.isfile(rockspec):
        raise LuaRocksError(f"rockspec {rockspec} does not exist")
    package, version = parse_rockspec(rockspec)
    names = params.get("name") or []
    if names and names != [package]:
        raise LuaRocksError(f"name {', '.join(names)} does not match package '{package}' of rockspec {rockspec}")
    result["rockspec"] = {"path": rockspec, "package": package, "version": version}
    before = lr.installed(package)
    have = any(version_matches(v, version) for v in before)

    if state == "absent":
        doomed = [v for v in before if version_matches(v, version)]
        if not doomed:
            _record(result, package, before, before, None)
            return
        desc = {"rock": package, "action": "remove", "versions": doomed}
        if check_mode:
            after = [v for v in before if v not in doomed]
        else:
            for v in doomed:
                lr.remove(package, v, force=force)
            after = lr.installed(package)
        _record(result, package, before, after, desc)
        return

    if have and not force:
        _record(result, package, before, before, None)
        return
    desc = {"rock": package, "action": "make", "version": version, "rockspec": rockspec}
    if check_mode:
        after = [version]
    else:
        chdir = params.get("chdir") or os.path.dirname(rockspec) or "."
        lr.make(package, rockspec, chdir)
        after = lr.installed(package)
        if not any(version_matches(v, version) for v in after):
            raise LuaRocksError(
                f"luarocks make reported success for rock '{package}' but version {version} "
                "is not listed by `luarocks list` afterwards (wrong --tree?)"
            )
    _record(result, package, before, after, desc)
