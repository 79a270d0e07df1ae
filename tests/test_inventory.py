"""rshell.client.inventory: Ansible INI inventories (issue 15, ``--inventory``).

Example inventories in the style of Ansible's own documentation, read into
hosts and groups, the groups expanded through rshell.fleet.targets as a
fleet does; variable precedence as Ansible applies it; ranges by examples
and properties against a reference expansion; every error one line naming
its line; and the inventory used for real by ``rshell.Group`` and ``rshell
hosts`` against a loopback server.
"""

from __future__ import annotations

import ast
import random
import string
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rshell.client import inventory
from rshell.client.config import Config, HostEntry
from rshell.client.inventory import read_inventory
from rshell.errors import ConfigError
from rshell.fleet import targets
from rshell.fleet.targets import expand
from rshell.result import Result
from tests.support.cli import cli, one_line_error
from tests.support.servers import CLIENT_MODE, InProcessServer

Inventory = tuple[dict[str, HostEntry], dict[str, tuple[str, ...]]]
#: The properties write into pytest's tmp_path, which they overwrite each example.
FIXTURE = [HealthCheck.function_scoped_fixture]


def read_text(tmp_path: Path, text: str) -> Inventory:
    path = tmp_path / "hosts.ini"
    path.write_text(text)
    return read_inventory(path)


def error_of(tmp_path: Path, text: str | bytes) -> str:
    """The one-line error the inventory gives, without its file name."""
    path = tmp_path / "hosts.ini"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ConfigError) as caught:
        read_inventory(path)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{path}"), message
    return message[len(str(path)):]


# ---- a realistic inventory ---------------------------------------------------------

DOCS = """\
# Ungrouped hosts come first, as in Ansible's guide.
mail.example.com
badwolf.example.com:5309
jumper ansible_port=5555 ansible_host=192.0.2.50

[webservers]
www[01:03].example.com
foo.example.com ansible_user=deploy   # a host's own variable

[dbservers]
db-[a:c].example.com
one.example.com ansible_host="10.0.0.1"

; the cities, then the regions made of them
[atlanta]
host1
host2

[raleigh]
host2
host3 ansible_ssh_user=legacy

[southeast:children]
atlanta
raleigh

[southeast:vars]
some_server=foo.southeast.example.com
ansible_user = southeast
escape_pods=2

[usa:children]
southeast
northeast

[northeast]
host4 ansible_port=2222 rshell_transport=ssh

[all:vars]
ansible_port=22
ntp_server=ntp.atlanta.example.com
"""


def test_a_realistic_inventory(tmp_path: Path) -> None:
    hosts, groups = read_text(tmp_path, DOCS)
    assert groups == {
        "webservers": ("www01.example.com", "www02.example.com", "www03.example.com",
                       "foo.example.com"),
        "dbservers": ("db-a.example.com", "db-b.example.com", "db-c.example.com",
                      "one.example.com"),
        "atlanta": ("host1", "host2"),
        "raleigh": ("host2", "host3"),
        "southeast": ("@atlanta", "@raleigh"),
        "usa": ("@southeast", "@northeast"),
        "northeast": ("host4",),
        "ungrouped": ("mail.example.com", "badwolf.example.com", "jumper"),
        "all": ("mail.example.com", "badwolf.example.com", "jumper", "www01.example.com",
                "www02.example.com", "www03.example.com", "foo.example.com",
                "db-a.example.com", "db-b.example.com", "db-c.example.com", "one.example.com",
                "host1", "host2", "host3", "host4"),
    }
    everyone = HostEntry(ssh_port=22)  # [all:vars] reaches every host
    southeast = HostEntry(ssh_port=22, user="southeast")
    assert hosts == {
        "mail.example.com": everyone,
        "badwolf.example.com": HostEntry(ssh_port=5309),
        "jumper": HostEntry(address="192.0.2.50", ssh_port=5555),
        "www01.example.com": everyone,
        "www02.example.com": everyone,
        "www03.example.com": everyone,
        "foo.example.com": HostEntry(ssh_port=22, user="deploy"),
        "db-a.example.com": everyone,
        "db-b.example.com": everyone,
        "db-c.example.com": everyone,
        "one.example.com": HostEntry(address="10.0.0.1", ssh_port=22),
        "host1": southeast,
        "host2": southeast,
        "host3": HostEntry(ssh_port=22, user="legacy"),  # ansible_ssh_user wins, as in Ansible
        "host4": HostEntry(ssh_port=2222, transport="ssh"),
    }


