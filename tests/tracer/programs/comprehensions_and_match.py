"""Comprehensions (inlined on 3.12+), walrus, match statements."""
from dataclasses import dataclass


def comps(n):
    squares = [i * i for i in range(n)]
    evens = {i for i in squares if i % 2 == 0}
    index = {i: str(i) for i in range(n) if i}
    nested = [[a * b for b in range(3)] for a in range(n)]
    flat = [x for row in nested for x in row if x]
    lookup = [y for x in range(n) if (y := x * 3) > 2]
    shadow = 100
    shadowed = [shadow for shadow in range(2)]
    gen = sum(i for i in range(n))
    closure = [(lambda: i)() for i in range(3)]
    return squares, sorted(evens), index, flat, lookup, shadow, shadowed, gen, closure


def comps_with_locals(k):
    base = k
    out = [base + i for i in range(3)]
    return out, sorted(locals())


@dataclass
class Point:
    x: int
    y: int


def classify(value):
    match value:
        case 0 | 1:
            return "small"
        case int(n) if n < 0:
            return f"negative {n}"
        case [first, *rest]:
            return f"seq {first} +{len(rest)}"
        case {"kind": kind, **others}:
            return f"map {kind} {sorted(others)}"
        case Point(x=0, y=y):
            return f"on y axis at {y}"
        case Point(x, y) if x == y:
            return "diagonal"
        case str() as s:
            return "str " + s
        case _:
            return "other"


def main():
    print(comps(5))
    print(comps_with_locals(7))
    for v in [0, 1, -4, [1, 2, 3], {"kind": "k", "a": 1}, Point(0, 5), Point(2, 2), Point(1, 2), "s", 3.5]:
        print(classify(v))


main()
