"""One way to configure a run: a dataclass whose field comments are its ``--help``, read by tyro.

Every script declares its options as one dataclass, CleanRL-style::

    @dataclass
    class Args:
        out: str = "runs/dis"  # run folder
        minutes: float = 3.0  # wall-clock training budget

and calls ``args = cli.parse(Args, argv, description=__doc__)``. Each field becomes
``--field-name`` (underscores become dashes); the trailing comment on the field's
line is its help text and the default is shown beside it. Types map as follows:

* ``bool``: ``--flag`` / ``--no-flag``;
* ``int``, ``float``, ``str`` and ``X | None``: one value (``None`` spells the value None);
* ``Literal["a", "b"]``: one of the choices (listed in ``--help``);
* ``list[str]``: repeatable (``--checkpoint a=x --checkpoint b=y``), each value appended to the default;
* a nested dataclass (e.g. :class:`trm.config.TRMConfig`): its fields become flags of
  their own, without a prefix (``--hidden``, not ``--model.hidden``), starting from the
  default instance's values; a field with ``metadata={"cli": False}`` is no flag.

The command line is strict: an option is spelled in full (no prefixes), a scalar
option is given at most once, and a value may start with a dash when it cannot be
read as an option (``--dis-args '--batch-size 16'``, ``--lr -1``).

After parsing, the nested dataclasses and then the top one are rebuilt with
``dataclasses.replace``, so that their ``__post_init__`` checks run, and a
``validate()`` method of the top one (if any) checks the values. Any bad command line,
including a ``ValueError`` from those checks, is one line on stderr,
``prog: error: <message naming the option> (see --help)``, with exit code 2.

``--help`` prints ``description`` as written (the script's module docstring), then
tyro's table of the options, and exits 0. :func:`read` is :func:`parse` without
``validate()`` (for checking a command line without the files it names).

Why tyro: it is a well-kept library (the one CleanRL's scripts use) that reads the
options straight from the dataclass, its types, defaults and field comments, and
formats ``--help``; this module only adds the project's rules on top. Parsing goes
through :func:`tyro.cli` and its public extension points only (``tyro.conf`` markers
and a ``tyro.constructors`` registry); tyro's own error boxes never show, because
every rejection is found here first (the command line's shape, in :func:`command_line`,
which hands tyro each value as one ``--x=VALUE`` token, taken verbatim since tyro 1.0.14)
or raised here (a value, by the converters :func:`_checked` gives tyro; a dataclass's
check, in :func:`_rebuild`).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import difflib
import io
import os
import sys
import typing
from typing import Annotated, Any, NoReturn, TypeVar, get_args, get_origin

import tyro
from tyro.constructors import (
    ConstructorRegistry,
    PrimitiveTypeInfo,
    StructConstructorSpec,
    StructTypeInfo,
    UnsupportedTypeAnnotationError,
)

T = TypeVar("T")
HELP = ("-h", "--help")
MARKERS = (tyro.conf.OmitArgPrefixes, tyro.conf.UseAppendAction)  # flat flags; list[str]: one value per use


class UsageError(Exception):
    """A bad command line. Deliberately no ``ValueError``: tyro lets it through to :func:`parse`."""


def is_option(f: dataclasses.Field) -> bool:
    """Whether dataclass field ``f`` is a command-line option."""
    return f.init and f.metadata.get("cli", True)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _is_list(tp: Any) -> bool:
    return get_origin(tp) in (list, typing.List)  # noqa: UP006 - both spellings may appear


def _is_struct(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


# ----------------------------------------------------------------------------- the command line's shape


def options(defaults: Any) -> dict[str, tuple[str, str]]:
    """``{spelling: (option, kind)}`` of dataclass instance ``defaults`` and its nested ones: ``--x`` and
    ``--no-x`` of a ``bool`` field ``x`` (kind ``"bool"``), ``--x`` of a ``list`` field (``"list"``), else ``"value"``."""
    out: dict[str, tuple[str, str]] = {}
    hints = typing.get_type_hints(type(defaults))
    for f in dataclasses.fields(defaults):
        if not is_option(f):
            continue
        tp, name = hints[f.name], _flag(f.name)
        if _is_struct(tp):
            entries = options(getattr(defaults, f.name))
        elif tp is bool:
            entries = {name: (name, "bool"), "--no-" + name[2:]: (name, "bool")}
        else:
            entries = {name: (name, "list" if _is_list(tp) else "value")}
        clash = out.keys() & entries.keys()
        if clash:
            raise TypeError(f"{type(defaults).__name__}: option {sorted(clash)[0]} is declared twice")
        out.update(entries)
    return out


def _looks_like_option(token: str) -> bool:
    """argparse's rule: a token starting with ``-`` is an option unless it is a number or holds a space."""
    if not token.startswith("-") or token == "-" or " " in token:
        return False
    try:
        float(token)
    except ValueError:
        return True
    return False


