"""Reports: tables, plots, HTML and JUnit from measured results; filled by the experiment issue."""

if __name__ != "metrolab.reports":  # a second copy under another name would split its state and classes
    raise ImportError("import metrolab.reports: the repository's reports/ folder is a subpackage of metrolab")
