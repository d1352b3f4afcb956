# SPDX-License-Identifier: GPL-2.0-or-later
"""Record: an immutable tuple with named fields, declared like typing.NamedTuple and built cheaply.

A run imports about a hundred record types (a parser's result, a fact's).  typing.NamedTuple builds
each through collections.namedtuple, which evaluates generated source, and checks every field's
annotation (a compile per field under ``from __future__ import annotations``): about 0.15 ms a class,
some 15 ms of every run's start.  A Record subclass is written the same way (annotated fields,
defaults, methods, a docstring) and behaves the same for every use kvmcheck makes of one: a tuple
(equality, hashing, unpacking, indexing, json, pickle, copy) with ``_fields``, ``_field_defaults``,
``_asdict()``, ``_replace()`` and ``_make()``; it is built by a small metaclass with no eval and no
look at what an annotation means.

    class Mount(Record):
        device: str
        options: Tuple[str, ...] = ()
"""
from __future__ import annotations

from operator import itemgetter
from typing import Any, Dict, Iterable, Tuple


class _RecordType(type):
    def __new__(mcls, name: str, bases: Tuple[type, ...], ns: Dict[str, Any]) -> "_RecordType":
        ns.setdefault("__slots__", ())  # no per-instance __dict__, like a namedtuple
        annotations = ns.get("__annotations__")
        if annotations is None and "__annotate__" in ns:  # Python >= 3.14 without the __future__ import
            import annotationlib

            annotations = annotationlib.call_annotate_function(ns["__annotate__"],
                                                               annotationlib.Format.FORWARDREF)
        if annotations is not None and bases != (tuple,):  # Record itself declares no field
            fields = tuple(annotations)
            defaults: Dict[str, Any] = {}
            for i, field in enumerate(fields):
                if field.startswith("_"):
                    raise TypeError(f"{name}: field names cannot start with an underscore: {field!r}")
                if field in ns:
                    defaults[field] = ns[field]
                elif defaults:
                    raise TypeError(f"{name}: field {field!r} without a default follows one with a default")
                ns[field] = property(itemgetter(i), doc=f"Alias for field number {i}")
            ns["_fields"] = fields
            ns["_field_defaults"] = defaults
            ns["__match_args__"] = fields
        return super().__new__(mcls, name, bases, ns)


class Record(tuple, metaclass=_RecordType):
    """Base of kvmcheck's records (see the module's docstring)."""

    __slots__ = ()
    _fields: Tuple[str, ...] = ()
    _field_defaults: Dict[str, Any] = {}

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        fields = cls._fields
        if not kwargs and len(args) == len(fields):
            return tuple.__new__(cls, args)
        if len(args) > len(fields):
            raise TypeError(f"{cls.__name__}() takes {len(fields)} arguments, {len(args)} given")
        values = list(args)
        defaults = cls._field_defaults
        for field in fields[len(args):]:
            if field in kwargs:
                values.append(kwargs.pop(field))
            elif field in defaults:
                values.append(defaults[field])
            else:
                raise TypeError(f"{cls.__name__}() missing argument {field!r}")
        if kwargs:
            name = next(iter(kwargs))
            what = "multiple values for" if name in fields else "an unexpected keyword"
            raise TypeError(f"{cls.__name__}() got {what} argument {name!r}")
        return tuple.__new__(cls, values)

    @classmethod
    def _make(cls, iterable: Iterable[Any]) -> Any:
        values = tuple(iterable)
        if len(values) != len(cls._fields):
            raise TypeError(f"expected {len(cls._fields)} arguments, got {len(values)}")
        return tuple.__new__(cls, values)

    def _replace(self, **changes: Any) -> Any:
        values = [changes.pop(f, v) for f, v in zip(self._fields, self)]
        if changes:
            raise ValueError(f"got unexpected field names: {list(changes)!r}")
        return tuple.__new__(type(self), values)

    def _asdict(self) -> Dict[str, Any]:
        return dict(zip(self._fields, self))

    def __getnewargs__(self) -> Tuple[Any, ...]:
        return tuple(self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{f}={v!r}' for f, v in zip(self._fields, self))})"
