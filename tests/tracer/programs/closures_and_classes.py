"""Closures, nonlocal, nested functions, class/static methods, properties, decorators."""
import functools


def make_counter(start):
    count = start

    def inc(by=1):
        nonlocal count
        count += by
        return count

    def get():
        return count

    return inc, get


def make_adders():
    return [lambda x, i=i: x + i for i in range(3)]


def outer(a):
    def middle(b):
        def inner(c):
            return a + b + c
        return inner
    return middle


def trace_calls(func):
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        print("calling", func.__name__)
        return func(*args, **kwargs)
    return wrapper


@trace_calls
def decorated(x):
    return x + 1


class Shape:
    sides = 0

    def __init__(self, name):
        self._name = name

    @property
    def name(self):
        return self._name.upper()

    @name.setter
    def name(self, value):
        self._name = value

    @classmethod
    def make(cls, name):
        return cls(name)

    @staticmethod
    def describe(n):
        return f"{n} sides"

    def __repr__(self):
        return f"Shape({self._name!r})"

    def __eq__(self, other):
        return isinstance(other, Shape) and other._name == self._name

    def __hash__(self):
        return hash(self._name)


class Square(Shape):
    sides = 4

    def __init__(self):
        super().__init__("square")

    @property
    def name(self):
        return "sq:" + super().name


def main():
    inc, get = make_counter(10)
    print(inc(), inc(5), get())
    print([f(1) for f in make_adders()])
    print(outer(1)(2)(3))
    print(decorated(1), decorated.__name__)
    s = Shape.make("tri")
    print(s.name, Shape.describe(3), s)
    s.name = "hex"
    print(s.name, s == Shape("hex"), {s: 1}[Shape("hex")])
    sq = Square()
    print(sq.name, sq.sides, Square.make.__func__ is Shape.make.__func__)


main()
