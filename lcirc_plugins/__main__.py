"""``python -m lcirc_plugins``: the same as the ``lcirc`` command."""

from __future__ import annotations

from .cli import main

raise SystemExit(main())