def command_line(argv: list[str], table: dict[str, tuple[str, str]]) -> list[str] | None:
    """``argv`` checked against the options ``table`` and spelled as ``--x`` and ``--x=VALUE`` tokens only (so that
    no value can pass for an option), or ``None`` when it asks for ``--help``. Raises :class:`UsageError`."""
    out: list[str] = []
    seen: dict[str, str] = {}
    unknown: list[str] = []
    tokens = iter(argv)
    for token in tokens:
        if token in HELP:
            return None
        name, eq, value = token.partition("=")
        if not _looks_like_option(token) or name not in table:
            unknown.append(token)
            continue
        option, kind = table[name]
        if kind == "bool" and eq:
            raise UsageError(f"argument {name}: ignored explicit argument {value!r}")
        if kind != "bool" and not eq:
            value = next(tokens, None)
            if value is None or _looks_like_option(value) or value in HELP:
                raise UsageError(f"argument {name}: expected one argument")
        spelled = name if kind == "bool" else f"{name} {value}"
        if kind != "list" and option in seen:
            raise UsageError(f"argument {option}: given more than once ({seen[option]}, then {spelled})")
        seen[option] = spelled
        out.append(name if kind == "bool" else f"{name}={value}")
    if unknown:
        guess = [g for t in unknown if _looks_like_option(t) for g in difflib.get_close_matches(t.partition("=")[0], table, 1)]
        hint = f" (did you mean {guess[0]}?)" if guess else ""
        raise UsageError(f"unrecognized arguments: {' '.join(unknown)}{hint}")
    return out


# ----------------------------------------------------------------------------- what tyro builds


@dataclasses.dataclass
class _Given:
    """What tyro builds for a dataclass: its type and the values of its options, not yet checked."""

    cls: type
    values: dict[str, Any]


def _type_name(tp: Any) -> str:
    inner = [a for a in get_args(tp) if a is not type(None)] if get_args(tp) else [tp]
    return " or ".join(getattr(a, "__name__", str(a)) for a in inner)


def _checked(name: str, tp: Any) -> Any:
    """``tp`` with tyro's own converter for it, whose failures (a bad value, a value not among the choices) are
    :class:`UsageError` naming option ``--name``; flags, lists, nested dataclasses and ``Annotated`` types as they are."""
    if tp is bool or _is_list(tp) or _is_struct(tp) or get_origin(tp) is Annotated:
        return tp
    base = ConstructorRegistry.get_primitive_spec(PrimitiveTypeInfo.make(tp, set()))
    if isinstance(base, UnsupportedTypeAnnotationError):
        return tp  # tyro says why
    option = _flag(name)

    def convert(strings: list[str]) -> Any:
        value = " ".join(strings)
        if base.choices is not None and value not in base.choices:
            raise UsageError(f"argument {option}: invalid choice: {value!r} (choose from {', '.join(map(repr, base.choices))})")
        try:
            return base.instance_from_str(strings)
        except (ValueError, TypeError):
            raise UsageError(f"argument {option}: invalid {_type_name(tp)} value: {value!r}") from None

    # the choices stay in the metavar ({a,b}) of --help; checking them is convert's job
    return Annotated[tp, dataclasses.replace(base, instance_from_str=convert, choices=None)]


_DELEGATING = contextvars.ContextVar("train_cli_delegating", default=False)


def _dataclass_rule(info: StructTypeInfo) -> StructConstructorSpec | None:
    """tyro's own reading of a dataclass (types, defaults of the instance it starts from, field comments), less
    the fields that are no options, with :func:`_checked` converters, building a :class:`_Given` (so that no
    ``__post_init__`` runs inside tyro)."""
    if _DELEGATING.get() or not _is_struct(info.type):
        return None
    token = _DELEGATING.set(True)
    try:
        spec = ConstructorRegistry.get_struct_spec(info)
    finally:
        _DELEGATING.reset(token)
    if not isinstance(spec, StructConstructorSpec):
        return None
    declared = {f.name: f for f in dataclasses.fields(info.type)}
    fields = tuple(
        dataclasses.replace(s, type=_checked(s.name, s.type))
        for s in spec.fields
        if s.name in declared and is_option(declared[s.name])
    )
    cls = info.type
    return StructConstructorSpec(instantiate=lambda **values: _Given(cls, values), fields=fields)


