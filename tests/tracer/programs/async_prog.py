"""asyncio: await, async for / with, async generators, gather, tasks."""
import asyncio


async def leaf(x, delay=0):
    await asyncio.sleep(delay)
    return x * 2


async def agen(n):
    for i in range(n):
        await asyncio.sleep(0)
        yield i
    print("agen done")


class Resource:
    async def __aenter__(self):
        print("enter")
        return self

    async def __aexit__(self, *exc):
        print("exit", exc[0].__name__ if exc[0] else None)
        return False

    async def use(self, v):
        return await leaf(v)


async def consume():
    out = []
    async for v in agen(3):
        out.append(await leaf(v))
    return out


async def comprehension():
    return [v async for v in agen(2)], [await leaf(i) for i in range(2)]


async def failing():
    await asyncio.sleep(0)
    raise RuntimeError("async boom")


async def main():
    print(await leaf(3))
    print(await asyncio.gather(leaf(1, 0.001), leaf(2), leaf(3, 0.002)))
    print(await consume())
    print(await comprehension())
    async with Resource() as r:
        print(await r.use(5))
    try:
        async with Resource():
            await failing()
    except RuntimeError as e:
        print("caught", e)
    tasks = [asyncio.ensure_future(leaf(i, 0.001 * (3 - i))) for i in range(3)]
    print([await t for t in tasks])
    g = agen(5)
    print(await g.__anext__(), await g.asend(None))
    await g.aclose()
    results = await asyncio.gather(failing(), leaf(1), return_exceptions=True)
    print([type(r).__name__ for r in results])


asyncio.run(main())
