"""Our QR detector: the network (plain PyTorch), its training data, training and export."""
