"""Generators: send, throw, close, yield from, return values, finally."""


def counter(n):
    total = 0
    for i in range(n):
        got = yield i
        if got:
            total += got
    return total


def delegate(n):
    result = yield from counter(n)
    yield ("result", result)
    return result * 2


def guarded():
    try:
        yield 1
        yield 2
    except KeyError as e:
        yield f"caught {e!r}"
    finally:
        print("guarded finally")


def closing():
    try:
        while True:
            yield "tick"
    except GeneratorExit:
        print("closing: GeneratorExit")
        raise


def gen_in_gen():
    yield [x * x for x in counter(3)]
    yield sum(x for x in range(4))
    yield dict((k, v) for k, v in zip("ab", counter(2)))


def throws_inside():
    yield 1
    raise ValueError("from generator")


def main():
    g = counter(4)
    print(next(g), g.send(10), g.send(5), next(g))
    try:
        next(g)
    except StopIteration as stop:
        print("stop", stop.value)
    d = delegate(3)
    print(list(d))
    d2 = delegate(2)
    print(next(d2), d2.send(7), next(d2))
    g = guarded()
    print(next(g), g.throw(KeyError("k")))
    g.close()
    c = closing()
    print(next(c), next(c))
    c.close()
    print(list(gen_in_gen()))
    t = throws_inside()
    print(next(t))
    try:
        next(t)
    except ValueError as e:
        print("raised", e)
    e = (i for i in counter(3))
    print(list(e))


main()
