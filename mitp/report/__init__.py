"""The paper's tables and figures from finished runs, with metrics and confidence intervals. Torch-free."""
