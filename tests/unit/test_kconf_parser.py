"""The keepalived.conf parser: syntax (includes, comments, quotes, blocks) and the typed summary, with file:line."""

from __future__ import annotations

from pathlib import Path

import pytest

from arbiter.kconf.parser import KconfError, Stmt, load, parse
from tests.unit.kconf_data import DATA, NODE_A, NODE_B, line_of


def child(stmt: Stmt, keyword: str) -> Stmt:
    (found,) = [c for c in stmt.children if c.keyword == keyword]
    return found


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_the_example_parses_into_blocks_with_their_lines() -> None:
    tree = parse(NODE_A)
    assert [s.keyword for s in tree] == ["global_defs", "track_file", "vrrp_instance"]
    inst = tree[2]
    assert inst.args == ("VI_1",)
    assert inst.line == line_of(NODE_A, "vrrp_instance VI_1 {")
    # A commented-out statement is not one.
    assert [c.keyword for c in tree[0].children] == ["router_id", "enable_script_security", "script_user"]
    peer = child(inst, "unicast_peer")
    assert [(c.keyword, c.line) for c in peer.children] == [("10.0.0.2", line_of(NODE_A, "10.0.0.2"))]
    assert child(inst, "notify").args == ("/usr/local/bin/keepalived-arbiter-notify",)


def test_one_line_blocks_a_brace_on_its_own_line_and_bang_comments() -> None:
    tree = parse(NODE_B)
    globals_ = tree[0]
    assert (globals_.keyword, globals_.block, globals_.line) == ("global_defs", True, line_of(NODE_B, "global_defs"))
    assert child(globals_, "router_id").args == ("node-b",)  # the `# this node` comment is gone
    inst = tree[2]
    peer = child(inst, "unicast_peer")
    assert [c.keyword for c in peer.children] == ["10.0.0.1"]
    assert peer.children[0].line == peer.line
    (track,) = child(inst, "track_file").children
    assert (track.keyword, track.args) == ("arbiter_VI_1", ("weight", "0"))
    # The statement after a one-line block is a sibling again.
    assert [c.keyword for c in inst.children][-2:] == ["track_file", "notify"]


def test_quotes_keep_spaces_and_comment_characters(tmp_path: Path) -> None:
    conf = write(
        tmp_path / "k.conf",
        'vrrp_script chk { script "/usr/bin/check --tag #1 !x"   # a comment\n}\nempty {\n}\n',
    )
    script, empty = parse(conf)
    assert child(script, "script").args == ("/usr/bin/check --tag #1 !x",)
    assert (empty.block, empty.children) == (True, ())


def test_includes_are_relative_to_the_including_file_and_keep_their_lines(tmp_path: Path) -> None:
    main = write(tmp_path / "keepalived.conf", "global_defs {\n}\ninclude sub/*.conf\n")
    write(tmp_path / "sub" / "b.conf", "# second by name\nvrrp_instance VI_B {\n}\n")
    write(tmp_path / "sub" / "a.conf", "include nested/x.conf\n")
    write(tmp_path / "sub" / "nested" / "x.conf", "\n\nvrrp_instance VI_A {\n  virtual_router_id 7\n}\n")
    tree = parse(main)
    assert [(s.keyword, s.args, s.file, s.line) for s in tree] == [
        ("global_defs", (), main, 1),
        ("vrrp_instance", ("VI_A",), tmp_path / "sub" / "nested" / "x.conf", 3),
        ("vrrp_instance", ("VI_B",), tmp_path / "sub" / "b.conf", 2),
    ]
    assert load(main).instances["VI_A"].virtual_router_id is not None


def test_an_include_inside_a_block_adds_to_that_block(tmp_path: Path) -> None:
    main = write(tmp_path / "k.conf", "vrrp_instance VI_1 {\n    include vips.conf\n}\n")
    write(tmp_path / "vips.conf", "virtual_ipaddress {\n    10.1.0.1/24\n}\n")
    summary = load(main)
    (vip,) = summary.instances["VI_1"].vips
    assert (vip.address, vip.where.file, vip.where.line) == ("10.1.0.1/24", tmp_path / "vips.conf", 2)


