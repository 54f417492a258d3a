"""The include step of the Lua loader: ``-- @include lib/<name>.lua`` lines in a script."""

from __future__ import annotations

from importlib import resources

import pytest

from calmq.stores.redis.scripts import (
    SCRIPT_NAMES,
    declared_key_count,
    expand_includes,
    script_source,
)

HELPERS = {
    "lib/one.lua": "-- lib/one.lua: one()\nlocal function one() return 1 end\n",
    "lib/two.lua": (
        "-- lib/two.lua: two()\n"
        "-- @include lib/one.lua\n"
        "local function two() return one() + 1 end\n"
    ),
}
SCRIPT = (
    "-- demo.lua: a script with includes.\n"
    "--\n"
    "-- KEYS[1] tag\n"
    "-- KEYS[2] ready (ZSET)\n"
    "-- ARGV[1] n\n"
    "-- Returns: a number\n"
    "\n"
    "-- @include lib/one.lua\n"
    "-- @include lib/two.lua\n"
    "-- @include lib/one.lua\n"
    "\n"
    "return two() + redis.call('ZCARD', KEYS[2])\n"
)


def read(path: str) -> str:
    try:
        return HELPERS[path]
    except KeyError:
        raise FileNotFoundError(path) from None


def test_include_is_replaced_by_the_file_text_once() -> None:
    expanded = expand_includes(SCRIPT, read)
    assert "@include" not in expanded
    assert expanded.count("local function one()") == 1
    assert expanded.count("local function two()") == 1
    # Defined before use: one() (also needed by two()) comes first.
    assert expanded.index("local function one()") < expanded.index("local function two()")
    assert expanded.endswith("return two() + redis.call('ZCARD', KEYS[2])\n")


def test_header_key_count_comes_from_the_including_file() -> None:
    assert declared_key_count(expand_includes(SCRIPT, read)) == declared_key_count(SCRIPT) == 2


def test_unknown_include_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"demo\.lua: unknown include 'lib/nope\.lua'"):
        expand_includes("-- @include lib/nope.lua\n", read, where="demo.lua")


@pytest.mark.parametrize("path", ["../secret.lua", "lib/sub/x.lua", "lib/x.txt", "one.lua"])
def test_include_outside_lib_is_refused(path: str) -> None:
    with pytest.raises(ValueError, match="bad include"):
        expand_includes(f"-- @include {path}\n", read)


def test_include_cycle_and_keys_in_a_helper_are_refused() -> None:
    cyclic = {"lib/a.lua": "-- @include lib/b.lua\n", "lib/b.lua": "-- @include lib/a.lua\n"}
    with pytest.raises(ValueError, match="include cycle"):
        expand_includes("-- @include lib/a.lua\n", cyclic.__getitem__)
    with pytest.raises(ValueError, match="uses KEYS"):
        expand_includes("-- @include lib/k.lua\n", {"lib/k.lua": "local k = KEYS[1]\n"}.get)


def test_loaded_scripts_are_self_contained_and_use_every_helper() -> None:
    lib = resources.files("calmq.stores.redis").joinpath("lua").joinpath("lib")
    helpers = sorted(entry.name for entry in lib.iterdir() if entry.name.endswith(".lua"))
    assert helpers
    used: set[str] = set()
    for name in SCRIPT_NAMES:
        loaded = script_source(name)
        assert "@include" not in loaded, name
        for helper in helpers:
            # One local function per helper file, named like the file.
            definition = f"local function {helper.removesuffix('.lua')}("
            assert loaded.count(definition) <= 1, (name, helper)
            if definition in loaded:
                used.add(helper)
    assert used == set(helpers)
