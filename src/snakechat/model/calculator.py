"""The calculator tool the model calls between <|python_start|> and <|python_end|>.

The model writes a Python *expression*; we never hand it to `eval`. `evaluate` parses it with
`ast` and walks the tree itself, accepting only number and string literals, arithmetic, a few
string methods (`'strawberry'.count('r')`, `.upper()`, ...), `len(...)` and indexing. The
language it accepts has no loops, names, imports or attribute access beyond that list, so it
always terminates; size checks before every power, repetition and product keep it from
allocating without bound, and a deadline guards the walk itself.

Only real, finite results come back: a step that gives a complex number (`(-8)**0.5`) or an
infinite one (`1e308*10`) is refused with a message saying so, as is a too-big one.

`run(expr)` is what the engine uses: the result as text, or `error: <why>` for a refused
expression.
"""

import ast
import math
import operator
import time

MAX_EXPR_CHARS = 256  # longer tool calls are refused before parsing
MAX_NODES = 100  # syntax tree size
MAX_INT_BITS = 4096  # about 1233 decimal digits
MAX_STR_LEN = 10_000
TIME_LIMIT_S = 0.05

ARITHMETIC = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
# string method name -> number of arguments it accepts (min, max); every argument must be a string
STRING_METHODS = {
    "count": (1, 1),
    "upper": (0, 0),
    "lower": (0, 0),
    "strip": (0, 0),
    "startswith": (1, 1),
    "endswith": (1, 1),
    "find": (1, 1),
}


class CalculatorError(ValueError):
    """An expression the calculator refuses or cannot compute; the message says why."""


def _check_size(value):
    if isinstance(value, bool):
        raise CalculatorError("booleans are not supported")
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise CalculatorError(f"result too large (more than {MAX_INT_BITS} bits)")
    if isinstance(value, complex):
        raise CalculatorError("result is a complex number (a fractional power of a negative number?); only real results are given")
    if isinstance(value, float) and not math.isfinite(value):
        raise CalculatorError("result is not a finite number (it overflowed to infinity or is NaN)")
    if isinstance(value, str) and len(value) > MAX_STR_LEN:
        raise CalculatorError(f"string result longer than {MAX_STR_LEN} characters")
    return value


def _number_bits(x):
    """Bits a number occupies, as a bound for the size of results computed from it."""
    if isinstance(x, int):
        return max(x.bit_length(), 1)
    return max(math.frexp(x)[1], 1) if x else 1


def _guard_binop(op, left, right):
    """Refuse operations whose result would be too big, before computing them."""
    nums = (int, float)
    if isinstance(op, ast.Pow) and isinstance(left, nums) and isinstance(right, nums):
        if isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
            if _number_bits(left) * right > MAX_INT_BITS:
                raise CalculatorError(f"power too large: {left}**{right}")
        if abs(right) > 10_000 and abs(left) not in (0, 1):
            raise CalculatorError(f"exponent too large: {right}")
    if isinstance(op, ast.Mult):
        if isinstance(left, str) or isinstance(right, str):
            text, times = (left, right) if isinstance(left, str) else (right, left)
            if not isinstance(times, int) or isinstance(times, bool):
                raise CalculatorError("a string can only be repeated an integer number of times")
            if len(text) * max(times, 0) > MAX_STR_LEN:
                raise CalculatorError(f"string repetition longer than {MAX_STR_LEN} characters")
        elif isinstance(left, int) and isinstance(right, int):
            if _number_bits(left) + _number_bits(right) > MAX_INT_BITS:
                raise CalculatorError(f"result too large (more than {MAX_INT_BITS} bits)")
    if isinstance(op, ast.Mod) and (isinstance(left, str) or isinstance(right, str)):
        raise CalculatorError("string formatting with % is not supported")


