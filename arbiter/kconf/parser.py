"""keepalived.conf (keepalived 2.2.7 syntax) read into a statement tree and a typed summary.

This module owns the syntax: `include` (globs, relative to the including file, cycle-safe), `#`/`!` comments,
quoted strings, `{ }` blocks on one line or many, and the file:line of every statement. `summarize` turns the
tree into what the linter and the agent compare (VRRP instances, track files, scripts), each value with the
file:line it came from. Values keepalived would reject or ignore become `Issue`s; files that cannot be read and
unbalanced braces raise `KconfError`.
"""

from __future__ import annotations

import glob
import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Generic, Literal, TypeVar

T = TypeVar("T")

Severity = Literal["error", "warning"]

# keepalived's per-instance notify keywords (vrrp_parser.c); each takes a command line.
NOTIFY_KEYWORDS = (
    "notify",
    "notify_master",
    "notify_backup",
    "notify_fault",
    "notify_stop",
    "notify_deleted",
    "notify_master_rx_lower_pri",
)
# global_defs keywords that name a script keepalived executes.
GLOBAL_SCRIPT_KEYWORDS = ("notify_fifo_script", "vrrp_notify_fifo_script", "lvs_notify_fifo_script")
# keepalived's default weight of a track_file reference that gives none (vrrp_track.c).
TRACK_FILE_DEFAULT_WEIGHT = 1


class KconfError(Exception):
    """The configuration cannot be read at all: an unreadable file, a bad include, unbalanced braces.

    `str()` starts with the file:line that is wrong.
    """


@dataclass(frozen=True)
class Where:
    file: Path
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class Value(Generic[T]):
    value: T
    where: Where
    # True when keepalived.conf does not say it and this is keepalived's default; `where` is then the block's head.
    default: bool = False


@dataclass(frozen=True)
class Stmt:
    keyword: str
    args: tuple[str, ...]
    file: Path
    line: int
    children: tuple[Stmt, ...] = ()
    # Whether `{ }` followed, so an empty block differs from no block.
    block: bool = False

    @property
    def where(self) -> Where:
        return Where(self.file, self.line)


@dataclass(frozen=True)
class Issue:
    """A statement keepalived would refuse or ignore (a bad number, an unknown track_file, an empty include)."""

    severity: Severity
    code: str
    message: str
    where: Where


@dataclass(frozen=True)
class Script:
    kind: str  # the keyword: notify, notify_master, script (vrrp_script), notify_fifo_script, ...
    command: str
    where: Where

    @property
    def path(self) -> str:
        return self.command.split(maxsplit=1)[0] if self.command.strip() else ""


@dataclass(frozen=True)
class TrackFile:
    name: str
    where: Where
    file: Value[Path] | None
    init_file: Value[str] | None
    weight: Value[int] | None  # the definition's default weight for references that give none
    deprecated: bool  # spelled `vrrp_track_file`


@dataclass(frozen=True)
class TrackRef:
    name: str
    weight: Value[int] | None  # None: the reference gives no weight
    where: Where


@dataclass(frozen=True)
class Auth:
    auth_type: Value[str] | None
    auth_pass: Value[str] | None  # only the first 8 characters: all keepalived puts in the advert
    where: Where


@dataclass(frozen=True)
class Vip:
    address: str  # normalised address/prefix: "10.0.0.100/24", "fd00::1/128"
    dev: str | None
    where: Where


@dataclass(frozen=True)
class Instance:
    name: str
    where: Where
    state: Value[str] | None
    interface: Value[str] | None
    virtual_router_id: Value[int] | None
    priority: Value[int]
    advert_int: Value[float]
    version: Value[int]
    nopreempt: Where | None
    authentication: Auth | None
    vips: tuple[Vip, ...]
    unicast_src_ip: Value[str] | None
    unicast_peer: Where | None  # the `unicast_peer` block
    unicast_peers: tuple[Value[str], ...]
    track_files: tuple[TrackRef, ...]
    scripts: tuple[Script, ...]
    keywords: frozenset[str]  # every keyword written in the block, valid or not

    @property
    def family(self) -> int:
        """4 or 6, as keepalived decides it: from the first virtual address (IPv4 when there is none)."""
        if self.vips:
            return ipaddress.ip_interface(self.vips[0].address).version
        return 4

    def notify(self, kind: str = "notify") -> Script | None:
        return next((s for s in self.scripts if s.kind == kind), None)


