"""with statements, try/finally, exceptions and traceback line numbers."""
import contextlib
import sys
import traceback


class Managed:
    def __init__(self, name, swallow=False):
        self.name = name
        self.swallow = swallow

    def __enter__(self):
        print("enter", self.name)
        return self

    def __exit__(self, kind, value, tb):
        print("exit", self.name, kind.__name__ if kind else None)
        return self.swallow


@contextlib.contextmanager
def managed_gen(tag):
    print("gen enter", tag)
    try:
        yield tag
    finally:
        print("gen exit", tag)


def fails(x):
    y = x + 1
    raise ValueError(f"bad {y}")


def middle(x):
    return fails(x) + 1


def with_statements():
    with Managed("a") as a, Managed("b"):
        print("inside", a.name)
    with Managed("swallow", swallow=True):
        raise KeyError("swallowed")
    with managed_gen("g") as tag:
        print("tag", tag)
    return "done"


def finally_paths(n):
    out = []
    for i in range(n):
        try:
            if i == 1:
                continue
            if i == 3:
                break
            out.append(i)
        finally:
            out.append(-i)
    return out


def return_in_finally():
    try:
        return "try"
    finally:
        print("finally runs")


def override_in_finally():
    try:
        raise RuntimeError("lost")
    finally:
        return "finally wins"  # noqa: B012


def nested_handlers():
    try:
        try:
            {}["missing"]
        except KeyError as e:
            raise TypeError("converted") from e
    except TypeError as e:
        return f"{e} from {e.__cause__!r}"


def exception_groups():
    if sys.version_info < (3, 11):
        return "no groups"
    ns = {}
    exec("""
def f():
    try:
        raise ExceptionGroup("g", [ValueError(1), KeyError(2)])
    except* ValueError as eg:
        print("value errors", len(eg.exceptions))
    except* KeyError as eg:
        print("key errors", len(eg.exceptions))
""", ns)
    ns["f"]()
    return "groups"


def show_traceback():
    try:
        middle(1)
    except ValueError:
        text = traceback.format_exc()
    # line numbers and source lines of every frame must be unchanged
    lines = [ln for ln in text.splitlines() if "File" in ln or ln.startswith("    ")]
    return [ln.split(", ", 1)[1] if "File" in ln else ln for ln in lines]


def tb_linenos():
    try:
        middle(2)
    except ValueError as e:
        tb = e.__traceback__
        out = []
        while tb is not None:
            out.append((tb.tb_frame.f_code.co_name, tb.tb_lineno))
            tb = tb.tb_next
        return out


def main():
    print(with_statements())
    print(finally_paths(5))
    print(return_in_finally())
    print(override_in_finally())
    print(nested_handlers())
    print(exception_groups())
    for line in show_traceback():
        print(line)
    print(tb_linenos())
    try:
        fails(0)
    except ValueError as e:
        print(type(e).__name__, e, e.__traceback__.tb_next.tb_lineno)


main()
