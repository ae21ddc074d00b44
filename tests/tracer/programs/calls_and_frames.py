"""Call shapes and everything that looks at the calling frame."""
import functools
import inspect
import logging
import sys
import warnings


def kw(a, b=2, *args, c, d=4, **kwargs):
    return (a, b, args, c, d, sorted(kwargs.items()))


def star_calls():
    args = (1, 2, 3)
    kwargs = {"c": 5, "z": 6}
    print(kw(*args, **kwargs))
    print(kw(1, c=3))
    print(kw(1, 2, 3, 4, c=5, d=6, e=7))
    print(kw(*[9], **{"c": 0}))
    print(kw(a=1, c=2))
    parts = functools.partial(kw, 1, c=2)
    print(parts(3, e=4))
    return len(args)


class Base:
    def greet(self, name):
        return f"base:{name}"

    def where(self):
        return type(self).__name__


class Child(Base):
    def greet(self, name):
        return "child+" + super().greet(name)

    def both(self, *names, **opts):
        return [self.greet(n) for n in names] + [super().where(), opts]


def look_at_locals(x, y=3):
    z = x * y
    names = sorted(locals())
    return names, eval("x + y + z"), locals()["z"]


def exec_without_globals(n):
    exec("print('exec sees', n, sorted(locals()))")
    v = eval("n + 1")
    return v, eval("kw.__name__")


def caller_name():
    return sys._getframe(1).f_code.co_name, inspect.stack()[1].function


def asks_caller():
    return caller_name()


def warns():
    warnings.warn("careful", UserWarning, stacklevel=2)


def calls_warns():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warns()
    w = caught[0]
    return str(w.message), w.filename.endswith("calls_and_frames.py"), w.lineno


def logs():
    logger = logging.getLogger("corpus")
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(funcName)s:%(lineno)d:%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.info("hello %s", "log")
    logger.removeHandler(handler)


def frame_line():
    return inspect.currentframe().f_lineno


def default_mutable(item, bucket=[]):
    bucket.append(item)
    return list(bucket)


def main():
    print(star_calls())
    c = Child()
    print(c.greet("x"), c.both("a", "b", k=1))
    print(look_at_locals(2))
    print(exec_without_globals(4))
    print(asks_caller())
    print(calls_warns())
    logs()
    print(frame_line())
    print(default_mutable(1), default_mutable(2))
    print(kw.__name__, kw.__qualname__, inspect.signature(kw))
    method = c.greet
    print(method("m"), getattr(c, "greet")("g"))
    print(sorted(map(lambda v: -v, [3, 1, 2])))


main()
