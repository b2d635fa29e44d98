"""Optimizer: picks an accelerator type and replica count per model from a queueing model of
the model server, the models' SLO classes, accelerator costs and cluster capacity, in the
workload-variant-autoscaler's input shapes (see `config`)."""
