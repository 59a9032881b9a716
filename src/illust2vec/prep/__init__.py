"""The input recipe: how a decoded image becomes a network input (resize kernels, mean, channel order)."""
