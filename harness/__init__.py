"""metrolab harness: specs, lab backends, runner, RDMA, policies and the CLI."""

if __name__ != "metrolab.harness":  # a second copy under another name would split its state and classes
    raise ImportError("import metrolab.harness: the repository's harness/ folder is a subpackage of metrolab")


def __getattr__(name: str) -> str:
    if name == "__version__":  # the release and the commit (metrolab.harness.version), read when asked
        from metrolab.harness.version import version  # deferred: a file read, when asked
        return version()
    raise AttributeError(name)
