"""``python -m gimp_openai.server [options]``."""

from gimp_openai.server import main

raise SystemExit(main())