def test_groups_expand_through_the_fleets_targets(tmp_path: Path) -> None:
    """Children are ``@child`` members: nesting is rshell.fleet.targets' to expand."""
    _, groups = read_text(tmp_path, DOCS)
    assert expand("@usa", groups) == ["host1", "host2", "host3", "host4"]
    assert expand("@southeast,@webservers", groups) == [
        "host1", "host2", "host3", "www01.example.com", "www02.example.com",
        "www03.example.com", "foo.example.com"]
    assert expand("@ungrouped", groups) == ["mail.example.com", "badwolf.example.com", "jumper"]
    assert len(expand("@all", groups)) == 15
    assert expand("@raleigh,mail.example.com,host3", groups) == ["host2", "host3",
                                                                   "mail.example.com"]


def test_the_inventory_merges_over_config_toml(tmp_path: Path) -> None:
    """The hand-over rshell.Group and the CLI use: the inventory's entries and
    groups over config.toml's; a host the inventory gives nothing keeps its alias."""
    config = Config(hosts={"mail.example.com": HostEntry(address="10.1.1.1"),
                           "web1": HostEntry(address="10.1.1.2")},
                    groups={"webservers": ("web1",), "mine": ("web1",)})
    hosts, groups = read_text(tmp_path, "mail.example.com\nplain\n[webservers]\nw1\n")
    assert hosts == {}
    merged = config.merged(hosts, groups)
    assert merged.hosts["mail.example.com"] == HostEntry(address="10.1.1.1")
    assert expand("@webservers,@mine,@all", merged.groups) == ["w1", "web1",
                                                                "mail.example.com", "plain"]


def test_an_empty_inventory_has_the_implicit_groups(tmp_path: Path) -> None:
    assert read_text(tmp_path, "# nothing yet\n\n") == ({}, {"ungrouped": (), "all": ()})


def test_the_ungrouped_are_those_in_no_other_group(tmp_path: Path) -> None:
    """As Ansible's: hosts under [all] or [ungrouped] are ungrouped only while
    no other group names them; [ungrouped:children] is allowed, as there."""
    _, groups = read_text(tmp_path, "a\n[all]\nb\nc\n[ungrouped]\nd\n[g]\nc\n"
                                    "[ungrouped:children]\nk\n[k]\ne\n")
    assert groups["ungrouped"] == ("a", "b", "d", "@k")
    assert groups["all"] == ("a", "b", "c", "d", "e")
    assert expand("@ungrouped", groups) == ["a", "b", "d", "e"]


def test_groups_may_be_declared_after_their_parents_name_them(tmp_path: Path) -> None:
    _, groups = read_text(tmp_path, "[top:children]\nmid\n[mid:children]\nleaf\n"
                                    "[leaf]\nh1\n[mid]\nh2\n[top]\nh0\n")
    assert groups["top"] == ("h0", "@mid")
    assert expand("@top", groups) == ["h0", "h2", "h1"]


def test_host_lines_are_split_as_ansible_splits_them(tmp_path: Path) -> None:
    hosts, groups = read_text(tmp_path, (
        "q1 ansible_user='dep' other=\"a value # not a comment\" # a comment\n"
        "q2 ansible_host=\"'10.0.0.2'\" tags=[1,2]\n"  # quoted twice: literal_eval's
        "[2001:db8::5]:2200 ansible_user=v6\n"
        "fe80::1%eth0\n"
        "q3\tansible_port=7 ansible_port=8\n"  # the last one wins
    ))
    assert hosts == {"q1": HostEntry(user="dep"), "q2": HostEntry(address="10.0.0.2"),
                     "2001:db8::5": HostEntry(ssh_port=2200, user="v6"),
                     "q3": HostEntry(ssh_port=8)}
    assert groups["all"] == ("q1", "q2", "2001:db8::5", "fe80::1%eth0", "q3")
    assert expand("@all", groups) == list(groups["all"])  # targets reads them back


def test_vars_lines_take_comments_and_spaces(tmp_path: Path) -> None:
    hosts, _ = read_text(tmp_path, (
        "[g]\nh\n[g:vars]\nansible_port = 2022 # the ssh port\n"
        "ansible_user='ops' ; ops team\nansible_host = h.example.com\nmotd = two words\n"))
    assert hosts == {"h": HostEntry(address="h.example.com", ssh_port=2022, user="ops")}


