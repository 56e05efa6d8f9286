"""Workloads that run on lab hosts: collectives, training steps, disaggregated training, PD-separated
inference, elephant flows; their parameter models, predictions and rank-side code."""

if __name__ != "metrolab.workloads":  # a second copy under another name would split its state and classes
    raise ImportError("import metrolab.workloads: the repository's workloads/ folder is a subpackage of metrolab")