@dataclass(frozen=True)
class SyncGroup:
    name: str
    where: Where
    members: tuple[Value[str], ...]
    scripts: tuple[Script, ...]


@dataclass(frozen=True)
class GlobalDefs:
    where: Where | None  # the first global_defs block
    enable_script_security: Where | None
    script_user: Value[str] | None
    vrrp_notify_fifo: Value[Path] | None
    vrrp_version: Value[int] | None


@dataclass(frozen=True)
class Summary:
    path: Path
    statements: tuple[Stmt, ...]
    global_defs: GlobalDefs
    track_files: dict[str, TrackFile]
    instances: dict[str, Instance]
    sync_groups: dict[str, SyncGroup]
    scripts: tuple[Script, ...]  # every script keepalived may execute, wherever it is configured
    issues: tuple[Issue, ...]


# --- syntax -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Token:
    text: str
    quoted: bool
    where: Where

    @property
    def brace(self) -> str | None:
        return self.text if not self.quoted and self.text in ("{", "}") else None


def _split_line(raw: str, where: Where) -> list[_Token]:
    """One line's words: `#` and `!` start a comment, `"..."` is one word, `{` and `}` are words of their own."""
    tokens: list[_Token] = []
    word: list[str] = []
    i = 0

    def flush() -> None:
        if word:
            tokens.append(_Token("".join(word), False, where))
            word.clear()

    while i < len(raw):
        c = raw[i]
        if c in "#!":
            break
        if c.isspace():
            flush()
        elif c in "{}":
            flush()
            tokens.append(_Token(c, False, where))
        elif c == '"':
            flush()
            end = raw.find('"', i + 1)
            if end < 0:
                raise KconfError(f"{where}: unterminated quoted string")
            tokens.append(_Token(raw[i + 1 : end], True, where))
            i = end
        else:
            word.append(c)
        i += 1
    flush()
    return tokens


class _Reader:
    """Reads a file and its includes as one stream of tokens; remembers include patterns that matched nothing."""

    def __init__(self) -> None:
        self.empty_includes: list[Issue] = []

    def tokens(self, path: Path, chain: tuple[Path, ...] = (), origin: Where | None = None) -> Iterator[_Token]:
        try:
            text = path.read_bytes().decode("utf-8", errors="replace")
        except OSError as exc:
            why = exc.strerror or type(exc).__name__
            if origin is None:
                raise KconfError(f"{path}: cannot read: {why}") from exc
            raise KconfError(f"{origin}: cannot read included file {path}: {why}") from exc
        chain = (*chain, path.resolve())
        for number, raw in enumerate(text.splitlines(), start=1):
            where = Where(path, number)
            words = _split_line(raw, where)
            if words and words[0].text == "include" and not words[0].quoted:
                yield from self._include(words[1:], path, chain, where)
            else:
                yield from words

    def _include(self, args: list[_Token], path: Path, chain: tuple[Path, ...], where: Where) -> Iterator[_Token]:
        if len(args) != 1:
            raise KconfError(f"{where}: include takes exactly one path or pattern (got {len(args)})")
        pattern = args[0].text
        full = Path(pattern) if pattern.startswith("/") else path.parent / pattern
        if glob.has_magic(str(full)):
            matches = [Path(m) for m in sorted(glob.glob(str(full)))]
            if not matches:
                # keepalived only warns about a pattern that matches nothing (an empty conf.d is legitimate).
                self.empty_includes.append(
                    Issue("warning", "include-empty", f"include {pattern!r} matches no file ({full})", where)
                )
        else:
            if not full.exists():
                raise KconfError(f"{where}: include {pattern!r}: no such file ({full})")
            matches = [full]
        for match in matches:
            if match.resolve() in chain:
                cycle = " -> ".join(str(p) for p in (*chain, match.resolve()))
                raise KconfError(f"{where}: include cycle: {cycle}")
            yield from self.tokens(match, chain, where)