# ---- variable precedence -----------------------------------------------------------


def test_a_hosts_own_variables_win(tmp_path: Path) -> None:
    hosts, _ = read_text(tmp_path, "[g]\nh1 ansible_user=mine\nh2\n[g:vars]\n"
                                   "ansible_user=group\nansible_port=2\n")
    assert hosts == {"h1": HostEntry(ssh_port=2, user="mine"),
                     "h2": HostEntry(ssh_port=2, user="group")}


def test_a_child_groups_variables_win_over_its_parents(tmp_path: Path) -> None:
    hosts, _ = read_text(tmp_path, (
        "[parent:children]\nchild\n[parent:vars]\nansible_user=parent\nansible_port=1\n"
        "[child]\nh\n[child:vars]\nansible_user=child\n[all:vars]\nansible_user=all\n"
        "ansible_host=everywhere.example\n"))
    assert hosts == {"h": HostEntry(address="everywhere.example", ssh_port=1, user="child")}


def test_depth_is_the_longest_chain_from_all(tmp_path: Path) -> None:
    """h is in `deep` (all > a > b > deep: depth 3) and `shallow` (depth 1)
    directly: `deep` wins though `shallow` comes later in the file and the alphabet."""
    hosts, _ = read_text(tmp_path, (
        "[a:children]\nb\n[b:children]\ndeep\n[deep]\nh\n[deep:vars]\nansible_user=deep\n"
        "[shallow]\nh\n[shallow:vars]\nansible_user=shallow\n"))
    assert hosts["h"].user == "deep"


def test_at_equal_depth_priority_then_the_later_name_wins(tmp_path: Path) -> None:
    text = ("[beta]\nh\n[beta:vars]\nansible_user=beta\n"
            "[alpha]\nh\n[alpha:vars]\nansible_user=alpha\n")
    assert read_text(tmp_path, text)[0]["h"].user == "beta"  # 'beta' sorts after 'alpha'
    text += "ansible_group_priority=5\n"
    assert read_text(tmp_path, text)[0]["h"].user == "alpha"


def test_old_ssh_names_win_over_the_new_ones_wherever_set(tmp_path: Path) -> None:
    """Ansible's ssh plugin reads ansible_ssh_host after ansible_host: each is
    resolved through the groups, then the old name, if set, wins."""
    hosts, _ = read_text(tmp_path, "[g]\nh ansible_host=own.example\n[g:vars]\n"
                                   "ansible_ssh_host=old.example\nansible_ssh_port=2200\n")
    assert hosts["h"] == HostEntry(address="old.example", ssh_port=2200)


def test_host_port_counts_where_a_host_first_appears(tmp_path: Path) -> None:
    """As Ansible: ``host:port`` sets the port of a new host; a later line's
    ``:port`` does not change it, its ``ansible_port=`` does."""
    hosts, _ = read_text(tmp_path, "h1:2201\nh2 ansible_user=u\n"
                                   "[g]\nh1:2202\nh2:2203\nh1 ansible_port=2204\n")
    assert hosts == {"h1": HostEntry(ssh_port=2204), "h2": HostEntry(user="u")}
    assert read_text(tmp_path, "h:2201 ansible_port=2205\n")[0]["h"].ssh_port == 2205


def test_a_hosts_variables_stay_its_own_when_a_group_shares_its_name(tmp_path: Path) -> None:
    """Ansible gives them to the group of that name (its set_variable looks up
    groups first), silently; here the host keeps them, as written."""
    hosts, groups = read_text(tmp_path, "[web]\nweb ansible_port=2201\n[web:vars]\n"
                                        "ansible_user=g\n")
    assert hosts == {"web": HostEntry(ssh_port=2201, user="g")}
    assert expand("@web", groups) == ["web"]


# ---- ranges ------------------------------------------------------------------------


