"""``python -m datakiln`` runs the command line."""

from datakiln.cli import main

raise SystemExit(main())
