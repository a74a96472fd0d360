"""Chat templates rendered in a sandbox with a bound on work and on output size.

A chat template comes from the model folder: Jinja code the server runs on every request. Jinja's
`ImmutableSandboxedEnvironment` keeps it from touching Python internals, but not from looping:
nested `range(100000)` loops hold the thread (the event loop, for a small request) for hours. So the
template is compiled with every point where work can grow metered against a per-render budget:

- each loop iteration (including those a loop filter skips) and each function, filter or test call
  costs one unit, plus the length of the strings and containers it takes and returns;
- `+`, `*`, `**`, `%`, `~`, `in` and slicing cost the length of what they make or scan; a `*` or `**`
  whose result would be too large, a width or integer argument over the output bound, is refused
  before it runs;
- the rendered text is counted as it is produced, against the output bound;
- a wall-clock backstop ends a render that somehow outlives the budget.

The budget grows with the input (a long conversation may cost more), from a base that any sane
template's fixed text fits in. A render over it raises `TemplateBoundExceeded` (INVALID_ARGUMENT for
that request); at load, a template that cannot render a probe conversation within the bound is
refused. Otherwise the environment is transformers' (`trim_blocks`, `lstrip_blocks`, loop controls,
`{% generation %}`, `tojson`, `raise_exception`, `strftime_now`): the same text, the same ids.
"""

from __future__ import annotations

import json
import re
import string
import time
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from functools import wraps
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.ext import Extension, loopcontrols
from jinja2.runtime import Macro
from jinja2.sandbox import ImmutableSandboxedEnvironment

from reward_server.errors import InvalidArgument, LoadError


@dataclass(frozen=True)
class RenderBounds:
    """Work units and output characters one render may use: a base plus a share per unit of input
    size (content characters, plus `chars_per_message` for each message's fixed framing)."""

    work_base: int = 200_000
    work_per_char: int = 64
    output_base: int = 65_536
    output_per_char: int = 4
    chars_per_message: int = 256
    seconds: float = 5.0

    def size(self, messages: Sequence[Mapping[str, str]]) -> int:
        return sum(len(m["content"]) + self.chars_per_message for m in messages)

    def work(self, size: int) -> int:
        return self.work_base + self.work_per_char * size

    def output(self, size: int) -> int:
        return self.output_base + self.output_per_char * size


DEFAULT_BOUNDS = RenderBounds()
# What a chat template must render within the bound before a version loads.
PROBE_CONVERSATION = (
    {"role": "user", "content": "Hello! What's your name?"},
    {"role": "assistant", "content": "I am a helpful assistant."},
)
# An integer argument or format width above this is refused before the call: it sizes an allocation
# (str.center, tojson indent, batch fill, '%9999999s') larger than any render may produce.
MAX_INT_ARGUMENT = 1 << 20
# Integers beyond this many bits are refused (repeated squaring is exponential work).
MAX_INT_BITS = 1 << 16
# A macro call costs as much as this many loop iterations: a call does far more work than one iteration.
MACRO_CALL_UNITS = 16
# Jinja's defaults that no chat template needs and whose output a few characters of template can
# multiply by the request: lipsum(n) paragraphs, urlize's per-link attributes.
_DROPPED = ("lipsum", "urlize")
_SIZED = frozenset({str, bytes, list, tuple, dict, set, frozenset, range})
_PERCENT_WIDTH = re.compile(r"%[-#0 +]*(\d*)(?:\.(\d*))?")
_CLOCK_EVERY_MASK = 15  # the clock is read on every 16th charge


class TemplateBoundExceeded(InvalidArgument):
    """A render went over its work or output bound, or its time backstop."""


class TemplateRenderError(InvalidArgument):
    """The template failed on this conversation (raise_exception, a type error, recursion)."""


