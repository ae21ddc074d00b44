# requires: 3.11
"""except* and exception groups (3.11+)."""
import traceback


def raises_group():
    raise ExceptionGroup("many", [ValueError(1), KeyError(2), ValueError(3)])


def handles():
    seen = []
    try:
        raises_group()
    except* ValueError as group:
        seen.append(("values", len(group.exceptions)))
    except* KeyError as group:
        seen.append(("keys", [repr(e) for e in group.exceptions]))
    return seen


def partly_unhandled():
    try:
        try:
            raises_group()
        except* KeyError:
            pass
    except ExceptionGroup as rest:
        return [type(e).__name__ for e in rest.exceptions]


def notes():
    try:
        try:
            raise ValueError("base")
        except ValueError as e:
            e.add_note("added by handler")
            raise
    except ValueError:
        return traceback.format_exc().splitlines()[-2:]


print(handles())
print(partly_unhandled())
print(notes())