REGISTRY = ConstructorRegistry()
REGISTRY.struct_rule(_dataclass_rule)


def _rebuild(given: Any, current: Any) -> Any:
    """``current`` with the values tyro read, nested dataclasses first; their checks raise ``ValueError``."""
    if not isinstance(given, _Given):
        return given
    values = {k: _rebuild(v, getattr(current, k)) for k, v in given.values.items()}
    return dataclasses.replace(current, **values)


# ----------------------------------------------------------------------------- entry points


def _prog() -> str:
    return os.path.basename(sys.argv[0]) or "prog"


def _fail(message: str) -> NoReturn:
    """The one-line usage error (exit code 2)."""
    one_line = " ".join(message.splitlines())
    sys.stderr.write(f"{_prog()}: error: {one_line} (see --help)\n")
    sys.stderr.flush()
    raise SystemExit(2)


def input_error(error: BaseException | str) -> NoReturn:
    """Stop a script on bad input found after parsing (a puzzle file's line, a checkpoint of another kind,
    a folder in use): ``prog: error: <message>`` on one line, exit code 2, as for a bad option."""
    one_line = " ".join(str(error).splitlines())
    sys.stderr.write(f"{_prog()}: error: {one_line}\n")
    sys.stderr.flush()
    raise SystemExit(2)


def _tyro(cls: type, args: list[str], defaults: Any, console_outputs: bool) -> Any:
    return tyro.cli(
        cls,
        args=args,
        default=defaults,
        prog=_prog(),
        description="",  # not the dataclass's docstring
        console_outputs=console_outputs,
        config=MARKERS,
        registry=REGISTRY,
    )


class _Capture(io.StringIO):
    """A string buffer that tells tyro what the stream it stands for would (UTF-8 boxes? colours?)."""

    def __init__(self, stream: Any) -> None:
        super().__init__()
        self.stream = stream

    @property
    def encoding(self) -> str | None:  # type: ignore[override]
        return getattr(self.stream, "encoding", None)

    def isatty(self) -> bool:
        return self.stream.isatty()


def _help(cls: type, defaults: Any, description: str | None) -> NoReturn:
    """tyro's ``--help`` with ``description`` as written (tyro would join its lines) after the usage line; exit 0."""
    text = _Capture(sys.stdout)
    with contextlib.redirect_stdout(text):
        try:
            _tyro(cls, ["--help"], defaults, console_outputs=True)
        except SystemExit as e:
            if e.code:
                raise
    usage, _, rest = text.getvalue().partition("\n\n")
    if description and description.strip():
        usage += "\n\n" + description.strip("\n").rstrip()
    sys.stdout.write(f"{usage}\n\n{rest}")
    sys.stdout.flush()
    raise SystemExit(0)


def read(cls: type[T], argv: list[str] | None = None, *, defaults: T | None = None, description: str | None = None) -> T:
    """The instance of dataclass ``cls`` that ``argv`` (default ``sys.argv[1:]``) describes, starting from the
    instance ``defaults`` (``cls()`` if omitted); the dataclasses' ``__post_init__`` checks have run, not
    ``validate()``. ``--help`` prints the help (``description`` first) and exits 0; a bad command line exits 2."""
    argv = sys.argv[1:] if argv is None else list(argv)
    defaults = cls() if defaults is None else defaults
    try:
        args = command_line(argv, options(defaults))
        if args is None:
            _help(cls, defaults, description)
        given = _tyro(cls, args, defaults, console_outputs=False)
    except UsageError as e:
        _fail(str(e))
    except SystemExit as e:
        if e.code:
            _fail("the command line was refused")  # found by tyro, not here first: tyro is quiet about it
        raise
    try:
        return _rebuild(given, defaults)
    except ValueError as e:
        _fail(str(e))


def parse(cls: type[T], argv: list[str] | None = None, *, defaults: T | None = None, description: str | None = None) -> T:
    """Parse ``argv`` (default ``sys.argv[1:]``) into an instance of dataclass ``cls``: :func:`read`, then the
    instance's ``validate()`` (if any), whose ``ValueError`` is a usage error too.

    ``defaults`` is the instance whose values are the defaults (``cls()`` if omitted).
    """
    obj = read(cls, argv, defaults=defaults, description=description)
    if hasattr(obj, "validate"):
        try:
            obj.validate()
        except ValueError as e:
            _fail(str(e))
    return obj


def given(argv: list[str] | None, flag: str) -> bool:
    """Whether ``flag`` (e.g. ``"--paper"``) appears in ``argv`` (default ``sys.argv[1:]``)."""
    return flag in (sys.argv[1:] if argv is None else argv)