class _Budget:
    __slots__ = ("work_left", "work", "output", "deadline", "_charges")

    def __init__(self, work: int, output: int, seconds: float) -> None:
        self.work = work
        self.work_left = work
        self.output = output
        self.deadline = time.monotonic() + seconds
        self._charges = 0

    def charge(self, units: int) -> None:
        self.work_left -= units
        if self.work_left < 0:
            raise TemplateBoundExceeded(f"the chat template went over its work bound ({self.work} units)")
        # The clock is read every few charges, not every few units: one charge may stand for an
        # operation whose real cost the units understate (comparing two long strings).
        self._charges += 1
        if not self._charges & _CLOCK_EVERY_MASK and time.monotonic() > self.deadline:
            raise TemplateBoundExceeded("the chat template went over its time bound")


_budget: ContextVar[_Budget] = ContextVar("chat_template_budget")


def _size(value: Any) -> int:
    kind = type(value)
    if kind is str or kind in _SIZED:
        return len(value)
    if kind is int:
        return value.bit_length() >> 6
    return 0


def _refuse(why: str) -> TemplateBoundExceeded:
    return TemplateBoundExceeded(f"the chat template went over its bound: {why}")


def _check_arguments(args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT_ARGUMENT:
            raise _refuse(f"an integer argument is over {MAX_INT_ARGUMENT}")


def _check_widths(numbers: Sequence[str]) -> None:
    for number in numbers:
        if len(number) > 7 or (number and int(number) > MAX_INT_ARGUMENT):
            raise _refuse(f"a format width is over {MAX_INT_ARGUMENT}")


def _check_percent_format(text: str) -> None:
    for match in _PERCENT_WIDTH.finditer(text):
        _check_widths([g for g in match.groups() if g])


def _check_str_format(text: str) -> None:
    for _, _, spec, _ in string.Formatter().parse(text):
        if spec:
            _check_widths(re.findall(r"\d+", spec))


def _replaced_size(text: str, old: str, new: str, count: int | None = None) -> int:
    found = text.count(old) if old else len(text) + 1
    if count is not None and count >= 0:
        found = min(found, count)
    return len(text) + found * len(new)


def _width(value: Any) -> int:
    return value if isinstance(value, int) else len(str(value))


# The size of what a string-growing filter returns, estimated from its arguments before it runs (the
# result is charged afterwards too): one of these times a long request could otherwise allocate far
# more than the bound before any charge. Keyed by filter name; arguments as the filter takes them.
_FILTER_GROWTH: dict[str, Callable[..., int]] = {
    "indent": lambda s, width=4, *_, **__: len(str(s)) + (str(s).count("\n") + 1) * _width(width),
    "center": lambda value, width=80, *_, **__: len(str(value)) + _width(width),
    "replace": lambda _ctx, s, old, new, count=None: _replaced_size(str(s), str(old), str(new), count),
    "join": lambda _ctx, value, d="", *_, **__: len(value) * len(str(d)) if type(value) in _SIZED else 0,
    "wordwrap": lambda _env, s, width=79, break_long_words=True, wrapstring=None, *_, **__: (
        len(str(s))
        + (len(str(s)) // max(1, _width(width)) + str(s).count("\n") + 1) * len(wrapstring or "\n")
    ),
    "tojson": lambda x, ensure_ascii=False, indent=None, *_, **__: (
        _size(x) * _width(indent) * 8 if indent is not None else 0
    ),
}
# The same for str methods called from a template: (receiver, arguments) -> size.
_METHOD_GROWTH: dict[str, Callable[..., int]] = {
    "center": lambda s, width, *_: len(s) + width,
    "ljust": lambda s, width, *_: len(s) + width,
    "rjust": lambda s, width, *_: len(s) + width,
    "zfill": lambda s, width: len(s) + width,
    "expandtabs": lambda s, tabsize=8: len(s) + s.count("\t") * tabsize,
    "replace": lambda s, old, new, count=-1: _replaced_size(s, old, new, count),
    "join": lambda s, items: len(s) * len(items) if type(items) in _SIZED else 0,
}


def _estimate(
    table: dict[str, Callable[..., int]], name: str, args: Sequence[Any], kwargs: Mapping[str, Any]
) -> int:
    estimate = table.get(name)
    if estimate is None:
        return 0
    try:
        return estimate(*args, **kwargs)
    except (TypeError, ValueError, AttributeError):  # arguments the call itself will refuse
        return 0


def _charged(name: str, function: Any) -> Callable[..., Any]:
    """A filter or test that costs one unit plus the sizes of its arguments and result (and, for a
    string-growing filter, its estimated result before it runs)."""

    @wraps(function)  # keeps jinja_pass_arg (pass_context & co.)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _check_arguments(args, kwargs)
        budget = _budget.get()
        budget.charge(1 + sum(_size(a) for a in args) + _estimate(_FILTER_GROWTH, name, args, kwargs))
        result = function(*args, **kwargs)
        budget.charge(_size(result))
        return result

    return wrapper


class _Meter(Extension):
    """What the metered code calls, directly (not through the sandbox's `call`): each charges the budget."""

    def tick(self) -> bool:
        _budget.get().charge(1)
        return True

    def sized(self, value: Any) -> Any:
        _budget.get().charge(1 + _size(value))
        return value

    def emit(self, value: Any) -> str:
        text = str(value)
        _budget.get().charge(1 + len(text))
        return text


class _Generation(Extension):
    """transformers' `{% generation %}...{% endgeneration %}` (assistant-token tracking): the body as is."""

    tags = {"generation"}

    def parse(self, parser: jinja2.parser.Parser) -> nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller: Callable[[], str]) -> str:
        return caller()


def _meter_call(name: str, args: list[nodes.Expr], lineno: int) -> nodes.Call:
    call = nodes.Call(nodes.ExtensionAttribute(_Meter.identifier, name), args, [], None, None)
    call.set_lineno(lineno)
    return call


def _metered(tree: nodes.Template, environment: jinja2.Environment) -> None:
    """Rewrite the parsed template so loops, output, `~` and `in` pay into the budget."""
    for loop in list(tree.find_all(nodes.For)):
        loop.body.insert(0, nodes.ExprStmt(_meter_call("tick", [], loop.lineno)).set_lineno(loop.lineno))
        if loop.test is not None:  # iterations a loop filter skips cost too
            loop.test = nodes.And(_meter_call("tick", [], loop.lineno), loop.test).set_lineno(loop.lineno)
    for output in list(tree.find_all(nodes.Output)):
        output.nodes = [
            n if isinstance(n, nodes.TemplateData) else _meter_call("emit", [n], n.lineno)
            for n in output.nodes
        ]
    for concat in list(tree.find_all(nodes.Concat)):
        concat.nodes = [_meter_call("sized", [n], n.lineno) for n in concat.nodes]
    for item in list(tree.find_all(nodes.Getitem)):
        if isinstance(item.arg, nodes.Slice):  # a slice copies
            item.node = _meter_call("sized", [item.node], item.lineno)
    for compare in list(tree.find_all(nodes.Compare)):
        for operand in compare.ops:
            if operand.op in ("in", "notin"):
                operand.expr = _meter_call("sized", [operand.expr], operand.expr.lineno)
    tree.set_environment(environment)


class _MeteredCodeGenerator(CodeGenerator):
    def visit_Template(self, node: nodes.Template, frame: Frame | None = None) -> None:
        _metered(node, self.environment)
        super().visit_Template(node, frame)

    def visit_Call(self, node: nodes.Call, frame: Frame, forward_caller: bool = False) -> None:
        # The meter's own calls are plain Python calls: the sandbox's `call` would charge them twice
        # and costs more than they do.
        target = node.node
        if not (isinstance(target, nodes.ExtensionAttribute) and target.identifier == _Meter.identifier):
            super().visit_Call(node, frame, forward_caller=forward_caller)
            return
        self.visit_ExtensionAttribute(target, frame)
        self.write("(")
        for index, arg in enumerate(node.args):
            if index:
                self.write(", ")
            self.visit(arg, frame)
        self.write(")")


class BoundedEnvironment(ImmutableSandboxedEnvironment):
    """transformers' chat-template environment, with every growth point metered (module docstring)."""

    code_generator_class = _MeteredCodeGenerator
    intercepted_binops = frozenset({"+", "*", "**", "%"})

    def __init__(self) -> None:
        super().__init__(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols, _Generation, _Meter])
        self.filters["tojson"] = _tojson
        self.filters = {name: _charged(name, f) for name, f in self.filters.items() if name not in _DROPPED}
        self.tests = {name: _charged("", f) for name, f in self.tests.items()}
        for name in _DROPPED:
            self.globals.pop(name, None)
        self.globals["raise_exception"] = _raise_exception
        self.globals["strftime_now"] = _strftime_now

    def call(__self, __context: jinja2.runtime.Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        _check_arguments(args, kwargs)
        budget = _budget.get()
        units = MACRO_CALL_UNITS if isinstance(__obj, Macro) else 1
        receiver = getattr(__obj, "__self__", None)
        if type(receiver) is str:
            units += _estimate(_METHOD_GROWTH, __obj.__name__, (receiver, *args), kwargs)
        budget.charge(units + sum(_size(a) for a in args) + _size(receiver))
        result = super().call(__context, __obj, *args, **kwargs)
        budget.charge(_size(result))
        return result

    def call_binop(self, context: jinja2.runtime.Context, operator: str, left: Any, right: Any) -> Any:
        budget = _budget.get()
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if type(seq) in _SIZED and isinstance(times, int) and len(seq) * times > budget.output:
                    raise _refuse("a repetition is over the output bound")
            if (
                isinstance(left, int)
                and isinstance(right, int)
                and left.bit_length() + right.bit_length() > MAX_INT_BITS
            ):
                raise _refuse(f"an integer product is over {MAX_INT_BITS} bits")
        elif operator == "**" and isinstance(left, int) and isinstance(right, int):
            if abs(left) > 1 and right > 0 and left.bit_length() * right > MAX_INT_BITS:
                raise _refuse(f"an integer power is over {MAX_INT_BITS} bits")
        elif operator == "%" and isinstance(left, str):
            _check_percent_format(left)
            _check_arguments(right if isinstance(right, tuple) else (right,), {})
        result = self.binop_table[operator](left, right)
        budget.charge(1 + _size(result))
        return result

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        text = value.__self__

        @wraps(wrapped)
        def checked(*args: Any, **kwargs: Any) -> str:
            _check_str_format(text)
            return wrapped(*args, **kwargs)

        return checked


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(
    x: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: Any = None,
    sort_keys: bool = False,
) -> str:
    # transformers' tojson: no HTML escaping, options exposed.
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(format: str) -> str:  # noqa: A002 (the name templates call it with)
    return datetime.now().strftime(format)


class BoundedChatTemplate:
    """A chat template compiled in the bounded sandbox and checked on a probe conversation."""

    def __init__(
        self, source: str, variables: Mapping[str, Any], bounds: RenderBounds = DEFAULT_BOUNDS
    ) -> None:
        self.bounds = bounds
        self._variables = dict(variables)
        try:
            self._template = BoundedEnvironment().from_string(source)
        except jinja2.TemplateError as e:
            raise LoadError(f"the chat_template does not compile: {type(e).__name__}: {e}") from e
        try:
            self.render(PROBE_CONVERSATION)
        except InvalidArgument as e:
            raise LoadError(f"the chat_template cannot render a probe conversation: {e}") from e

    def render(self, messages: Sequence[Mapping[str, str]]) -> str:
        size = self.bounds.size(messages)
        budget = _Budget(self.bounds.work(size), self.bounds.output(size), self.bounds.seconds)
        token = _budget.set(budget)
        try:
            parts, produced = [], 0
            for part in self._template.generate(
                messages=list(messages),
                tools=None,
                documents=None,
                add_generation_prompt=False,
                **self._variables,
            ):
                produced += len(part)
                if produced > budget.output:
                    raise TemplateBoundExceeded(
                        f"the chat template went over its output bound ({budget.output} characters)"
                    )
                parts.append(part)
            return "".join(parts)
        except InvalidArgument:
            raise
        except (
            jinja2.TemplateError,
            RecursionError,
            TypeError,
            ValueError,
            LookupError,
            AttributeError,
            ArithmeticError,
            MemoryError,
        ) as e:
            raise TemplateRenderError(
                f"the chat template failed on this conversation: {type(e).__name__}: {e}"
            ) from None
        finally:
            _budget.reset(token)
