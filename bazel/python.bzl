"""The Python toolchain of the Bazel build: the interpreter of the project's venv (`make setup`).

The dependencies (TensorFlow, Keras, pytest, ...) are the venv's, pinned by requirements.lock, so Bazel
resolves nothing from the network. A repository rule, because `py_runtime` needs an absolute path.
"""

def _venv_python_impl(ctx):
    workspace = ctx.path(Label("//:WORKSPACE")).dirname
    interpreter = workspace.get_child(".venv").get_child("bin").get_child("python")
    if not interpreter.exists:
        fail("%s is missing: run `make setup` first" % interpreter)
    ctx.file("BUILD", """
load("@bazel_tools//tools/python:toolchain.bzl", "py_runtime_pair")

py_runtime(name = "py3", interpreter_path = "{interpreter}", python_version = "PY3")

py_runtime_pair(name = "pair", py3_runtime = ":py3")

toolchain(
    name = "toolchain",
    toolchain = ":pair",
    toolchain_type = "@bazel_tools//tools/python:toolchain_type",
)
""".format(interpreter = interpreter))

venv_python = repository_rule(implementation = _venv_python_impl, local = True)
