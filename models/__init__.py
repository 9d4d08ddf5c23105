"""Model weights, their training code and the synthetic data generator."""
