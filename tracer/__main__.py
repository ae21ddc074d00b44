"""`python -m tracer [options] script.py [args...]`: the same as `trace-run`."""
from tracer.cli import main

raise SystemExit(main())
