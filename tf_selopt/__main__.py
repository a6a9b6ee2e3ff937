"""``python -m tf_selopt``: the ``selopt`` CLI."""

from tf_selopt.cli import main

main(prog_name="selopt")
