"""Training and evaluation: the run loop, what training and evaluation share, checkpoints and run
folders, provenance, building a trained model back from its folder, GPU slots and plans of several runs."""
