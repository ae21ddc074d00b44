"""The code every process of the shared-session example runs."""

TEMPLATE = "hi {name}"


def render(name):
    """Greet `name` using TEMPLATE."""
    return TEMPLATE.format(name=name)
