"""Fixing a function's code from failing test cases (Trace's strange_sort_list).

    trace-run examples/strange_sort/strange_sort.py

(pyproject.toml beside this file marks the function; the same from the
command line: trace-run --trainable __main__:strange_sort_list ...)

The body of `strange_sort_list` is wrong. Its source is a trainable
parameter: the failing cases are fed back, and the optimizer's new source is
compiled, checked (same name, same signature) and swapped into the running
function. The file on disk is not touched; `trace-daemon export` turns the
result into a diff.
"""
import tracer


def strange_sort_list(lst):
    """Given a list of integers, return it in strange order.

    Strange sorting starts with the minimum value, then the maximum of the
    remaining integers, then the minimum, and so on.

    Examples:
    strange_sort_list([1, 2, 3, 4]) == [1, 4, 2, 3]
    strange_sort_list([5, 5, 5, 5]) == [5, 5, 5, 5]
    strange_sort_list([]) == []
    """
    lst = sorted(lst)
    return lst


CASES = [
    ([1, 2, 3, 4], [1, 4, 2, 3]),
    ([5, 6, 7, 8, 9], [5, 9, 6, 8, 7]),
    ([5, 5, 5, 5], [5, 5, 5, 5]),
    ([], []),
    ([111111], [111111]),
]


def check() -> list[str]:
    """Run every case; return a description of each failure."""
    failures = []
    for given, expected in CASES:
        try:
            got = strange_sort_list(list(given))
        except Exception as exc:  # the optimizer's code may raise: that is feedback too
            failures.append(f"strange_sort_list({given}) raised {type(exc).__name__}: {exc}")
            continue
        if got != expected:
            failures.append(f"strange_sort_list({given}) returned {got}, expected {expected}")
    return failures


def main(rounds: int = 3) -> int:
    for round_ in range(1, rounds + 1):
        # One traced call whose output carries the feedback of every case.
        output = strange_sort_list([1, 2, 3, 4])
        failures = check()
        print(f"round {round_}: {len(CASES) - len(failures)}/{len(CASES)} cases pass")
        if not failures:
            print("all cases pass: done")
            return 0
        for failure in failures:
            print(f"  {failure}")
        tracer.feedback(output, "Some test cases fail:\n" + "\n".join(failures))
        try:
            print(f"  step: {tracer.step()}")
        except tracer.StepFailed as exc:
            print(f"  step failed, keeping the current code: {exc}")
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
