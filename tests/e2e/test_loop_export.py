"""Closing the loop into the code base: `trace-daemon export SESSION --format diff` turns what the
running program learned into a patch that `git apply` accepts on the original files, and the patched
files, run without the tracer, behave like the optimised process."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.e2e.helpers import is_optoprime_prompt, optoprime_answer, optoprime_variables, write_files

SHOP = '''\
"""Receipts."""

TAX_RATE = 0.0


def total(prices):
    """Sum the prices, with tax at TAX_RATE."""
    return round(sum(prices) * (1 + TAX_RATE), 2)


def label(amount):
    """Format an amount for the receipt."""
    return str(amount)
'''

NEW_LABEL = '''\
def label(amount):
    """Format an amount for the receipt."""
    return f"{amount:.2f} EUR"
'''

DRIVER = '''\
import json
import tracer
import shop

out = shop.label(shop.total([10, 20]))
tracer.feedback(out, "Receipts include 10% tax and show amounts like '33.00 EUR'.")
tracer.step(timeout=60)
print(json.dumps([shop.label(shop.total([10, 20])), shop.label(shop.total([1.5]))]))
'''

# What a program using the module prints, run with plain python (no tracer at all).
PLAIN_USE = "import json, shop; print(json.dumps([shop.label(shop.total([10, 20])), shop.label(shop.total([1.5]))]))"

MARKING = ["--session", "shop", "--target", "shop:total", "--trainable", "shop:label", "--param", "shop:TAX_RATE"]


def tax_and_label(request):
    if not is_optoprime_prompt(request):
        return optoprime_answer({})
    suggestion = {}
    for type_name, name, value in optoprime_variables(request.prompt_text):
        if type_name == "float":
            suggestion[name] = 0.1
        elif type_name == "code" and value.startswith("def label"):
            suggestion[name] = NEW_LABEL
    return optoprime_answer(suggestion)


def git(cwd, *args) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-c", "user.email=e2e@example.com", "-c", "user.name=e2e", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=60)


@pytest.fixture
def optimised(loop, project):
    """The shop session after one step; returns (loop, what the optimised process printed)."""
    loop.answer = tax_and_label
    write_files(project, {"shop.py": SHOP, "driver.py": DRIVER})
    run = loop.trace_run([*MARKING, "driver.py"], project)
    assert run.returncode == 0, run.stderr
    outputs = json.loads(run.stdout.splitlines()[-1])
    assert outputs == ["33.00 EUR", "1.65 EUR"]
    return loop, outputs


@pytest.fixture
def original_copy(tmp_path):
    """A git repository holding the original shop.py."""
    copy = tmp_path / "copy"
    copy.mkdir()
    write_files(copy, {"shop.py": SHOP})
    assert git(copy, "init", "-q").returncode == 0
    git(copy, "add", "shop.py")
    assert git(copy, "commit", "-qm", "original").returncode == 0
    return copy


def test_export_diff_applies_with_git_apply_to_a_copy_of_the_original_files(optimised, original_copy, project):
    loop, _ = optimised
    export = loop.daemon_cli("export", "shop", "--format", "diff", "--base-dir", str(project))
    assert export.returncode == 0, export.stderr
    (original_copy.parent / "shop.diff").write_text(export.stdout)

    check = git(original_copy, "apply", "--check", "-v", str(original_copy.parent / "shop.diff"))

    assert check.returncode == 0, export.stdout + check.stderr
    assert "+TAX_RATE = 0.1" in export.stdout
    assert '+    return f"{amount:.2f} EUR"' in export.stdout


def test_patched_copy_run_without_the_tracer_behaves_like_the_optimised_process(optimised, original_copy, project):
    loop, optimised_outputs = optimised
    export = loop.daemon_cli("export", "shop", "--format", "diff", "--base-dir", str(project))
    assert export.returncode == 0, export.stderr
    (original_copy.parent / "shop.diff").write_text(export.stdout)
    assert git(original_copy, "apply", str(original_copy.parent / "shop.diff")).returncode == 0

    plain = subprocess.run([sys.executable, "-c", PLAIN_USE], cwd=original_copy, capture_output=True, text=True,
                           timeout=60, env={"PATH": "/usr/bin:/bin"})

    assert plain.returncode == 0, plain.stderr
    assert json.loads(plain.stdout) == optimised_outputs


def test_export_run_in_the_project_directory_patches_the_project_itself(optimised, project):
    # The README's flow: trace-daemon export SESSION --format diff > opt.patch && git apply opt.patch
    loop, optimised_outputs = optimised
    assert git(project, "init", "-q").returncode == 0
    export = loop.daemon_cli("export", "shop", "--format", "diff", cwd=project)
    assert export.returncode == 0, export.stderr
    (project / "opt.patch").write_text(export.stdout)
    assert (project / "shop.py").read_text() == SHOP  # exporting changes no file

    applied = git(project, "apply", "opt.patch")

    assert applied.returncode == 0, export.stdout + applied.stderr
    plain = subprocess.run([sys.executable, "-c", PLAIN_USE], cwd=project, capture_output=True, text=True, timeout=60)
    assert json.loads(plain.stdout) == optimised_outputs


CART = '''\
class Cart:
    label = "Total"

    def __init__(self, prices):
        self.prices = prices

    def total(self):
        """Sum with 10% tax."""
        return sum(self.prices)

    def show(self, amount):
        return f"{self.label}: {amount}"
'''

CART_DRIVER = '''\
import tracer
import cart

c = cart.Cart([10, 20])
tracer.feedback(c.total(), "expected 33.0 (10% tax)")
tracer.feedback(c.show(1), "say 'Total with tax'")
tracer.step(timeout=60)
print(c.show(c.total()))
'''


def method_and_label(request):
    if not is_optoprime_prompt(request):
        return optoprime_answer({})
    suggestion = {}
    for type_name, name, value in optoprime_variables(request.prompt_text):
        if type_name == "code" and value.startswith("def total"):
            # Methods come back unindented, as OptoPrime shows them.
            suggestion[name] = 'def total(self):\n    """Sum with 10% tax."""\n    return round(sum(self.prices) * 1.1, 2)\n'
        elif type_name == "str":
            suggestion[name] = "Total with tax"
    return optoprime_answer(suggestion)


def test_export_of_a_method_and_a_class_attribute_applies_inside_the_class(loop, project, original_copy):
    loop.answer = method_and_label
    write_files(project, {"cart.py": CART, "driver.py": CART_DRIVER})
    run = loop.trace_run(["--session", "cart", "--target", "cart:Cart.show", "--trainable", "cart:Cart.total",
                          "--param", "cart:Cart.label", "driver.py"], project)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == ["Total with tax: 33.0"]
    write_files(original_copy, {"cart.py": CART})
    export = loop.daemon_cli("export", "cart", "--format", "diff", "--base-dir", str(project))
    (original_copy.parent / "cart.diff").write_text(export.stdout)

    applied = git(original_copy, "apply", str(original_copy.parent / "cart.diff"))

    assert applied.returncode == 0, export.stdout + applied.stderr
    assert '+        return round(sum(self.prices) * 1.1, 2)' in export.stdout
    assert '+    label = "Total with tax"' in export.stdout
    plain = subprocess.run([sys.executable, "-c", "import cart; c = cart.Cart([10, 20]); print(c.show(c.total()))"],
                           cwd=original_copy, capture_output=True, text=True, timeout=60)
    assert plain.stdout.splitlines() == ["Total with tax: 33.0"], plain.stderr


def test_exporting_again_after_the_diff_was_applied_changes_nothing_more(optimised, project):
    loop, _ = optimised
    assert git(project, "init", "-q").returncode == 0
    first = loop.daemon_cli("export", "shop", "--format", "diff", cwd=project)
    (project / "opt.patch").write_text(first.stdout)
    assert git(project, "apply", "opt.patch").returncode == 0

    again = loop.daemon_cli("export", "shop", "--format", "diff", cwd=project)

    assert again.returncode == 0, again.stderr
    assert "diff --git" not in again.stdout
    assert "# not in the diff: shop.py already holds the exported values" in again.stdout
