"""Fake gimpshelf: GIMP's per-session store of remembered values (where gimpfu keeps last arguments)."""

shelf = {}
