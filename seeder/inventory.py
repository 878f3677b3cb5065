"""The fleet's inventory: the subset of Ansible's YAML inventory format that ``shoal fleet`` reads.

Supported (README: Fleet onboarding): top-level groups (usually just ``all``) with ``hosts``,
``children`` (nested to any depth) and ``vars``; host names with ranges (``web[01:20].x``,
``db[a:c]``, ``[1:9:2]``); the connection vars ``ansible_host``, ``ansible_port``,
``ansible_user``, ``ansible_ssh_private_key_file`` and ``ansible_python_interpreter``; labels
from the vars ``env``, ``zone``, ``rack`` and the mapping ``shoal_labels``; shoal's own
``shoal_*`` vars. Precedence as Ansible's: ``all`` < parent group < child group < host, groups of
the same depth applied in name order; unlike Ansible, ``shoal_labels`` mappings are merged key by
key instead of replaced. Refused with an error naming the file and the key path: Jinja templates,
executable (dynamic) inventories, INI inventories, anything else the structure does not allow.

Pure: :func:`parse_inventory` takes the text, :func:`load_inventory` only reads the file.
"""

from __future__ import annotations

import fnmatch
import os
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.errors import ConfigError
from common.yamldoc import LiteralInt, YamlError, load_yaml

LABEL_VARS = ("env", "zone", "rack")
GROUP_KEYS = frozenset({"hosts", "children", "vars"})
_RANGE = re.compile(r"\[([0-9a-zA-Z]+):([0-9a-zA-Z]+)(?::([0-9]+))?\]")
_LABEL = re.compile(r"^[A-Za-z0-9_.-]+$")
_LABEL_VALUE = re.compile(r"^[A-Za-z0-9_./:@+-]*$")


@dataclass(frozen=True)
class InventoryHost:
    """One host as the inventory resolves it: how to reach it and what it becomes."""

    name: str
    address: str
    port: int
    user: str
    key_file: str | None
    python: str
    groups: tuple[str, ...]
    labels: dict[str, str]
    vars: dict[str, Any] = field(repr=False)

    def var(self, key: str, default: Any = None) -> Any:
        return self.vars.get(key, default)


@dataclass(frozen=True)
class Inventory:
    source: str
    hosts: list[InventoryHost]
    groups: dict[str, list[str]]  # group -> member host names (recursively), file order

    def select(self, limit: str | None) -> list[InventoryHost]:
        """The hosts ``--limit`` selects, in inventory order (all without a limit)."""
        if limit is None or not limit.strip():
            return list(self.hosts)
        chosen = select_names(limit, [h.name for h in self.hosts], self.groups)
        return [h for h in self.hosts if h.name in chosen]


def load_inventory(path: Path) -> Inventory:
    """Read and parse an inventory file; ConfigError naming the file for anything refused."""
    try:
        st = path.stat()
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"inventory {path}: cannot read it: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"inventory {path}: not a text file") from None
    if st.st_mode & 0o111 or text.startswith("#!"):
        raise ConfigError(
            f"inventory {path}: an executable file (dynamic inventory script) is not supported;"
            " give a static YAML inventory (e.g. `ansible-inventory -i SCRIPT --list -y`)"
        )
    return parse_inventory(text, str(path))


def parse_inventory(text: str, source: str = "<inventory>") -> Inventory:
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()[:1] not in ("", "#")), "")
    if re.match(r"^\[[^\]]+\]$", first) or re.match(r"^[^:\s]+\s+\w+=", first):
        raise ConfigError(
            f"inventory {source}: INI format is not supported; convert it to YAML with"
            " `ansible-inventory -i FILE --list -y`"
        )
    try:
        doc = load_yaml(text)
    except YamlError as exc:
        raise ConfigError(f"inventory {source}: not valid YAML: {exc}") from None
    if not isinstance(doc, dict) or not doc:
        raise ConfigError(f"inventory {source}: the top level must be a mapping of groups (all:)")
    return _Builder(source).build(doc)


