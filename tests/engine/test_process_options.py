"""The process options' pure rules: capabilities, ulimits, env files, users by name,
the seccomp profile's conversion."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from engine.containers import process as po
from engine.containers.seccomp import load_profile, oci_seccomp
from engine.errors import InvalidArgument


def test_capabilities() -> None:
    default = ("CAP_CHOWN", "CAP_KILL")
    assert po.capabilities(default, [], ["CAP_KILL"]) == ["CAP_CHOWN"]
    assert po.capabilities(default, ["CAP_NET_ADMIN"], []) == [
        "CAP_CHOWN", "CAP_KILL", "CAP_NET_ADMIN"]
    assert po.capabilities(default, ["CAP_KILL"], ["ALL"]) == ["CAP_KILL"]
    assert po.capabilities(default, ["ALL"], ["CAP_CHOWN"]) == sorted(
        set(po.ALL_CAPS) - {"CAP_CHOWN"})
    assert po.normalize_cap("net_admin") == "CAP_NET_ADMIN" == po.normalize_cap("CAP_NET_ADMIN")
    with pytest.raises(InvalidArgument, match="invalid capability"):
        po.check_caps(["CAP_FLY"], "--cap-add")


def test_ulimits() -> None:
    assert po.parse_ulimit("nofile=1024:2048") == ("nofile", 1024, 2048)
    assert po.parse_ulimit("nproc=10") == ("nproc", 10, 10)
    assert po.parse_ulimit("core=-1") == ("core", po.UNLIMITED, po.UNLIMITED)
    for bad in ("nofile", "files=1", "nofile=x", "nofile=2:1", "nofile=-2"):
        with pytest.raises(InvalidArgument):
            po.parse_ulimit(bad)
    limits = po.rlimits([po.Ulimit("nofile", 5, 6)], po.DEFAULT_ULIMITS_OBJECTS)
    assert {"type": "RLIMIT_NOFILE", "soft": 5, "hard": 6} in limits
    assert {"type": "RLIMIT_NPROC", "soft": 4194304, "hard": 4194304} in limits
    with pytest.raises(InvalidArgument, match="twice"):
        po.check_ulimits([po.Ulimit("nofile", 1, 1), po.Ulimit("nofile", 2, 2)])


def test_env_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FROM_HOST", "h")
    monkeypatch.delenv("NOT_SET", raising=False)
    text = "# c\n\nA=1\nB C=x\nFROM_HOST\nNOT_SET\nC=a=b\n"
    with pytest.raises(InvalidArgument, match="line 4"):
        po.parse_env_file(text, "f")
    assert po.parse_env_file(text.replace("B C=x\n", ""), "f") == [
        "A=1", "FROM_HOST=h", "C=a=b"]
    assert po.parse_env_file("  A =  as written \n", "f") == ["A=  as written "]


@pytest.mark.parametrize("line", ["root:$6$hash:19000:0:99999:7:::", "a:b=c", "=x", "1A=x",
                                  "p\u00e4ss=x", "secret value"])
def test_env_file_lines_that_are_not_variables_are_refused_unquoted(line: str) -> None:
    """A line that is not a variable never becomes one (a bare one was dropped, one
    with ``=`` was refused later quoting the whole line): refused by its number."""
    with pytest.raises(InvalidArgument) as err:
        po.parse_env_file(f"A=1\n{line}\n", "/etc/shadow")
    assert str(err.value) == ("invalid line 2 in env file /etc/shadow: use KEY=VALUE with "
                              "KEY a variable name")


def test_env_files_are_read_bounded_and_regular(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")  # read, it would block for ever
    (tmp_path / "big").write_bytes(b"#" * (po.MAX_ENV_FILE_BYTES + 1))
    (tmp_path / "ok").write_text("A=1\n")
    assert po.read_env_file(str(tmp_path / "ok"), "env file ok") == "A=1\n"
    (tmp_path / "bom").write_bytes(b"\xef\xbb\xbfA=1\r\nB=2\r\n")  # as Windows editors save
    assert po.parse_env_file(po.read_env_file(str(tmp_path / "bom"), "x"), "x") == [
        "A=1", "B=2"]
    for path, words in ((tmp_path / "fifo", "is not a regular file"),
                        ("/dev/zero", "is not a regular file"), (tmp_path, "is not a regular file"),
                        (tmp_path / "big", "is larger than 1048576 bytes"),
                        (tmp_path / "none", "cannot read env file x: No such file")):
        with pytest.raises(InvalidArgument, match=words):
            po.read_env_file(str(path), "env file x")


def test_users_by_name(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text(
        "root:x:0:0::/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n")
    (tmp_path / "etc" / "group").write_text(
        "root:x:0:\nalice:x:1000:\nwheel:x:10:alice,bob\naudio:x:29:bob\n")
    root = str(tmp_path)
    assert po.resolve_user(root, "alice") == (1000, 1000, (10,))
    assert po.resolve_user(root, "alice:wheel") == (1000, 10, ())
    assert po.resolve_user(root, "alice:29") == (1000, 29, (10,))
    assert po.resolve_user(root, "1000") == (1000, 1000, (10,))
    assert po.resolve_user(root, "4242") == (4242, 0, ())
    assert po.resolve_user(root, "4242:7") == (4242, 7, ())
    with pytest.raises(InvalidArgument, match="/etc/passwd"):
        po.resolve_user(root, "bob")
    with pytest.raises(InvalidArgument, match="/etc/group"):
        po.resolve_user(root, "alice:video")
    assert po.is_user_form("alice:wheel") and po.is_user_form("0:0")
    assert not po.is_user_form("a:b:c") and not po.is_user_form("a b")


def test_ids_a_container_file_gives_that_int_refuses_are_one_sentence(tmp_path: Path) -> None:
    # "\u00b2" is a digit to str.isdigit but not to int(), as thousands of digits are
    # not: a hostile image's passwd or group made --user NAME a worker's internal error
    (tmp_path / "etc").mkdir()
    huge = "9" * 5000
    (tmp_path / "etc" / "passwd").write_text(
        f"sup:x:\u00b2:0::/:/bin/sh\nbig:x:{huge}:0::/:/bin/sh\n"
        "gsup:x:5:\u00b2::/:/bin/sh\nok:x:7:7::/:/bin/sh\n")
    (tmp_path / "etc" / "group").write_text(f"g:x:\u00b2:\nh:x:{huge}:ok\nw:x:10:ok\n")
    root = str(tmp_path)
    for user in ("sup", "big", "ok:g", "ok:h"):
        with pytest.raises(InvalidArgument, match="is not in the container's /etc/"):
            po.resolve_user(root, user)
    assert po.resolve_user(root, "5") == (5, 0, ())
    assert po.resolve_user(root, "ok") == (7, 7, (10,))


def test_users_are_looked_up_inside_the_rootfs_only(tmp_path: Path) -> None:
    """/etc/passwd and /etc/group are the container's: a link in its tree that names
    a host file (absolutely, or by climbing with ..) is resolved inside the tree."""
    host = tmp_path / "host"
    host.mkdir()
    (host / "passwd").write_text("hostuser:x:4321:4321::/:/bin/sh\n")
    (host / "group").write_text("hostgroup:x:4321:hostuser\n")
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    os.symlink(str(host / "passwd"), root / "etc" / "passwd")
    os.symlink("../../../../../../../../.." + str(host / "group"), root / "etc" / "group")
    with pytest.raises(InvalidArgument, match="/etc/passwd"):
        po.resolve_user(str(root), "hostuser")
    assert po.resolve_user(str(root), "4321") == (4321, 0, ())
    # /etc itself a link to the host's directory: the same
    os.unlink(root / "etc" / "passwd")
    os.unlink(root / "etc" / "group")
    os.rmdir(root / "etc")
    os.symlink(str(host), root / "etc")
    with pytest.raises(InvalidArgument, match="/etc/passwd"):
        po.resolve_user(str(root), "hostuser")
    # the same names inside the rootfs are found there
    (root / str(host).lstrip("/")).mkdir(parents=True)
    (root / str(host).lstrip("/") / "passwd").write_text("inside:x:7:8::/:/bin/sh\n")
    assert po.resolve_user(str(root), "inside") == (7, 8, ())


def test_a_passwd_that_is_no_regular_file_is_never_opened(tmp_path: Path) -> None:
    """A FIFO as /etc/passwd would block its reader for ever (berth's, then runc's
    init): the create is refused, without opening it."""
    (tmp_path / "etc").mkdir()
    os.mkfifo(tmp_path / "etc" / "passwd")
    (tmp_path / "etc" / "group").mkdir()
    got: list[str] = []

    def look_up() -> None:
        for user in ("1000", "alice"):
            try:
                po.resolve_user(str(tmp_path), user)
            except InvalidArgument as exc:
                got.append(str(exc))

    t = threading.Thread(target=look_up, daemon=True)
    t.start()
    t.join(10)
    assert got == ["the container's /etc/passwd is not a regular file"] * 2
    os.unlink(tmp_path / "etc" / "passwd")
    (tmp_path / "etc" / "passwd").write_text("alice:x:1000:1000::/:/bin/sh\n")
    with pytest.raises(InvalidArgument, match="/etc/group is not a regular file"):
        po.resolve_user(str(tmp_path), "alice")
    os.rmdir(tmp_path / "etc" / "group")
    assert po.resolve_user(str(tmp_path), "alice") == (1000, 1000, ())
    with open(tmp_path / "etc" / "passwd", "wb") as f:  # bounded: a huge one is refused
        f.truncate(po.USER_FILE_LIMIT + 1)
    with pytest.raises(InvalidArgument, match="larger than"):
        po.resolve_user(str(tmp_path), "alice")


def test_seccomp_profile_follows_caps_and_arch() -> None:
    profile = {
        "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38,
        "archMap": [{"architecture": "SCMP_ARCH_X86_64",
                     "subArchitectures": ["SCMP_ARCH_X86"]}],
        "syscalls": [
            {"names": ["read"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["mount"], "action": "SCMP_ACT_ALLOW",
             "includes": {"caps": ["CAP_SYS_ADMIN"]}},
            {"names": ["mount"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
             "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
            {"names": ["arm_only"], "action": "SCMP_ACT_ALLOW",
             "includes": {"arches": ["arm64"]}},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 8, "valueTwo": 0, "op": "SCMP_CMP_EQ"}]},
        ],
    }
    plain = oci_seccomp(profile, ["CAP_CHOWN"], machine="x86_64")
    assert plain["defaultAction"] == "SCMP_ACT_ERRNO" and plain["defaultErrnoRet"] == 38
    assert plain["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"]
    assert [(s["names"], s["action"]) for s in plain["syscalls"]] == [
        (["read"], "SCMP_ACT_ALLOW"), (["mount"], "SCMP_ACT_ERRNO"),
        (["personality"], "SCMP_ACT_ALLOW")]
    assert plain["syscalls"][1]["errnoRet"] == 1
    admin = oci_seccomp(profile, ["CAP_SYS_ADMIN"], machine="x86_64")
    assert (["mount"], "SCMP_ACT_ALLOW") in [(s["names"], s["action"]) for s in admin["syscalls"]]


def test_the_installed_profile_loads() -> None:
    oci = oci_seccomp(load_profile(), ["CAP_CHOWN"])
    allowed = {n for s in oci["syscalls"] if s["action"] == "SCMP_ACT_ALLOW" for n in s["names"]}
    assert {"read", "write", "execve"} <= allowed and "swapoff" not in allowed
