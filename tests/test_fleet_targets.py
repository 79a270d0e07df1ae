"""rshell.fleet.targets: target lists (SPEC §11), by example tables, every
error, and properties against a reference expansion written independently."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rshell.errors import UsageError
from rshell.fleet.targets import MAX_HOSTS, MAX_RANGE, expand, expand_all, fold

GROUPS: dict[str, list[str]] = {
    "web": ["web[01-20]", "web1"],  # SPEC §11's example
    "db": ["db1,db2"],
    "all": ["@web", "@db", "db1"],
    "one": ["solo"],
}


def dedup(names: list[str]) -> list[str]:
    return list(dict.fromkeys(names))


# ---- examples ----------------------------------------------------------------------


@pytest.mark.parametrize(("text", "hosts"), [
    ("web1", ["web1"]),
    ("web1,web2,db1", ["web1", "web2", "db1"]),
    ("web[01-03,07]", ["web01", "web02", "web03", "web07"]),
    ("web[01-20,33]", [f"web{n:02d}" for n in range(1, 21)] + ["web33"]),
    ("n[8-10]", ["n8", "n9", "n10"]),
    ("n[01-10]", [f"n{n:02d}" for n in range(1, 11)]),
    ("n[098-101]", ["n098", "n099", "n100", "n101"]),
    ("n[01-100]", [f"n{n:02d}" for n in range(1, 101)]),
    ("n[1-3]", ["n1", "n2", "n3"]),
    ("n[0-2]", ["n0", "n1", "n2"]),
    ("n[00-02]", ["n00", "n01", "n02"]),
    ("n[007]", ["n007"]),
    ("n[5]", ["n5"]),
    ("[1-3]", ["1", "2", "3"]),
    ("[1-2]x", ["1x", "2x"]),
    ("r[1-2]n[1-2]", ["r1n1", "r1n2", "r2n1", "r2n2"]),
    ("r[1-2]-n[01-02].lan", ["r1-n01.lan", "r1-n02.lan", "r2-n01.lan", "r2-n02.lan"]),
    ("n[3,1,2]", ["n3", "n1", "n2"]),
    ("n[1-3,2-4]", ["n1", "n2", "n3", "n4"]),
    ("b,a,b,a", ["b", "a"]),
    ("a,n[1-2],n1,a", ["a", "n1", "n2"]),
    (" a , b ", ["a", "b"]),
    ("host:7722", ["host:7722"]),
    ("127.0.0.1:[7000-7002]", ["127.0.0.1:7000", "127.0.0.1:7001", "127.0.0.1:7002"]),
    ("[::1]:7722", ["[::1]:7722"]),
    ("[2001:db8::1]", ["[2001:db8::1]"]),
    ("[::1]:[1-2],::1", ["[::1]:1", "[::1]:2", "::1"]),
    ("ssh://me@web[1-2]:22", ["ssh://me@web1:22", "ssh://me@web2:22"]),
    ("ssh://web[1-2]", ["ssh://web1", "ssh://web2"]),
    ("ssh://me@[::1]:22,ssh://[::1]", ["ssh://me@[::1]:22", "ssh://[::1]"]),
    ("web1,ssh://me@db1", ["web1", "ssh://me@db1"]),
])
def test_expand_examples(text: str, hosts: list[str]) -> None:
    assert expand(text) == hosts


@pytest.mark.parametrize(("text", "hosts"), [
    ("@one", ["solo"]),
    ("@web", [f"web{n:02d}" for n in range(1, 21)] + ["web1"]),
    ("@db,db3", ["db1", "db2", "db3"]),
    ("db2,@all", ["db2"] + [f"web{n:02d}" for n in range(1, 21)] + ["web1", "db1"]),
    ("@one,@one,solo", ["solo"]),
])
def test_groups(text: str, hosts: list[str]) -> None:
    assert expand(text, GROUPS) == hosts


def test_a_group_given_as_one_string_is_one_member() -> None:
    assert expand("@g", {"g": "a[1-2]"}) == ["a1", "a2"]


def test_shared_groups_are_expanded_once() -> None:
    """A diamond of 40 levels names 2**40 paths; each group is expanded once."""
    groups = {f"g{i}": [f"@g{i + 1}", f"@g{i + 1}", f"h{i}"] for i in range(40)}
    groups["g40"] = ["leaf"]
    assert expand("@g0", groups) == ["leaf", *(f"h{i}" for i in range(39, -1, -1))]


# ---- errors ------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "message"), [
    ("", "empty target in ''"),
    ("a,,b", "empty target in 'a,,b'"),
    ("a,", "empty target in 'a,'"),
    ("web[1-3", "bad target 'web[1-3': '[' without ']'"),
    ("web1-3]", "bad target 'web1-3]': ']' without '['"),
    ("web[1-[2]]", "bad target 'web[1-[2]]': nested '['"),
    ("web[]", "bad target 'web[]': empty '[]'"),
    ("web[a-c]", "bad range 'a-c' in target 'web[a-c]': expected N or N-M"),
    ("web[1,]", "bad range '' in target 'web[1,]': expected N or N-M"),
    ("web[-1]", "bad range '-1' in target 'web[-1]': expected N or N-M"),
    ("web[1-2-3]", "bad range '1-2-3' in target 'web[1-2-3]'"),
    ("web[١-٣]", "bad range '١-٣' in target 'web[١-٣]'"),
    ("web[3-1]", "bad range '3-1' in target 'web[3-1]': 3 > 1"),
    ("web[1-010]", "'1-010' in target 'web[1-010]': both ends must be written with the same"),
    ("web[01-003]", "both ends must be written with the same zero padding"),
    ("web[1-99999999]", f"bad range '1-99999999' in target 'web[1-99999999]': wider than "
                        f"{MAX_RANGE:,}"),
    ("n[1-1000]m[1-1000]", f"target 'n[1-1000]m[1-1000]' names more than {MAX_HOSTS:,} hosts"),
    ("n[1-60000],m[1-60000]", f"names more than {MAX_HOSTS:,} hosts"),
    ("n[" + "9" * 21 + "]", "numbers of at most 20 digits"),
    ("a b", "bad target 'a b': contains white space"),
    ("@", "empty group name '@'"),
    ("@nope", "unknown group @nope (no groups are defined)"),
])
def test_expand_errors(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=re.escape(message)) as info:
        expand(text)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("groups", "text", "message"), [
    ({"a": ["x"]}, "@b", "unknown group @b"),
    ({"a": ["@b"]}, "@a", "unknown group @b (in group @a)"),
    ({"a": ["web[1-"]}, "@a", "bad target 'web[1-' (in group @a): '[' without ']'"),
    ({"a": ["@a"]}, "@a", "group @a includes itself: @a -> @a"),
    ({"a": ["x", "@b"], "b": ["@c"], "c": ["@a"]}, "z,@a",
     "group @a includes itself: @a -> @b -> @c -> @a"),
    ({"a": ["n[1-60000]", "m[1-60000]"]}, "@a", f"group @a names more than {MAX_HOSTS:,}"),
])
def test_group_errors(groups: dict[str, list[str]], text: str, message: str) -> None:
    with pytest.raises(UsageError, match=re.escape(message)) as info:
        expand(text, groups)
    assert "\n" not in str(info.value)


def test_a_group_of_duplicates_is_within_bounds() -> None:
    assert expand("@a,n1", {"a": ["n[1-60000]", "n[1-60000]"]}) == [
        f"n{i}" for i in range(1, 60001)
    ]


# ---- several arguments and host files ----------------------------------------------


def test_expand_all_arguments_then_files_deduplicated(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text(
        "# the fleet\n\nweb[1-3]\n  db1  # primary\n@db\n\t\nssh://me@[::1]:22\nweb1\n",
        encoding="utf-8",
    )
    other = tmp_path / "other"
    other.write_text("z\r\nweb2\r\n", encoding="utf-8")
    got = expand_all(["web2,x", "@one"], GROUPS, [str(hosts), str(other)])
    assert got == ["web2", "x", "solo", "web1", "web3", "db1", "db2", "ssh://me@[::1]:22", "z"]


def test_expand_all_with_nothing_is_empty(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("# nothing\n\n", encoding="utf-8")
    assert expand_all([]) == []
    assert expand_all([], files=[str(empty)]) == []


@pytest.mark.parametrize(("content", "message"), [
    (b"a\nweb[1-\n", "bad target 'web[1-' ({path}, line 2): '[' without ']'"),
    (b"@nope\n", "unknown group @nope ({path}, line 1)"),
    (b"a\n\xff\n", "host file {path} is not UTF-8 text (byte 2)"),
    (b"a" * (16 * 1024 * 1024 + 1), "host file {path} is larger than 16 MiB"),
])
def test_host_file_errors(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "hosts"
    path.write_bytes(content)
    with pytest.raises(UsageError, match=re.escape(message.format(path=path))):
        expand_all([], {"x": ["y"]}, [str(path)])


def test_missing_host_file(tmp_path: Path) -> None:
    path = tmp_path / "absent"
    with pytest.raises(UsageError, match=re.escape(f"cannot read host file {path}: No such")):
        expand_all(["a"], files=[str(path)])


def test_errors_in_arguments_name_the_argument() -> None:
    with pytest.raises(UsageError, match=re.escape("bad range '2-1' in target 'b[2-1]'")):
        expand_all(["a", "b[2-1]"])


# ---- fold --------------------------------------------------------------------------


@pytest.mark.parametrize(("hosts", "folded"), [
    ([], ""),
    (["x"], "x"),
    (["db1"], "db1"),
    (["web01", "web02", "web03", "web07", "db1"], "db1,web[01-03,07]"),
    (["web10", "web2", "web1"], "web[1-2,10]"),
    (["web09", "web10", "web11"], "web[09-11]"),
    (["n7", "n07", "n8", "n08"], "n[7-8],n[07-08]"),
    (["n098", "n099", "n100", "n101"], "n[098-101]"),
    (["a1-eth0", "a2-eth0", "a3-eth1"], "a[1-2]-eth0,a3-eth1"),
    (["r1n1", "r1n2", "r1n3", "r2n1", "r2n2", "r2n3"], "r1n[1-3],r2n[1-3]"),
    (["h:7000", "h:7001", "h:7002"], "h:[7000-7002]"),
    (["ssh://u1@h1", "ssh://u1@h2", "ssh://u2@h1"], "ssh://u1@h[1-2],ssh://u2@h1"),
    (["[::1]:7722", "[::1]:7723"], "[::1]:7722,[::1]:7723"),
    (["b", "a", "b"], "a,b"),
    (["a1b1", "a2b2"], "a1b1,a2b2"),
    (["r1n1", "r1n2", "r2n1", "r2n2"], "r1n[1-2],r2n[1-2]"),  # a tie: the last run varies
])
def test_fold_examples(hosts: list[str], folded: str) -> None:
    assert fold(hosts) == folded
    assert set(expand(folded)) == set(hosts) if hosts else folded == ""


# ---- properties --------------------------------------------------------------------

plain = st.from_regex(r"[a-z][a-z0-9.\-]{0,8}", fullmatch=True)
simple = st.builds(
    lambda stem, digits, tail: f"{stem}{digits}{tail}",
    st.sampled_from(["web", "db", "x", "n", "a-", "rack1-n"]),
    st.one_of(st.just(""), st.from_regex(r"[0-9]{1,4}", fullmatch=True)),
    st.sampled_from(["", "", ".lan", "-eth0"]),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(plain, min_size=1, max_size=30))
def test_a_comma_list_of_plain_names_is_its_dedup(names: list[str]) -> None:
    assert expand(",".join(names)) == dedup(names)


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 5000), st.integers(0, 300), st.integers(1, 5), st.booleans())
def test_a_range_has_b_minus_a_plus_one_names_of_its_width(
    a: int, span: int, width: int, padded: bool
) -> None:
    b = a + span
    pad = max(width, len(str(a))) if padded and width > len(str(a)) else 0
    first = f"{a:0{pad}d}" if pad else str(a)
    names = expand(f"n[{first}-{b}]")
    assert len(names) == b - a + 1
    assert names == [f"n{i:0{pad}d}" for i in range(a, b + 1)]  # the reference expansion
    assert all(len(name) - 1 >= pad for name in names)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 50), st.integers(0, 5)), min_size=1, max_size=5))
def test_a_group_is_its_parts_in_order(parts: list[tuple[int, int]]) -> None:
    spec = ",".join(f"{a}-{a + d}" if d else str(a) for a, d in parts)
    assert expand(f"h[{spec}]") == dedup(
        [f"h{i}" for a, d in parts for i in range(a, a + d + 1)]
    )


@settings(max_examples=150, deadline=None)
@given(st.lists(simple, max_size=40))
def test_fold_then_expand_gives_the_names_back(names: list[str]) -> None:
    folded = fold(names)
    assert set(expand(folded)) == set(names) if names else folded == ""
    assert len(expand(folded)) == len(set(names)) if names else True


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(simple, min_size=1, max_size=6), min_size=1, max_size=6))
def test_order_and_dedup_across_arguments(args: list[list[str]]) -> None:
    flat = [name for arg in args for name in arg]
    assert expand_all([",".join(arg) for arg in args]) == dedup(flat)
    assert expand(",".join(",".join(arg) for arg in args)) == dedup(flat)


def test_groups_nested_too_deep_are_one_line_not_a_recursion_error() -> None:
    groups = {f"g{n}": [f"@g{n + 1}"] for n in range(700)}
    groups["g700"] = ["leaf"]
    with pytest.raises(UsageError, match="nested more than 100 deep"):
        expand("@g0", groups)
    assert expand("@g650", groups) == ["leaf"]