class _Builder:
    def __init__(self, source: str) -> None:
        self.source = source
        self.order: list[str] = []  # host names in first-seen order
        self.host_vars: dict[str, dict[str, Any]] = {}
        self.group_vars: dict[str, dict[str, Any]] = {}
        self.depth: dict[str, int] = {}
        self.direct: dict[str, list[str]] = {}  # group -> hosts listed directly
        self.children: dict[str, list[str]] = {}

    def fail(self, path: str, problem: str) -> ConfigError:
        return ConfigError(f"inventory {self.source}: {path}: {problem}")

    def build(self, doc: dict[Any, Any]) -> Inventory:
        self.group("all", {}, "all", 0)
        for name, body in doc.items():
            if name == "all":
                self.group("all", body, "all", 0)
            else:
                self.group(self.name(name, str(name)), body, str(name), 1)
                self.link("all", str(name))
        members = {g: self.members(g, set()) for g in self.direct}
        members["all"] = list(self.order)
        hosts = [self.host(n, members) for n in self.order]
        return Inventory(self.source, hosts, members)

    def name(self, raw: Any, path: str) -> str:
        if not isinstance(raw, str) or not raw.strip() or any(c.isspace() for c in raw):
            raise self.fail(path, f"{raw!r} is not a name")
        if "{{" in raw or "{%" in raw:
            raise self.fail(path, "Jinja templates are not supported")
        return raw

    def link(self, parent: str, child: str) -> None:
        if child not in self.children.setdefault(parent, []):
            self.children[parent].append(child)

    def group(self, name: str, body: Any, path: str, depth: int) -> None:
        if depth > 64:
            raise self.fail(path, "groups nest deeper than 64 levels (a cycle?)")
        self.direct.setdefault(name, [])
        self.children.setdefault(name, [])
        self.group_vars.setdefault(name, {})
        self.depth[name] = max(self.depth.get(name, 0), depth)
        if body is None:
            return
        if not isinstance(body, dict):
            raise self.fail(path, "a group must be a mapping of hosts/children/vars")
        for key in body:
            if key not in GROUP_KEYS:
                raise self.fail(
                    f"{path}.{key}", "unknown key (a group has only hosts, children, vars)"
                )
        self.group_vars[name].update(self.vars(body.get("vars"), f"{path}.vars"))
        hosts = body.get("hosts") or {}
        if not isinstance(hosts, dict):
            raise self.fail(f"{path}.hosts", "must be a mapping of host names to vars (or null)")
        for pattern, hvars in hosts.items():
            hpath = f"{path}.hosts.{pattern}"
            for host in expand(self.name(pattern, hpath), _failer(self, hpath)):
                if host not in self.host_vars:
                    self.order.append(host)
                    self.host_vars[host] = {}
                self.host_vars[host].update(self.vars(hvars, hpath))
                if host not in self.direct[name]:
                    self.direct[name].append(host)
        kids = body.get("children") or {}
        if not isinstance(kids, dict):
            raise self.fail(f"{path}.children", "must be a mapping of group names to groups")
        for child, cbody in kids.items():
            cname = self.name(child, f"{path}.children.{child}")
            if cname == "all":
                raise self.fail(f"{path}.children.all", "`all` cannot be a child group")
            self.link(name, cname)
            self.group(cname, cbody, f"{path}.children.{cname}", depth + 1)

    def vars(self, raw: Any, path: str) -> dict[str, Any]:
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            raise self.fail(path, "vars must be a mapping")
        for key, value in raw.items():
            if not isinstance(key, str):
                raise self.fail(path, f"var name {key!r} is not a string")
            _no_jinja(value, f"{path}.{key}", self.fail)
        return dict(raw)

    def members(self, group: str, seen: set[str]) -> list[str]:
        if group in seen:
            raise self.fail(group, "groups form a cycle")
        names = list(self.direct[group])
        for child in self.children[group]:
            names += [h for h in self.members(child, seen | {group}) if h not in names]
        return names

    def host(self, name: str, members: dict[str, list[str]]) -> InventoryHost:
        groups = sorted(
            (g for g, hs in members.items() if name in hs), key=lambda g: (self.depth[g], g)
        )
        merged: dict[str, Any] = {}
        labels: dict[str, Any] = {}
        for scope in [*(self.group_vars[g] for g in groups), self.host_vars[name]]:
            merged.update(scope)
            extra = scope.get("shoal_labels")
            if extra is not None and not isinstance(extra, dict):
                raise self.fail(f"{name}.shoal_labels", "must be a mapping of label: value")
            labels.update(extra or {})
        path = f"host {name}"
        for key in LABEL_VARS:
            if key in merged:
                labels[key] = merged[key]
        port = merged.get("ansible_port", 22)
        if isinstance(port, str) and port.isdigit():
            port = int(port)
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
            raise self.fail(f"{path}: ansible_port", f"{port!r} is not a TCP port")
        return InventoryHost(
            name=name,
            address=self.text(merged.get("ansible_host", name), f"{path}: ansible_host"),
            port=port,
            user=self.text(merged.get("ansible_user", "root"), f"{path}: ansible_user"),
            key_file=(
                self.text(keyf, f"{path}: ansible_ssh_private_key_file")
                if (keyf := merged.get("ansible_ssh_private_key_file")) is not None
                else None
            ),
            python=self.text(
                merged.get("ansible_python_interpreter", "python3"),
                f"{path}: ansible_python_interpreter",
            ),
            groups=tuple(g for g in groups),
            labels=self.labels(labels, path),
            vars=merged,
        )

    def text(self, value: Any, path: str) -> str:
        if isinstance(value, bool) or not isinstance(value, str | int) or str(value) == "":
            raise self.fail(path, f"{value!r} must be a non-empty string")
        return str(value)

    def labels(self, raw: dict[Any, Any], path: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for key, value in raw.items():
            text = value.text if isinstance(value, LiteralInt) else str(value)
            if value is None:
                text = ""
            if not isinstance(key, str) or not _LABEL.match(key):
                raise self.fail(f"{path}: label {key!r}", "label names are [A-Za-z0-9_.-]")
            if isinstance(value, dict | list) or not _LABEL_VALUE.match(text):
                raise self.fail(
                    f"{path}: label {key}", f"value {value!r} must be text without , = or spaces"
                )
            out[key] = text
        return out


def _failer(builder: _Builder, path: str) -> Any:
    return lambda problem: builder.fail(path, problem)


def _no_jinja(value: Any, path: str, fail: Any) -> None:
    if isinstance(value, str) and ("{{" in value or "{%" in value):
        raise fail(path, "Jinja templates are not supported (give the literal value)")
    if isinstance(value, dict):
        for k, v in value.items():
            _no_jinja(v, f"{path}.{k}", fail)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _no_jinja(v, f"{path}[{i}]", fail)


def expand(pattern: str, fail: Any) -> list[str]:
    """Expand Ansible host ranges: ``web[01:03]`` -> web01, web02, web03 (leading zeros kept)."""
    m = _RANGE.search(pattern)
    if m is None:
        if "[" in pattern or "]" in pattern:
            raise fail(f"{pattern!r}: a range is [START:END] or [START:END:STEP]")
        return [pattern]
    start, end, step_text = m.group(1), m.group(2), m.group(3)
    step = int(step_text or "1")
    if step < 1:
        raise fail(f"{pattern!r}: range step must be at least 1")
    if start.isdigit() and end.isdigit():
        width = len(start) if start.startswith("0") else 0
        items = [str(i).zfill(width) for i in range(int(start), int(end) + 1, step)]
    elif len(start) == len(end) == 1 and start in string.ascii_letters and end.isalpha():
        items = [chr(c) for c in range(ord(start), ord(end) + 1, step)]
    else:
        raise fail(f"{pattern!r}: a range is numeric ([01:20]) or one letter each ([a:f])")
    if not items:
        raise fail(f"{pattern!r}: the range is empty (START > END)")
    head, tail = pattern[: m.start()], pattern[m.end() :]
    return [name for item in items for name in expand(head + item + tail, fail)]


def select_names(limit: str, hosts: list[str], groups: dict[str, list[str]]) -> set[str]:
    """Ansible ``--limit`` patterns: ``a:b`` / ``a,b`` union, ``&g`` intersection, ``!x``
    exclusion; each term a group name, a host name, or a glob (``web*``) over both."""
    terms = [t.strip() for t in re.split(r"[,:]", limit) if t.strip()]
    union: set[str] = set()
    narrow: list[set[str]] = []
    exclude: set[str] = set()
    for term in terms:
        kind, body = (term[0], term[1:]) if term[0] in "!&" else ("", term)
        if not body or body.startswith("~"):
            raise ConfigError(f"--limit {limit!r}: {term!r} is not a supported pattern")
        matched = _match(body, hosts, groups)
        if not matched:
            raise ConfigError(f"--limit {limit!r}: {body!r} matches no host or group")
        if kind == "!":
            exclude |= matched
        elif kind == "&":
            narrow.append(matched)
        else:
            union |= matched
    if not union and (narrow or exclude):
        union = set(hosts)  # "!web" alone means everything but web, as in Ansible
    for only in narrow:
        union &= only
    return union - exclude


def _match(term: str, hosts: list[str], groups: dict[str, list[str]]) -> set[str]:
    if term in groups:
        return set(groups[term])
    if term in hosts:
        return {term}
    out = {h for h in hosts if fnmatch.fnmatchcase(h, term)}
    for g, members in groups.items():
        if fnmatch.fnmatchcase(g, term):
            out |= set(members)
    return out


def env_inventory() -> Path | None:
    """``$SHOAL_INVENTORY`` if set (the default for ``--inventory``)."""
    value = os.environ.get("SHOAL_INVENTORY")
    return Path(value) if value else None