@pytest.mark.parametrize(
    ("name", "where_file", "planted", "says"),
    [
        ("unbalanced-open.conf", "unbalanced-open.conf", "vrrp_instance VI_1 {", "never closed"),
        (
            "unterminated-quote.conf",
            "unterminated-quote.conf",
            'notify "/usr/local/bin/keepalived-arbiter-notify',
            "quoted",
        ),
        ("missing-include.conf", "missing-include.conf", "include no-such-file.conf", "no such file"),
        ("cycle/top.conf", "cycle/middle.conf", "include top.conf", "include cycle"),
    ],
)
def test_unusable_files_raise_with_file_and_line(name: str, where_file: str, planted: str, says: str) -> None:
    with pytest.raises(KconfError) as exc:
        load(DATA / name)
    path = DATA / where_file
    assert str(exc.value).startswith(f"{path}:{line_of(path, planted)}: ")
    assert says in str(exc.value)


def test_a_stray_closing_brace_names_its_line() -> None:
    path = DATA / "unbalanced-close.conf"
    last = len(path.read_text().splitlines())
    assert path.read_text().splitlines()[-1] == "}"
    with pytest.raises(KconfError, match=rf"^{path}:{last}: unbalanced braces: '}}' closes no open block"):
        load(path)


def test_an_unreadable_file_and_an_unreadable_include(tmp_path: Path) -> None:
    with pytest.raises(KconfError, match=rf"^{tmp_path}/absent.conf: cannot read: "):
        load(tmp_path / "absent.conf")
    (tmp_path / "adir").mkdir()
    main = write(tmp_path / "k.conf", "global_defs {\n}\ninclude adir\n")
    with pytest.raises(KconfError, match=rf"^{main}:3: cannot read included file {tmp_path}/adir: "):
        load(main)


def test_including_the_same_file_twice_is_not_a_cycle(tmp_path: Path) -> None:
    main = write(tmp_path / "k.conf", "include part.conf\ninclude part.conf\n")
    write(tmp_path / "part.conf", "vrrp_script s {\n}\n")
    assert [s.keyword for s in parse(main)] == ["vrrp_script", "vrrp_script"]


@pytest.mark.parametrize(
    ("field", "value", "planted"),
    [
        ("state", "BACKUP", "state BACKUP"),
        ("interface", "eth0", "interface eth0"),
        ("virtual_router_id", 51, "virtual_router_id 51"),
        ("priority", 150, "priority 150"),
        ("advert_int", 1.0, "advert_int 1"),
        ("version", 2, "version 2"),
        ("unicast_src_ip", "10.0.0.1", "unicast_src_ip 10.0.0.1"),
    ],
)
def test_the_summary_keeps_each_value_and_its_line(field: str, value: object, planted: str) -> None:
    inst = load(NODE_A).instances["VI_1"]
    got = getattr(inst, field)
    assert (got.value, got.where.file, got.where.line, got.default) == (value, NODE_A, line_of(NODE_A, planted), False)


def test_the_summary_of_the_example() -> None:
    s = load(NODE_A)
    assert s.global_defs.enable_script_security is not None
    assert s.global_defs.script_user is not None and s.global_defs.script_user.value == "root"
    assert s.global_defs.vrrp_notify_fifo is None  # commented out in the example
    track = s.track_files["arbiter_VI_1"]
    assert track.file is not None and track.file.value == Path("/run/keepalived-arbiter/VI_1.gate")
    assert track.init_file is not None and track.init_file.value == "1 overwrite"
    assert not track.deprecated
    inst = s.instances["VI_1"]
    assert inst.nopreempt is None
    assert [p.value for p in inst.unicast_peers] == ["10.0.0.2"]
    assert inst.authentication is not None and inst.authentication.auth_pass is not None
    assert (inst.authentication.auth_type and inst.authentication.auth_type.value) == "PASS"
    assert [(v.address, v.dev) for v in inst.vips] == [("10.0.0.100/24", "eth0")]
    (ref,) = inst.track_files
    assert (ref.name, ref.weight and ref.weight.value) == ("arbiter_VI_1", 0)
    assert [(x.kind, x.path) for x in s.scripts] == [("notify", "/usr/local/bin/keepalived-arbiter-notify")]
    assert s.issues == ()


