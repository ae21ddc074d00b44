"""In-place ops, f-strings, branches before calls, subscripts, attribute updates."""


class Box:
    def __init__(self):
        self.value = 1
        self.items = [1, 2, 3]


def inplace(n):
    total = 0
    text = ""
    box = Box()
    data = {"k": 1}
    for i in range(n):
        total += i
        total *= 2
        total -= 1
        total //= 3
        total **= 1
        total %= 1000
        total |= 4
        total ^= 1
        total &= 0xFFFF
        total <<= 1
        total >>= 1
        text += str(i)
        box.value += i
        box.items[0] += i
        data["k"] -= i
    return total, text, box.value, box.items, data


def fstrings(x, name="w"):
    width = 8
    return [
        f"{x}",
        f"{x!r:>{width}}|",
        f"{name!s}-{x:.3f}-{x:06.2f}",
        f"{'nested ' + f'{x:>4}'}",
        f"{x=}",
        f"{{literal}} {len(name)}",
        f"{3.14159:{'.2f'}}",
    ]


def pick(a, b):
    return (a, b)


def branch_before_call(c, a, b):
    first = pick(a if c else b, b)
    second = pick(b, a if not c else b)
    third = len([a] if c else [])
    fourth = pick(c and a, c or b)
    return first, second, third, fourth


def subscripts(seq):
    s = seq[1:3]
    seq[0] = seq[-1]
    del seq[1]
    m = {"a": [1, {"b": 2}]}
    m["a"][1]["b"] += 40
    return s, seq, m, seq[::-1], seq[len(seq) - 1]


def compares(a, b):
    return [a < b, a <= b < 10, a == b, a is b, a is not None, a in [1, 2], b not in (3,), not a]


def arithmetic(a, b):
    return [a + b, a - b, a * b, a / b, a // b, a % b, a ** 2, -a, +a, ~a, a & b, a | b, a ^ b, a << 1, a >> 1,
            divmod(a, b), abs(-a), round(a / b, 2)]


def build_string(n):
    s = ""
    for i in range(n):
        s += "ab"
    return len(s)


def main():
    print(inplace(6))
    print(fstrings(3.5))
    print(branch_before_call(True, 1, 2), branch_before_call(False, 1, 2))
    print(subscripts([1, 2, 3, 4]))
    print(compares(1, 2), compares(2, 2))
    print(arithmetic(7, 3))
    print(build_string(1000))


main()
