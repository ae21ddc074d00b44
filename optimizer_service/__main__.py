"""`python -m optimizer_service ...` is `trace-daemon ...` (how autostart spawns the daemon)."""
import sys

from optimizer_service.cli import main

sys.exit(main())