@dataclass
class _Node:
    keyword: str
    args: list[str]
    where: Where
    children: list[_Node] = field(default_factory=list)
    block: bool = False

    def freeze(self) -> Stmt:
        return Stmt(
            self.keyword,
            tuple(self.args),
            self.where.file,
            self.where.line,
            tuple(c.freeze() for c in self.children),
            self.block,
        )


def _build(tokens: Iterator[_Token]) -> list[_Node]:
    root: list[_Node] = []
    open_blocks: list[_Node] = []
    words: list[_Token] = []

    def level() -> list[_Node]:
        return open_blocks[-1].children if open_blocks else root

    def flush() -> _Node | None:
        if not words:
            return None
        node = _Node(words[0].text, [w.text for w in words[1:]], words[0].where)
        level().append(node)
        words.clear()
        return node

    for tok in tokens:
        if words and tok.where != words[0].where:
            flush()
        if tok.brace == "{":
            node = flush()
            if node is None:
                # `{` on a line of its own opens the block of the statement just before it.
                siblings = level()
                if not siblings or siblings[-1].block:
                    raise KconfError(f"{tok.where}: '{{' without a keyword before it")
                node = siblings[-1]
            node.block = True
            open_blocks.append(node)
        elif tok.brace == "}":
            flush()
            if not open_blocks:
                raise KconfError(f"{tok.where}: unbalanced braces: '}}' closes no open block")
            open_blocks.pop()
        else:
            words.append(tok)
    flush()
    if open_blocks:
        node = open_blocks[-1]
        raise KconfError(f"{node.where}: unbalanced braces: '{node.keyword}' block opened here is never closed")
    return root


def parse(path: Path) -> tuple[Stmt, ...]:
    """The statement tree of `path` with its includes expanded in place."""
    return _parse(path, _Reader())


def _parse(path: Path, reader: _Reader) -> tuple[Stmt, ...]:
    return tuple(node.freeze() for node in _build(reader.tokens(path)))


# --- summary ------------------------------------------------------------------------------------------------


