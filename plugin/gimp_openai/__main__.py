"""`python -m gimp_openai ...` is the same as the `gimp-openai` console script (hosts use this form)."""

from gimp_openai.cli import main

raise SystemExit(main())