@pytest.mark.parametrize(("pattern", "names"), [
    ("www[01:03].example.com", ["www01.example.com", "www02.example.com", "www03.example.com"]),
    ("n[8:11]", ["n8", "n9", "n10", "n11"]),
    ("n[098:101]", ["n098", "n099", "n100", "n101"]),
    ("n[:2]", ["n0", "n1", "n2"]),  # an empty begin is 0
    ("n[1:010]", [f"n{i}" for i in range(1, 11)]),  # only the begin's zeros set the width
    ("n[0:10:5]", ["n0", "n5", "n10"]),
    ("n[00:09:4]", ["n00", "n04", "n08"]),
    ("db-[a:c]", ["db-a", "db-b", "db-c"]),
    ("db-[y:B]", ["db-y", "db-z", "db-A", "db-B"]),  # Ansible's ascii_letters order
    ("db-[a:g:3]", ["db-a", "db-d", "db-g"]),
    ("r[1:2]s[a:b]", ["r1sa", "r1sb", "r2sa", "r2sb"]),  # leftmost slowest
    ("[1:2]x", ["1x", "2x"]),
    ("192.0.2.[1:3]", ["192.0.2.1", "192.0.2.2", "192.0.2.3"]),
    ("n[1:2]:2222", ["n1", "n2"]),
])
def test_range_examples(tmp_path: Path, pattern: str, names: list[str]) -> None:
    hosts, groups = read_text(tmp_path, f"[g]\n{pattern}\n")
    assert list(groups["g"]) == names
    if pattern.endswith(":2222"):
        assert set(hosts) == set(names) and {e.ssh_port for e in hosts.values()} == {2222}


@settings(max_examples=150, deadline=None, suppress_health_check=FIXTURE)
@given(prefix=st.text(string.ascii_lowercase, min_size=1, max_size=4),
       begin=st.integers(0, 300), count=st.integers(0, 300), step=st.integers(1, 40),
       width=st.integers(0, 5))
def test_a_numeric_range_is_pythons_range(tmp_path: Path, prefix: str, begin: int, count: int,
                                          step: int, width: int) -> None:
    """[b:e:s] is ``range(b, e + 1, s)``, each number as wide as a padded begin."""
    end = begin + count
    width = width if width > len(str(end)) else 0  # padding must hold the end
    first, last = (f"{begin:0{width}d}", f"{end:0{width}d}") if width else (str(begin), str(end))
    _, groups = read_text(tmp_path, f"{prefix}[{first}:{last}:{step}]\n")
    if width and not first.startswith("0"):
        width = 0  # a begin written without a leading zero sets no width
    assert list(groups["ungrouped"]) == [
        f"{prefix}{n:0{width}d}" for n in range(begin, end + 1, step)]


@settings(max_examples=100, deadline=None, suppress_health_check=FIXTURE)
@given(data=st.data())
def test_a_letter_range_is_a_slice_of_ascii_letters(tmp_path: Path, data: st.DataObject) -> None:
    i = data.draw(st.integers(0, 51))
    j = data.draw(st.integers(i, 51))
    step = data.draw(st.integers(1, 60))
    letters = string.ascii_letters
    _, groups = read_text(tmp_path, f"x[{letters[i]}:{letters[j]}:{step}]y\n")
    assert list(groups["ungrouped"]) == [f"x{c}y" for c in letters[i : j + 1 : step]]


# ---- groups of groups, against a reference ------------------------------------------

POOL = [f"h{i}" for i in range(12)]


@st.composite
def group_trees(draw: st.DrawFn) -> list[tuple[list[str], list[int]]]:
    """Groups g0..gN, each with hosts from POOL and children of higher index
    (so no cycle), in a random written order."""
    n = draw(st.integers(1, 7))
    return [(draw(st.lists(st.sampled_from(POOL), max_size=5)),
             draw(st.lists(st.integers(i + 1, n - 1), max_size=3)) if i < n - 1 else [])
            for i in range(n)]


@settings(max_examples=150, deadline=None, suppress_health_check=FIXTURE)
@given(tree=group_trees(), order=st.randoms(use_true_random=False))
def test_children_expand_as_a_reference_does(
        tmp_path: Path, tree: list[tuple[list[str], list[int]]], order: random.Random) -> None:
    sections = []
    for i, (members, children) in enumerate(tree):
        sections.append(f"[g{i}]\n" + "".join(f"{h}\n" for h in members))
        if children:
            sections.append(f"[g{i}:children]\n" + "".join(f"g{c}\n" for c in children))
    order.shuffle(sections)
    _, groups = read_text(tmp_path, "".join(sections))

    def reference(i: int) -> list[str]:
        members, children = tree[i]
        out = list(members) + [h for c in children for h in reference(c)]
        return list(dict.fromkeys(out))

    for i in range(len(tree)):
        assert expand(f"@g{i}", groups) == reference(i)
    grouped = {h for members, _ in tree for h in members}
    assert set(groups["all"]) == grouped and groups["ungrouped"] == ()