class _Summarizer:
    def __init__(self) -> None:
        self.issues: list[Issue] = []

    def bad(self, stmt: Stmt, message: str, severity: Severity = "error") -> None:
        self.issues.append(Issue(severity, "bad-value", f"{stmt.keyword}: {message}", stmt.where))

    def arg(self, stmt: Stmt) -> str | None:
        if not stmt.args:
            self.bad(stmt, "needs a value")
            return None
        return stmt.args[0]

    def integer(self, stmt: Stmt, low: int, high: int) -> Value[int] | None:
        text = self.arg(stmt)
        if text is None:
            return None
        try:
            number = int(text)
        except ValueError:
            number = None
        if number is None or not low <= number <= high:
            self.bad(stmt, f"must be an integer from {low} to {high} (got {text!r})")
            return None
        return Value(number, stmt.where)

    def address(self, stmt: Stmt, text: str) -> str | None:
        try:
            return str(ipaddress.ip_address(text))
        except ValueError:
            self.bad(stmt, f"not an IP address (got {text!r})")
            return None

    def global_defs(self, blocks: list[Stmt]) -> GlobalDefs:
        security: Where | None = None
        user: Value[str] | None = None
        fifo: Value[Path] | None = None
        version: Value[int] | None = None
        for stmt in (c for b in blocks for c in b.children):
            if stmt.keyword == "enable_script_security":
                security = stmt.where
            elif stmt.keyword == "script_user" and (text := self.arg(stmt)) is not None:
                user = Value(text, stmt.where)
            elif stmt.keyword == "vrrp_notify_fifo" and (text := self.arg(stmt)) is not None:
                fifo = Value(Path(text), stmt.where)
            elif stmt.keyword == "vrrp_version":
                version = self.integer(stmt, 2, 3) or version
        return GlobalDefs(blocks[0].where if blocks else None, security, user, fifo, version)

    def track_file(self, stmt: Stmt) -> TrackFile | None:
        if not stmt.args:
            self.bad(stmt, "needs a name")
            return None
        path: Value[Path] | None = None
        init: Value[str] | None = None
        weight: Value[int] | None = None
        for child in stmt.children:
            if child.keyword == "file" and (text := self.arg(child)) is not None:
                path = Value(Path(text), child.where)
            elif child.keyword == "init_file":
                init = Value(" ".join(child.args), child.where)
            elif child.keyword == "weight":
                weight = self.integer(child, -254, 254)
        if path is None:
            self.issues.append(Issue("error", "bad-value", f"{stmt.keyword} {stmt.args[0]}: has no `file`", stmt.where))
        return TrackFile(stmt.args[0], stmt.where, path, init, weight, stmt.keyword == "vrrp_track_file")

    def scripts(self, stmt: Stmt, keywords: tuple[str, ...]) -> list[Script]:
        found = []
        for child in stmt.children:
            if child.keyword in keywords and child.args:
                found.append(Script(child.keyword, " ".join(child.args), child.where))
        return found

    def instance(self, stmt: Stmt, global_version: Value[int] | None) -> Instance:
        head = stmt.where
        state = interface = None
        vrid = src = None
        priority = Value(100, head, default=True)
        advert = Value(1.0, head, default=True)
        version = global_version or Value(2, head, default=True)
        nopreempt = auth = peer_block = None
        vips: list[Vip] = []
        peers: list[Value[str]] = []
        tracks: list[TrackRef] = []
        for child in stmt.children:
            key = child.keyword
            if key == "state" and (text := self.arg(child)) is not None:
                if text not in ("MASTER", "BACKUP"):
                    self.bad(child, f"must be MASTER or BACKUP (got {text!r})")
                state = Value(text, child.where)
            elif key == "interface" and (text := self.arg(child)) is not None:
                interface = Value(text, child.where)
            elif key == "virtual_router_id":
                vrid = self.integer(child, 1, 255)
            elif key == "priority":
                priority = self.integer(child, 1, 255) or priority
            elif key == "advert_int" and (text := self.arg(child)) is not None:
                try:
                    seconds = float(text)
                except ValueError:
                    seconds = 0.0
                if not 0 < seconds <= 255:
                    self.bad(child, f"must be a number of seconds above 0, at most 255 (got {text!r})")
                else:
                    advert = Value(seconds, child.where)
            elif key == "version":
                version = self.integer(child, 2, 3) or version
            elif key == "nopreempt":
                nopreempt = child.where
            elif key == "authentication":
                auth = self.authentication(child)
            elif key == "virtual_ipaddress":
                vips += self.vips(child)
            elif key == "unicast_src_ip" and (text := self.arg(child)) is not None:
                if (address := self.address(child, text)) is not None:
                    src = Value(address, child.where)
            elif key == "unicast_peer":
                peer_block = child.where
                for entry in child.children:
                    if (address := self.address(entry, entry.keyword)) is not None:
                        peers.append(Value(address, entry.where))
            elif key == "track_file":
                for entry in child.children:
                    weight = None
                    if entry.args[:1] == ("weight",):
                        weight = self.integer(Stmt("weight", entry.args[1:], entry.file, entry.line), -254, 254)
                    tracks.append(TrackRef(entry.keyword, weight, entry.where))
        return Instance(
            name=stmt.args[0],
            where=head,
            state=state,
            interface=interface,
            virtual_router_id=vrid,
            priority=priority,
            advert_int=advert,
            version=version,
            nopreempt=nopreempt,
            authentication=auth,
            vips=tuple(vips),
            unicast_src_ip=src,
            unicast_peer=peer_block,
            unicast_peers=tuple(peers),
            track_files=tuple(tracks),
            scripts=tuple(self.scripts(stmt, NOTIFY_KEYWORDS)),
            keywords=frozenset(c.keyword for c in stmt.children),
        )

    def authentication(self, stmt: Stmt) -> Auth:
        auth_type = auth_pass = None
        for child in stmt.children:
            if child.keyword == "auth_type" and (text := self.arg(child)) is not None:
                if text not in ("PASS", "AH"):
                    self.bad(child, f"must be PASS or AH (got {text!r})")
                auth_type = Value(text, child.where)
            elif child.keyword == "auth_pass" and (text := self.arg(child)) is not None:
                auth_pass = Value(text[:8], child.where)
        return Auth(auth_type, auth_pass, stmt.where)

    def vips(self, stmt: Stmt) -> list[Vip]:
        found = []
        for entry in stmt.children:
            try:
                # Without a prefix keepalived adds a host address (/32, /128), which ip_interface assumes too.
                address = str(ipaddress.ip_interface(entry.keyword))
            except ValueError:
                self.bad(entry, f"not an address[/prefix] in virtual_ipaddress (got {entry.keyword!r})")
                continue
            args = list(entry.args)
            dev = args[args.index("dev") + 1] if "dev" in args[:-1] else None
            found.append(Vip(address, dev, entry.where))
        return found

    def sync_group(self, stmt: Stmt) -> SyncGroup:
        members = [
            Value(entry.keyword, entry.where)
            for child in stmt.children
            if child.keyword == "group"
            for entry in child.children
        ]
        return SyncGroup(stmt.args[0], stmt.where, tuple(members), tuple(self.scripts(stmt, NOTIFY_KEYWORDS)))


