"""Reports: tables, plots, HTML and JUnit from measured results; filled by the experiment issue."""
