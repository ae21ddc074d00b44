"""Yields, awaits and returns with values on the stack, inside loops, with and try blocks."""
import asyncio
import contextlib


def pair(a, b, c):
    return (a, b, c)


def yields_mid_expression(n):
    total = []
    for i in range(n):
        with contextlib.suppress(KeyError):
            try:
                got = pair(i, (yield i * 2), [j for j in range(i)])
                total.append(got)
            finally:
                total.append(-i)
    return total


def nested_loops_with_yield():
    for a in range(2):
        for b in "xy":
            with contextlib.nullcontext(b) as c:
                got = yield f"{a}{c}", pair(a, (yield b), c)


def return_inside_with_inside_for(items):
    for item in items:
        with contextlib.nullcontext():
            if item > 2:
                return item * 10
    return None


def star_and_chain():
    first, *middle, last = range(6)
    x = y = z = [first, last]
    x.append(len(middle))
    a, (b, c) = 1, (2, 3)
    return x, y is z, middle, a + b + c


counter = 0


def uses_global():
    global counter
    counter += 1
    del_me = [counter]
    del del_me[0]
    return counter, del_me


class Base:
    def hello(self):
        return "base"


class Derived(Base):
    def hello(self):
        def inner():
            return super(Derived, self).hello()
        return "derived+" + inner() + "+" + super().hello()

    def __class_name(self):
        return __class__.__name__

    def name(self):
        return self.__class_name()


async def value(v):
    await asyncio.sleep(0)
    return v


async def awaits_mid_expression():
    parts = [await value(1), await value(2)]
    total = pair(await value(3), *parts)
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(print, "exit stack closed")
        try:
            result = sum([await value(i) for i in range(3)]) + (await value(10))
        finally:
            print("finally in coroutine")
    return total, result


def main():
    gen = yields_mid_expression(3)
    out = [next(gen)]
    try:
        while True:
            out.append(gen.send(len(out)))
    except StopIteration as stop:
        out.append(stop.value)
    print(out)
    g = nested_loops_with_yield()
    print(next(g), g.send("sent"), list(g))
    print(return_inside_with_inside_for([1, 2, 3, 4]), return_inside_with_inside_for([]))
    print(star_and_chain())
    print(uses_global(), uses_global())
    d = Derived()
    print(d.hello(), d.name())
    print(asyncio.run(awaits_mid_expression()))


main()
