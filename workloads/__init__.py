"""Workloads that run on lab hosts: collectives, training steps, disaggregated training, PD-separated
inference, elephant flows; their parameter models, predictions and rank-side code."""