@settings(max_examples=300, deadline=None, suppress_health_check=FIXTURE)
@given(st.lists(st.text("[]:=#;\"' \tab01-@,._\\", max_size=30), max_size=8))
def test_any_text_is_an_inventory_or_one_line_error(tmp_path: Path, lines: list[str]) -> None:
    path = tmp_path / "fuzz.ini"
    path.write_text("\n".join(lines))
    try:
        hosts, groups = read_inventory(path)
    except ConfigError as exc:
        assert "\n" not in str(exc) and str(exc).startswith(f"{path}, line ")
        return
    for name in groups:
        expand(f"@{name}", groups)  # whatever was read, targets can expand it
    assert set(hosts) <= set(groups["all"])


# ---- errors: one line each, naming the line -----------------------------------------


@pytest.mark.parametrize(("text", "message"), [
    ("[web\n", ", line 1: bad host pattern '[web': '[' without ']'"),
    ("h1\n\n[a b]\n", ", line 3: bad section header '[a b]'"),
    ("[web] ; note\n", ", line 1: bad section header '[web] ; note'"),
    ("[web:hostz]\n", ", line 1: section [web:hostz] has unknown type 'hostz'"),
    ("[web/1]\n", ", line 1: bad group name 'web/1'"),
    ("[g:children]\nbad/name\n", ", line 2: bad group name 'bad/name'"),
    ("[g:children]\na b\n", ", line 2: expected a group name in [g:children], got 'a b'"),
    ("[g]\n[g:children]\nall\n", ", line 3: the group 'all' cannot be a child"),
    ("[a:children]\nb\n", ", line 2: [a:children] names the group 'b', never declared"),
    ("[b:vars]\nx=1\n[a:children]\nb\n", ", line 1: [b:vars] for the group 'b', never declared"),
    ("[a:children]\nb\n[b:children]\nc\n[c:children]\na\n",
     ", line 6: the group 'a' includes itself: a -> b -> c -> a"),
    ("[a:children]\na\n", ", line 2: the group 'a' includes itself: a -> a"),
    ("[g:vars]\njust words\n[g]\n", ", line 2: expected key=value in [g:vars], got 'just words'"),
    ("h1 user\n", ", line 1: expected key=value after the host, got 'user'"),
    ("h1 ansible_user=\"open\n", ", line 1: bad host line: no closing quotation"),
    ("h1:\n", ", line 1: bad host 'h1:': ':' must be followed by a port"),
    ("h1:70000\n", ", line 1: bad port in 'h1:70000': '70000' is not a port"),
    ("h1 ansible_port=ssh\n", ", line 1: bad ansible_port: 'ssh' is not a port"),
    ("[g]\nh\n[g:vars]\nansible_port=0\n", ", line 4: bad ansible_port: '0' is not a port"),
    ("h1 ansible_host=web1:22\n", ", line 1: ansible_host must be a host name or an IP"),
    ("h1 ansible_host=root@web1\n", ", line 1: ansible_host must be a host name or an IP"),
    ("h1 ansible_user='two words'\n", ", line 1: ansible_user must be a non-empty value"),
    ("h1 rshell_transport=telnet\n", ", line 1: rshell_transport must be one of rshell, ssh"),
    ("[g]\nh\n[g:vars]\nansible_group_priority=high\n",
     ", line 4: ansible_group_priority must be an integer, not 'high'"),
    ("user@web1\n", ", line 1: bad host name 'user@web1'"),
    ("web1,web2\n", ", line 1: bad host name 'web1,web2'"),
    ("@web\n", ", line 1: bad host name '@web'"),
    ("\"\"\n", ", line 1: empty host name"),
    ("n]1\n", ", line 1: bad host pattern 'n]1': ']' without '['"),
    ("n[1-3]\n", ", line 1: bad range [1-3] in 'n[1-3]': expected [begin:end]"),
    ("n[]\n", ", line 1: bad range [] in 'n[]': expected [begin:end]"),
    ("n[1:]\n", ", line 1: bad range [1:] in 'n[1:]': no end"),
    ("n[1:5:0]\n", ", line 1: bad range [1:5:0] in 'n[1:5:0]': the step must be a positive"),
    ("n[1:5:-1]\n", ", line 1: bad range [1:5:-1] in 'n[1:5:-1]': the step must be a positive"),
    ("n[9:1]\n", ", line 1: bad range [9:1] in 'n[9:1]': 9 > 1"),
    ("n[f:a]\n", ", line 1: bad range [f:a] in 'n[f:a]': 'f' comes after 'a'"),
    ("n[a:5]\n", ", line 1: bad range [a:5] in 'n[a:5]': expected numbers or single letters"),
    ("n[aa:b]\n", ", line 1: bad range [aa:b] in 'n[aa:b]': expected numbers or single letters"),
    ("n[01:100]\n", ", line 1: bad range [01:100] in 'n[01:100]': both ends must be written"),
    ("n[1:99999999]\n", ", line 1: bad range [1:99999999] in 'n[1:99999999]': more than 100,000"),
    ("n[1:%s]\n" % ("9" * 21), ", line 1: bad range"),
    ("n[1:1000]m[1:1000]\n", ", line 1: host pattern 'n[1:1000]m[1:1000]' names more than"),
    ("---\nall:\n  hosts:\n", ", line 1: this looks like a YAML inventory; only Ansible's INI"),
    ("# made by hand\nall:\n  children:\n", ", line 2: this looks like a YAML inventory"),
    (b"ok\nh\xff\n", ", line 2: not UTF-8 text"),
])
def test_errors(tmp_path: Path, text: str | bytes, message: str) -> None:
    assert error_of(tmp_path, text).startswith(message)


