"""The plain code both systems trace: one source of truth for the comparison.

Nothing here knows about tracing. The opto programs wrap these functions
with `bundle()` / feed them `node`s; our programs run under `trace-run` and
mark them by configuration (`--target workload:inc` ...). Each traced
function has an untraced twin with the same body (`*_baseline`), so a
program can measure the plain cost in the same process and report overhead
as traced minus plain.
"""
from __future__ import annotations


def inc(x):
    """Add one to x."""
    return x + 1


def inc_baseline(x):
    """Add one to x."""
    return x + 1


# Eight binary operations: the per-operation figure divides by this.
POLY_OPERATIONS = 8


def poly(x):
    """A small arithmetic kernel: eight binary operations on x."""
    a = x * 3
    b = a + 1
    c = b * b
    d = c - x
    e = d % 7
    f = e + a
    g = f * 2
    return g - b


def poly_baseline(x):
    """A small arithmetic kernel: eight binary operations on x."""
    a = x * 3
    b = a + 1
    c = b * b
    d = c - x
    e = d % 7
    f = e + a
    g = f * 2
    return g - b


# Where the chain of the graph-size figure starts (a parameter on both sides).
START = 1.0


def advance(x):
    """Move x a half step forward."""
    return x + 0.5


# --- the "same program" for prompt size and the optimisation step ---------

# The trainable parameter of the pipeline: a module global (marked on our
# side with --param workload:GREETING, a trainable node on opto's).
GREETING = "Hello"


def normalize(text):
    """Strip surrounding blanks and lower-case the text."""
    return text.strip().lower()


def add_greeting(text, greeting):
    """Put the greeting in front of the text."""
    return greeting + ", " + text


def count_words(text):
    """Number of blank-separated words in the text."""
    return len(text.split())
