"""The note's study in one command: config -> runs -> rows -> figures and report.

``config`` (YAML schema and errors), ``runs`` (train and measure one run),
``runner`` (a whole config, resumable), ``plots`` (figures 1 and 2), ``report``
(Markdown). The ``selopt`` CLI (``tf_selopt.cli``) is a thin front end.
"""