def test_long_text_is_shortened_in_errors(tmp_path: Path) -> None:
    message = error_of(tmp_path, "h1 " + "x" * 5000 + "\n")
    assert len(message) < 150 and message.endswith("...'")


def test_a_comment_that_is_not_utf8_is_skipped_as_ansible_does(tmp_path: Path) -> None:
    path = tmp_path / "hosts.ini"
    path.write_bytes(b"\xef\xbb\xbf# caf\xe9\n; \xff\nh1\n")
    assert read_inventory(path)[1]["all"] == ("h1",)


def test_unreadable_files(tmp_path: Path) -> None:
    missing = tmp_path / "missing.ini"
    with pytest.raises(ConfigError, match=rf"^{missing}: No such file or directory$"):
        read_inventory(missing)
    with pytest.raises(ConfigError, match=rf"^{tmp_path}: Is a directory$"):
        read_inventory(tmp_path)


def test_the_file_is_capped(tmp_path: Path) -> None:
    path = tmp_path / "huge.ini"
    with open(path, "wb") as f:
        f.truncate(inventory.MAX_FILE_BYTES + 1)  # sparse: costs no disk
    with pytest.raises(ConfigError, match=rf"^{path}: larger than 16 MiB, not an inventory$"):
        read_inventory(path)


def test_the_inventory_is_capped_in_hosts(tmp_path: Path) -> None:
    """Ranges each within bounds still may not add up past MAX_HOSTS."""
    lines = [f"r{i}-[1:{inventory.MAX_RANGE}]" for i in range(2)]
    message = error_of(tmp_path, "\n".join(lines) + "\n")
    assert message == f", line 2: the inventory names more than {inventory.MAX_HOSTS:,} hosts"


def test_nesting_is_capped_where_the_fleet_can_still_expand_it(tmp_path: Path) -> None:
    def chain(n: int) -> str:
        return "".join(f"[g{i}:children]\ng{i + 1}\n" for i in range(n)) + f"[g{n}]\nh\n"

    _, groups = read_text(tmp_path, chain(inventory.MAX_DEPTH - 1))  # g0 is at depth 1
    assert expand("@g0", groups) == ["h"]
    message = error_of(tmp_path, chain(inventory.MAX_DEPTH))
    assert message == (f", line {2 * inventory.MAX_DEPTH}: groups nested more than "
                       f"{inventory.MAX_DEPTH} deep (at 'g{inventory.MAX_DEPTH}')")


