"""opto's numeric example, as ordinary code: no node(), no bundle().

Run it (the marking is in pyproject.toml beside this file, nothing here
imports an optimizer):

    trace-run examples/numeric/numeric.py

`X` is a trainable parameter (a module global), `foo` and `bar` are traced
operators. Each round the program tells the optimizer that the output
should be larger; `tracer.step()` returns once the new value of `X` is live
in this very process, so the next round already uses it.
"""
import tracer

X = -1.0


def bar(x):
    """Multiply x by two."""
    return x * 2


def foo(y):
    """Add one to y."""
    return y + 1


def main(rounds: int = 4) -> int:
    for round_ in range(1, rounds + 1):
        output = foo(bar(X))
        print(f"round {round_}: X = {X!r}, foo(bar(X)) = {output!r}")
        if output > 0:
            print("the output is positive: done")
            return 0
        tracer.feedback(output, "The number needs to be larger.")
        print(f"  step: {tracer.step()}")
    print("gave up: the output is still not positive")
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
