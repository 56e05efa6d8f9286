"""Link impairment: pure delay/BDP/queue models, impairment profiles, and the shaper."""

if __name__ != "metrolab.netem":  # a second copy under another name would split its state and classes
    raise ImportError("import metrolab.netem: the repository's netem/ folder is a subpackage of metrolab")