def test_the_limits_are_the_fleets(tmp_path: Path) -> None:
    """Repeated, not imported (client/ sits below fleet/): they must agree."""
    assert (inventory.MAX_HOSTS, inventory.MAX_RANGE, inventory.MAX_DIGITS,
            inventory.MAX_FILE_BYTES) == (targets.MAX_HOSTS, targets.MAX_RANGE,
                                          targets.MAX_DIGITS, targets.MAX_FILE_BYTES)
    _, groups = read_text(tmp_path, f"n[1:{inventory.MAX_RANGE}]\n")
    assert len(expand("@all", groups)) == inventory.MAX_RANGE


# ---- for real: rshell.Group and the CLI ----------------------------------------------


def fleet_inventory(tmp_path: Path, port: int) -> Path:
    path = tmp_path / "fleet.ini"
    path.write_text(
        "[web]\n"
        f"alpha ansible_host=127.0.0.1 rshell_port={port} ansible_port=22\n"
        f"beta ansible_host=127.0.0.1 rshell_port={port}\n"
        "[db]\ngamma ansible_host=127.0.0.1   # its port from [db:vars]\n"
        f"[db:vars]\nrshell_port={port}\n"
        "[fleet:children]\nweb\ndb\n"
    )
    return path


def test_a_group_runs_on_an_inventorys_hosts(
        tmp_path: Path, start_in_process: Callable[..., InProcessServer]) -> None:
    from rshell.fleet.group import Group

    srv = start_in_process()
    path = fleet_inventory(tmp_path, srv.port)
    with Group("@fleet", inventory=path, tls="--no-tls" not in CLIENT_MODE) as group:
        assert group.hosts == ["alpha", "beta", "gamma"]
        results = group.run("echo $((6 * 7))", timeout=30)
    assert results.ok, results
    assert [(host, r.stdout) for host, r in results.items() if isinstance(r, Result)] == [
        ("alpha", b"42\n"), ("beta", b"42\n"), ("gamma", b"42\n")]


def test_rshell_hosts_reads_an_inventory(tmp_path: Path, home: Path) -> None:
    path = fleet_inventory(tmp_path, 7722)
    done = cli(home, "hosts", "--inventory", str(path), "@fleet,@ungrouped")
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().split() == ["alpha", "beta", "gamma"]
    bad = tmp_path / "bad.ini"
    bad.write_text("[web]\nweb[1:99999999]\n")
    done = cli(home, "hosts", "--inventory", str(bad), "@web")
    assert done.returncode != 0
    assert one_line_error(done.stderr).endswith(
        f"{bad}, line 2: bad range [1:99999999] in 'web[1:99999999]': more than 100,000 names")


def test_the_client_does_not_import_the_fleet() -> None:
    """client/ must not reach up into fleet/, which calls it (the layering test
    allows arrows between layer-3 packages; ARCHITECTURE's map does not)."""
    tree = ast.parse(Path(inventory.__file__).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom)}
    assert not {name for name in imported if name.startswith("rshell.fleet")}
    assert {name for name in imported if name.startswith("rshell.")} == {
        "rshell.client.config", "rshell.errors"}


def test_ansibles_port_is_sshds_and_rshell_port_is_rshells(tmp_path: Path) -> None:
    """An inventory's ansible_port names sshd's port: a host that goes over
    SSH is dialled there, one that speaks rshell on its rshell_port (else the
    defaults'), never on port 22 by mistake."""
    from rshell.client.config import parse, resolve

    hosts, groups = read_text(tmp_path, "a ansible_port=2222\n"
                                        "b ansible_port=2222 rshell_transport=ssh\n"
                                        "c ansible_port=2222 rshell_port=7000\n")
    config = parse({"defaults": {"port": 7722}}, "config.toml").merged(hosts, groups)
    assert resolve("a", config).target == "a:7722"
    assert resolve("b", config).target == "ssh://b:2222"
    assert resolve("c", config).target == "c:7000"


def test_an_inventory_entry_merges_over_config_tomls_field_by_field(tmp_path: Path) -> None:
    from rshell.client.config import parse

    config = parse({"hosts": {"web1": {"identity": "/keys/web", "port": 7000}}}, "config.toml")
    hosts, groups = read_text(tmp_path, "web1 ansible_host=10.0.0.5\n")
    merged = config.merged(hosts, groups).hosts["web1"]
    assert merged == HostEntry(address="10.0.0.5", port=7000, identity="/keys/web")