def test_node_b_spellings_summarise_the_same() -> None:
    s = load(NODE_B)
    assert s.track_files["arbiter_VI_1"].deprecated  # vrrp_track_file
    inst = s.instances["VI_1"]
    assert inst.authentication is not None and inst.authentication.auth_pass is not None
    assert inst.authentication.auth_pass.value == "Ch4ngeMe"  # only the first 8 characters count
    assert inst.advert_int.value == 1.0
    # No `version` line: keepalived's default, located at the instance's head.
    assert (inst.version.value, inst.version.default, inst.version.where.line) == (2, True, inst.where.line)


def test_addresses_versions_and_sync_groups(tmp_path: Path) -> None:
    conf = write(
        tmp_path / "k.conf",
        "global_defs {\n    vrrp_version 3\n    vrrp_notify_fifo /run/k.fifo\n}\n"
        "vrrp_sync_group G {\n    group {\n        V4\n        V6\n    }\n    notify /bin/g\n}\n"
        "vrrp_instance V4 {\n    virtual_router_id 1\n    version 2\n    virtual_ipaddress {\n"
        "        10.0.0.5\n        10.0.0.6/16 brd 10.0.255.255 dev eth1 label eth1:0\n    }\n}\n"
        "vrrp_instance V6 {\n    virtual_router_id 1\n    virtual_ipaddress {\n        FD00::0001/64\n    }\n"
        "    unicast_peer {\n        FD00:0::2 min_ttl 2\n    }\n}\n",
    )
    s = load(conf)
    v4, v6 = s.instances["V4"], s.instances["V6"]
    assert [(v.address, v.dev) for v in v4.vips] == [("10.0.0.5/32", None), ("10.0.0.6/16", "eth1")]
    assert [v.address for v in v6.vips] == ["fd00::1/64"]
    assert [p.value for p in v6.unicast_peers] == ["fd00::2"]
    assert (v4.family, v6.family) == (4, 6)
    assert (v4.version.value, v6.version.value, v6.version.where.line) == (2, 3, 2)  # v6 from vrrp_version
    assert s.global_defs.vrrp_notify_fifo is not None and s.global_defs.vrrp_notify_fifo.value == Path("/run/k.fifo")
    group = s.sync_groups["G"]
    assert [m.value for m in group.members] == ["V4", "V6"]
    assert [x.command for x in s.scripts] == ["/bin/g"]


@pytest.mark.parametrize(
    ("statement", "says"),
    [
        ("virtual_router_id 0", "virtual_router_id: must be an integer from 1 to 255 (got '0')"),
        ("priority high", "priority: must be an integer from 1 to 255 (got 'high')"),
        ("advert_int 0", "advert_int: must be a number of seconds above 0, at most 255 (got '0')"),
        ("state PRIMARY", "state: must be MASTER or BACKUP (got 'PRIMARY')"),
        ("unicast_src_ip 10.0.0.300", "unicast_src_ip: not an IP address (got '10.0.0.300')"),
        ("interface", "interface: needs a value"),
    ],
)
def test_bad_values_become_issues_naming_the_value(tmp_path: Path, statement: str, says: str) -> None:
    conf = write(tmp_path / "k.conf", f"vrrp_instance VI_1 {{\n    virtual_router_id 9\n    {statement}\n}}\n")
    (issue,) = load(conf).issues
    assert (issue.code, issue.message, issue.where.line) == ("bad-value", says, 3)