def summarize(path: Path, statements: tuple[Stmt, ...]) -> Summary:
    s = _Summarizer()
    globals_ = s.global_defs([st for st in statements if st.keyword == "global_defs"])
    scripts: list[Script] = []
    for st in statements:
        if st.keyword == "global_defs":
            scripts += s.scripts(st, GLOBAL_SCRIPT_KEYWORDS)
        elif st.keyword == "vrrp_script":
            scripts += s.scripts(st, ("script",))
    track_files: dict[str, TrackFile] = {}
    instances: dict[str, Instance] = {}
    groups: dict[str, SyncGroup] = {}
    for st in statements:
        if st.keyword in ("track_file", "vrrp_track_file") and st.block:
            if (track := s.track_file(st)) is not None:
                track_files[track.name] = track
        elif st.keyword in ("vrrp_instance", "vrrp_sync_group"):
            if len(st.args) != 1:
                s.bad(st, f"needs exactly one name (got {len(st.args)})")
                continue
            earlier = (instances if st.keyword == "vrrp_instance" else groups).get(st.args[0])
            if earlier is not None:
                message = f"{st.keyword} {st.args[0]} is already defined at {earlier.where}"
                s.issues.append(Issue("error", "duplicate-name", message, st.where))
                continue
            if st.keyword == "vrrp_instance":
                instances[st.args[0]] = inst = s.instance(st, globals_.vrrp_version)
                scripts += inst.scripts
            else:
                groups[st.args[0]] = group = s.sync_group(st)
                scripts += group.scripts
    for inst in instances.values():
        for ref in inst.track_files:
            if ref.name not in track_files:
                s.issues.append(
                    Issue(
                        "error",
                        "track-file-unknown",
                        f"instance {inst.name} tracks {ref.name!r}, which no track_file block defines "
                        "(keepalived ignores the reference)",
                        ref.where,
                    )
                )
    return Summary(
        path=path,
        statements=statements,
        global_defs=globals_,
        track_files=track_files,
        instances=instances,
        sync_groups=groups,
        scripts=tuple(scripts),
        issues=tuple(s.issues),
    )


def load(path: Path) -> Summary:
    """Parse `path` (and its includes) and summarize it; raises KconfError when it cannot be read."""
    reader = _Reader()
    statements = _parse(path, reader)
    summary = summarize(path, statements)
    if reader.empty_includes:
        summary = replace(summary, issues=tuple(reader.empty_includes) + summary.issues)
    return summary
