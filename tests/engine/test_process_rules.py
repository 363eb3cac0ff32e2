"""The process rules (``engine.containers.process``) called directly: ``check_argv``,
``check_env``, ``check_cwd``, ``check_user``, and ``engine.arguments.check_timeout``.
Each refusal is pinned to its exact sentence, and each bound is tried exactly at the
limit (accepted) and one over it (refused)."""

from __future__ import annotations

import pytest

from engine import arguments as a
from engine.containers import process as p
from engine.errors import InvalidArgument

TOO_LONG = "is too long (at most 4096 arguments and 128 KiB)"


def refusal(check: object, *args: object, **kwargs: object) -> str:
    assert callable(check)
    with pytest.raises(InvalidArgument) as err:
        check(*args, **kwargs)
    return str(err.value)


def test_the_limits_are_the_kernels() -> None:
    assert p.MAX_ARGS == 4096
    assert p.MAX_ARG_BYTES == 128 * 1024
    assert a.MAX_STOP_TIMEOUT == 31_536_000.0


# ------------------------------------------------------------------ argv


def test_argv_accepted_as_a_tuple_of_its_strings() -> None:
    assert p.check_argv(["sleep", "1"]) == ("sleep", "1")
    assert p.check_argv(("true",), "the exec command") == ("true",)
    assert p.check_argv(["sh", "", "-c"]) == ("sh", "", "-c")  # only the program must be named


def test_argv_must_be_a_list_of_strings() -> None:
    assert refusal(p.check_argv, "sleep 1") == "the command must be a list of strings"
    assert refusal(p.check_argv, ["sleep", 1]) == "the command must be a list of strings"
    assert refusal(p.check_argv, [b"sleep"], "the exec command") == (
        "the exec command must be a list of strings")


def test_argv_must_name_a_program() -> None:
    assert refusal(p.check_argv, []) == "the command is empty: name a program to run"
    assert refusal(p.check_argv, ["", "x"], "the container command") == (
        "the container command is empty: name a program to run")


def test_argv_at_most_4096_arguments() -> None:
    assert len(p.check_argv(["a"] * 4096)) == 4096
    assert refusal(p.check_argv, ["a"] * 4097) == f"the command {TOO_LONG}"
    assert refusal(p.check_argv, ["a"] * 4097, "the exec command") == (
        f"the exec command {TOO_LONG}")


def test_argv_at_most_128_kib_counted_in_encoded_bytes() -> None:
    assert p.check_argv(["a" * (128 * 1024)]) == ("a" * (128 * 1024),)
    assert refusal(p.check_argv, ["a" * (128 * 1024 + 1)]) == f"the command {TOO_LONG}"
    # Spread over arguments the sum counts.
    half = "a" * (64 * 1024)
    assert p.check_argv([half, half]) == (half, half)
    assert refusal(p.check_argv, [half, half, "b"]) == f"the command {TOO_LONG}"
    # "é" is two bytes in UTF-8: 65536 of them fill the bound exactly.
    assert p.check_argv(["é" * 65536]) == ("é" * 65536,)
    assert refusal(p.check_argv, ["é" * 65536 + "a"]) == f"the command {TOO_LONG}"
    # An undecodable byte (surrogate-escaped) is one byte, not refused as unencodable.
    assert p.check_argv(["\udcff"]) == ("\udcff",)


def test_argv_without_nul_bytes() -> None:
    assert refusal(p.check_argv, ["echo", "a\0b"]) == "the command contains a NUL byte"
    assert refusal(p.check_argv, ["\0"], "the exec command") == (
        "the exec command contains a NUL byte")
    assert refusal(p.check_argv, ["echo", "\0"]) == "the command contains a NUL byte"


# ------------------------------------------------------------------ env


def test_env_accepted_as_a_tuple_of_its_entries() -> None:
    assert p.check_env([]) == ()
    assert p.check_env(["A=1", "_b9=", "PATH=/bin:/usr/bin"]) == (
        "A=1", "_b9=", "PATH=/bin:/usr/bin")
    # The key ends at the first '=': the value may hold more of them.
    assert p.check_env(["A=b=c", "X==", "OPTS=--a=1 --b=2"]) == (
        "A=b=c", "X==", "OPTS=--a=1 --b=2")