class _Evaluator:
    def __init__(self, deadline):
        self.deadline = deadline

    def eval(self, node):
        if time.monotonic() > self.deadline:
            raise CalculatorError("time limit exceeded")
        method = getattr(self, "_" + type(node).__name__, None)
        if method is None:
            raise CalculatorError(f"{type(node).__name__} is not allowed")
        return _check_size(method(node))

    def _Expression(self, node):
        return self.eval(node.body)

    def _Constant(self, node):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float, str)):
            raise CalculatorError(f"literal {node.value!r} is not allowed")
        return node.value

    def _BinOp(self, node):
        op = ARITHMETIC.get(type(node.op))
        if op is None:
            raise CalculatorError(f"operator {type(node.op).__name__} is not allowed")
        left, right = self.eval(node.left), self.eval(node.right)
        _guard_binop(node.op, left, right)
        try:
            return op(left, right)
        except ZeroDivisionError:
            raise CalculatorError("division by zero") from None
        except OverflowError:
            raise CalculatorError("result too large for a float") from None
        except (TypeError, ValueError) as e:
            raise CalculatorError(str(e)) from None

    def _UnaryOp(self, node):
        op = UNARY.get(type(node.op))
        if op is None:
            raise CalculatorError(f"operator {type(node.op).__name__} is not allowed")
        value = self.eval(node.operand)
        if not isinstance(value, (int, float)):
            raise CalculatorError("unary minus/plus needs a number")
        return op(value)

    def _Subscript(self, node):
        value = self.eval(node.value)
        if not isinstance(value, str):
            raise CalculatorError("only strings can be indexed")
        if isinstance(node.slice, ast.Slice):
            parts = [None if p is None else self.eval(p) for p in (node.slice.lower, node.slice.upper, node.slice.step)]
            if not all(p is None or (isinstance(p, int) and not isinstance(p, bool)) for p in parts):
                raise CalculatorError("slice bounds must be integers")
            if parts[2] == 0:
                raise CalculatorError("slice step cannot be zero")
            return value[slice(*parts)]
        index = self.eval(node.slice)
        if not isinstance(index, int):
            raise CalculatorError("string index must be an integer")
        try:
            return value[index]
        except IndexError:
            raise CalculatorError("string index out of range") from None

    def _Call(self, node):
        if node.keywords:
            raise CalculatorError("keyword arguments are not allowed")
        if isinstance(node.func, ast.Name):
            if node.func.id != "len" or len(node.args) != 1:
                raise CalculatorError(f"call to {node.func.id!r} is not allowed (only len(x) and string methods)")
            value = self.eval(node.args[0])
            if not isinstance(value, str):
                raise CalculatorError("len() needs a string")
            return len(value)
        if isinstance(node.func, ast.Attribute):
            name = node.func.attr
            if name not in STRING_METHODS:
                raise CalculatorError(f"method {name!r} is not allowed (allowed: {', '.join(sorted(STRING_METHODS))})")
            target = self.eval(node.func.value)
            if not isinstance(target, str):
                raise CalculatorError(f"method {name!r} needs a string")
            lo, hi = STRING_METHODS[name]
            if not lo <= len(node.args) <= hi:
                raise CalculatorError(f"method {name!r} takes {lo if lo == hi else f'{lo} to {hi}'} argument(s)")
            args = [self.eval(a) for a in node.args]
            if not all(isinstance(a, str) for a in args):
                raise CalculatorError(f"arguments of {name!r} must be strings")
            return getattr(target, name)(*args)
        raise CalculatorError("this call is not allowed (only len(x) and string methods)")

    def _Attribute(self, node):
        raise CalculatorError(f"attribute access {node.attr!r} is not allowed")

    def _Name(self, node):
        raise CalculatorError(f"name {node.id!r} is not allowed")


def evaluate(expr, time_limit=TIME_LIMIT_S):
    """The value of a restricted Python expression; raises CalculatorError for anything refused."""
    if not isinstance(expr, str):
        raise CalculatorError("expression must be a string")
    expr = expr.strip()
    if not expr:
        raise CalculatorError("empty expression")
    if len(expr) > MAX_EXPR_CHARS:
        raise CalculatorError(f"expression longer than {MAX_EXPR_CHARS} characters")
    # commas as thousands separators ("1,200*3") are common in word problems
    if "," in expr and "'" not in expr and '"' not in expr:
        expr = expr.replace(",", "")
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError as e:
        raise CalculatorError(f"not a valid expression: {e.msg}") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise CalculatorError(f"expression has more than {MAX_NODES} syntax nodes")
    return _Evaluator(time.monotonic() + time_limit).eval(tree)


def format_value(value):
    """Text of a result as the model sees it: integers plainly, floats without float noise."""
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        text = f"{value:.6g}" if (abs(value) >= 1e15 or abs(value) < 1e-4) else f"{value:.6f}".rstrip("0").rstrip(".")
        return text
    return str(value)


def run(expr):
    """What the tool returns to the model: the result text, or `error: <why>`."""
    try:
        return format_value(evaluate(expr))
    except CalculatorError as e:
        return f"error: {e}"
    except (RecursionError, MemoryError):
        return "error: expression too complex"
