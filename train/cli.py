"""One way to configure a run: a dataclass whose field comments are its ``--help``.

Every script declares its options as one dataclass, CleanRL-style::

    @dataclass
    class Args:
        out: str = "runs/dis"  # run folder
        minutes: float = 3.0  # wall-clock training budget

and calls ``args = cli.parse(Args, argv, description=__doc__)``. Each field becomes
``--field-name`` (underscores become dashes); the trailing comment on the field's
line is its help text and the default is shown beside it. Types map as follows:

* ``bool``: ``--flag`` / ``--no-flag``;
* ``int``, ``float``, ``str`` and ``X | None``: one value;
* ``Literal["a", "b"]``: one of the choices;
* ``list[str]``: repeatable (``--checkpoint a=x --checkpoint b=y``);
* a nested dataclass (e.g. :class:`trm.config.TRMConfig`): its fields become flags of
  their own, without a prefix, starting from the default instance's values.

After parsing, a ``validate()`` method of the dataclass (if any) checks the values; a
``ValueError`` it raises becomes the usual one-line usage error (exit code 2).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import io
import sys
import textwrap
import tokenize
import typing
from typing import Any, Literal, NoReturn, TypeVar, get_args, get_origin

T = TypeVar("T")


def field_comments(cls: type) -> dict[str, str]:
    """The trailing ``# comment`` of every annotated field of ``cls`` and of its dataclass bases."""
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            src = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        tokens = tokenize.generate_tokens(io.StringIO(src).readline)
        comments = {t.start[0]: t.string.lstrip("#").strip() for t in tokens if t.type == tokenize.COMMENT}
        for node in ast.parse(src).body[0].body:
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.end_lineno in comments:
                text = comments[node.end_lineno]
                if not text.startswith("noqa"):
                    out[node.target.id] = text
    return out


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _kind(tp: Any) -> tuple[str, Any]:
    """``(kind, python type or choices)`` of an annotation."""
    origin, args = get_origin(tp), get_args(tp)
    if tp is bool:
        return "bool", bool
    if origin is Literal:
        return "choice", args
    if origin in (list, typing.List):  # noqa: UP006 - both spellings may appear
        return "list", args[0] if args else str
    if args and type(None) in args:  # X | None
        inner = [a for a in args if a is not type(None)]
        return "optional", inner[0]
    if dataclasses.is_dataclass(tp):
        return "nested", tp
    return "value", tp


def _add(ap: argparse.ArgumentParser, name: str, tp: Any, default: Any, help_text: str) -> None:
    kind, arg = _kind(tp)
    shown = f"{help_text} (default: {default!r})" if help_text else f"(default: {default!r})"
    if kind == "bool":
        ap.add_argument(_flag(name), dest=name, action=argparse.BooleanOptionalAction, default=None, help=shown)
    elif kind == "choice":
        ap.add_argument(_flag(name), dest=name, choices=arg, default=None, help=shown)
    elif kind == "list":
        ap.add_argument(_flag(name), dest=name, type=arg, action="append", default=None, help=shown + "; repeatable")
    else:
        ap.add_argument(_flag(name), dest=name, type=arg, default=None, metavar=name.upper(), help=shown)


class OneLineErrors(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line on stderr (exit code 2), without the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser(cls: type, defaults: Any, description: str | None = None) -> argparse.ArgumentParser:
    """The ``argparse`` parser of dataclass ``cls`` with defaults from the instance ``defaults``."""
    ap = OneLineErrors(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    hints = typing.get_type_hints(cls)
    comments = field_comments(cls)
    for f in dataclasses.fields(cls):
        value = getattr(defaults, f.name)
        if _kind(hints[f.name])[0] == "nested":
            group = ap.add_argument_group(f"{f.name} ({type(value).__name__})")
            nested_hints, nested_comments = typing.get_type_hints(type(value)), field_comments(type(value))
            for g in dataclasses.fields(value):
                if g.init and g.metadata.get("cli", True):
                    _add(group, g.name, nested_hints[g.name], getattr(value, g.name), nested_comments.get(g.name, ""))
        else:
            _add(ap, f.name, hints[f.name], value, comments.get(f.name, ""))
    return ap


def parse(cls: type[T], argv: list[str] | None = None, *, defaults: T | None = None, description: str | None = None) -> T:
    """Parse ``argv`` (default ``sys.argv[1:]``) into an instance of dataclass ``cls``.

    ``defaults`` is the instance whose values are the defaults (``cls()`` if omitted).
    Options not given keep the default; nested dataclasses are rebuilt with
    ``dataclasses.replace`` so that their own ``__post_init__`` checks run.
    """
    defaults = cls() if defaults is None else defaults
    ap = build_parser(cls, defaults, description)
    ns = vars(ap.parse_args(sys.argv[1:] if argv is None else argv))
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    try:
        for f in dataclasses.fields(cls):
            current = getattr(defaults, f.name)
            if _kind(hints[f.name])[0] == "nested":
                given = {g.name: ns[g.name] for g in dataclasses.fields(current) if ns.get(g.name) is not None}
                values[f.name] = dataclasses.replace(current, **given)
            else:
                values[f.name] = current if ns[f.name] is None else ns[f.name]
        obj = cls(**values)
        if hasattr(obj, "validate"):
            obj.validate()
    except ValueError as e:
        ap.error(str(e))
    return obj


def given(argv: list[str] | None, flag: str) -> bool:
    """Whether ``flag`` (e.g. ``"--paper"``) appears in ``argv`` (default ``sys.argv[1:]``)."""
    return flag in (sys.argv[1:] if argv is None else argv)