def test_env_must_be_a_list_of_strings() -> None:
    sentence = "the environment must be a list of KEY=VALUE strings"
    assert refusal(p.check_env, "A=1") == sentence
    assert refusal(p.check_env, ["A=1", 3]) == sentence
    assert refusal(p.check_env, [b"A=1"]) == sentence


def test_env_at_most_128_kib() -> None:
    exactly = "A=" + "x" * (128 * 1024 - 2)
    assert p.check_env([exactly]) == (exactly,)
    assert refusal(p.check_env, [exactly + "x"]) == (
        "the environment is too long (at most 128 KiB)")
    assert refusal(p.check_env, [exactly, "B="]) == (
        "the environment is too long (at most 128 KiB)")


@pytest.mark.parametrize("entry", [
    "PATH", "", "=1", "1A=x", "A-B=1", "A B=1", "É=1", "A\0=1", "A=x\0y", "A=\0",
])
def test_env_refuses_an_entry_that_is_not_key_value(entry: str) -> None:
    assert refusal(p.check_env, ["OK=1", entry]) == (
        f"invalid environment entry {entry!r}: use KEY=VALUE")


# ------------------------------------------------------------------ cwd


def test_cwd_an_absolute_path() -> None:
    assert p.check_cwd("/") == "/"
    assert p.check_cwd("/srv/app") == "/srv/app"
    assert p.check_cwd("/srv/app", optional=True) == "/srv/app"
    assert p.check_cwd("", optional=True) == ""


@pytest.mark.parametrize("cwd", ["", "srv", "./srv", "/srv\0x", "\0", 5, None, b"/srv"])
def test_cwd_refused(cwd: object) -> None:
    assert refusal(p.check_cwd, cwd) == f"working directory {cwd!r} must be an absolute path"


def test_cwd_refused_even_when_optional_unless_empty() -> None:
    assert refusal(p.check_cwd, "srv", optional=True) == (
        "working directory 'srv' must be an absolute path")
    assert refusal(p.check_cwd, None, optional=True) == (
        "working directory None must be an absolute path")


def test_cwd_at_most_4096_characters() -> None:
    exactly = "/" + "a" * 4095
    assert p.check_cwd(exactly) == exactly
    assert refusal(p.check_cwd, exactly + "a") == (
        f"working directory {exactly + 'a'!r} must be an absolute path")


# ------------------------------------------------------------------ user


@pytest.mark.parametrize("user", ["0", "1000", "1000:1000", "0:0", "4294967295",
                                  "1234567890:1234567890"])
def test_user_in_numbers(user: str) -> None:
    assert p.check_user(user) == user
    assert p.check_user(user, optional=True) == user


def test_user_empty_only_when_optional() -> None:
    assert p.check_user("", optional=True) == ""
    assert refusal(p.check_user, "") == "invalid user '': use UID[:GID] (numbers)"


@pytest.mark.parametrize("user", ["root", "1000:", ":1000", "1000:1000:1", "-1", " 1",
                                  "12345678901", "1:12345678901", "1000\n", 1000, None])
def test_user_refused(user: object) -> None:
    assert refusal(p.check_user, user) == f"invalid user {user!r}: use UID[:GID] (numbers)"
    assert refusal(p.check_user, user, optional=True) == (
        f"invalid user {user!r}: use UID[:GID] (numbers)")


# ------------------------------------------------------------------ timeout


def test_timeout_in_seconds_up_to_a_year() -> None:
    assert a.check_timeout(0) == 0.0
    assert isinstance(a.check_timeout(3), float)
    assert a.check_timeout(2.5) == 2.5
    assert a.check_timeout(31_536_000) == 31_536_000.0
    assert a.check_timeout(10, "stop timeout") == 10.0


@pytest.mark.parametrize("value", [-1, -0.001, 31_536_000.5, 1e12, float("inf"), float("nan"),
                                   True, "5", None])
def test_timeout_refused(value: object) -> None:
    assert refusal(a.check_timeout, value) == (
        f"invalid timeout {value!r}: must be a number >= 0 and <= 3.1536e+07")
    assert refusal(a.check_timeout, value, "wait") == (
        f"invalid wait {value!r}: must be a number >= 0 and <= 3.1536e+07")
