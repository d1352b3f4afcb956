"""kvmcheck.core.record.Record: what kvmcheck relies on from typing.NamedTuple, held side by side with it."""
from __future__ import annotations

import copy
import json
import pickle
from typing import NamedTuple, Optional, Tuple

import pytest

from kvmcheck.core.record import Record


class Mount(Record):
    """A mount entry (a test record)."""

    device: str
    point: str
    options: Tuple[str, ...] = ()
    fstype: Optional[str] = None

    @property
    def read_only(self) -> bool:
        return "ro" in self.options


class MountNT(NamedTuple):
    device: str
    point: str
    options: Tuple[str, ...] = ()
    fstype: Optional[str] = None


# Pickle needs the class at module level, as it does for a NamedTuple.
ARGS = [(("/dev/sda1", "/"), {}), (("/dev/sda1",), {"point": "/boot", "fstype": "ext4"}),
        ((), {"device": "d", "point": "p", "options": ("ro",)})]


@pytest.mark.parametrize("args, kwargs", ARGS)
def test_constructs_like_a_namedtuple(args, kwargs):
    ours, theirs = Mount(*args, **kwargs), MountNT(*args, **kwargs)
    assert tuple(ours) == tuple(theirs) and ours == theirs and hash(ours) == hash(theirs)
    assert ours._asdict() == theirs._asdict()
    assert ours._replace(point="/x") == theirs._replace(point="/x")
    assert Mount._make(list(ours)) == ours
    assert json.dumps(ours) == json.dumps(theirs)
    assert repr(ours) == repr(theirs).replace("MountNT", "Mount")
    assert pickle.loads(pickle.dumps(ours)) == ours and type(pickle.loads(pickle.dumps(ours))) is Mount
    assert copy.deepcopy(ours) == ours and type(copy.copy(ours)) is Mount
    device, point, options, fstype = ours
    assert (device, point, options, fstype) == tuple(theirs)


def test_fields_defaults_methods_and_no_instance_dict():
    m = Mount("/dev/sda1", "/", ("ro",))
    assert Mount._fields == MountNT._fields == ("device", "point", "options", "fstype")
    assert Mount._field_defaults == MountNT._field_defaults == {"options": (), "fstype": None}
    assert m.read_only and m.device == "/dev/sda1" and m[1] == "/"
    assert Mount.__doc__ == "A mount entry (a test record)."
    assert not hasattr(m, "__dict__")
    with pytest.raises(AttributeError):
        m.device = "other"  # type: ignore[misc]
    assert Mount.__match_args__ == MountNT.__match_args__  # `case Mount(device, point)` binds the same


@pytest.mark.parametrize("args, kwargs, message", [
    ((), {"device": "d"}, "missing argument 'point'"),
    (("d", "p", (), None, "extra"), {}, "takes 4 arguments, 5 given"),
    (("d", "p"), {"device": "x"}, "multiple values for argument 'device'"),
    (("d", "p"), {"size": 1}, "an unexpected keyword argument 'size'"),
])
def test_wrong_arguments_are_type_errors(args, kwargs, message):
    with pytest.raises(TypeError, match=message):
        Mount(*args, **kwargs)
    with pytest.raises(TypeError):
        MountNT(*args, **kwargs)


def test_replace_refuses_unknown_fields_and_declarations_are_checked():
    with pytest.raises(ValueError, match="size"):
        Mount("d", "p")._replace(size=1)
    with pytest.raises(TypeError, match="without a default follows"):
        class Bad(Record):  # noqa: F841 - the declaration itself is refused
            a: int = 0
            b: int
    with pytest.raises(TypeError, match="underscore"):
        class Hidden(Record):  # noqa: F841
            _a: int


def test_a_subclass_without_fields_keeps_its_parents():
    class Remount(Mount):
        def describe(self) -> str:
            return f"{self.device} on {self.point}"

    assert Remount._fields == Mount._fields and Remount("a", "b").describe() == "a on b"


def test_a_lazy_pattern_is_a_compiled_one_once_used():
    import re

    from kvmcheck.parsers import pattern

    lazy = pattern(r"(\d+)-(\d+)", re.I)
    assert "match" not in vars(lazy)  # nothing compiled at declaration
    assert lazy.match("3-5").groups() == ("3", "5") and lazy.sub("x", "a 1-2 b") == "a x b"
    assert vars(lazy)["match"].__self__ is re.compile(r"(\d+)-(\d+)", re.I)  # kept: no lookup per call
    assert lazy.pattern == r"(\d+)-(\d+)" and lazy.flags & re.I and lazy.groups == 2
    assert [m.group(0) for m in pattern("a+").finditer("aa b a")] == ["aa", "a"]
