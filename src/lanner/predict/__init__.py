"""Prediction on new images: plain, and tiled (sliced) for images far larger than the model's input."""
