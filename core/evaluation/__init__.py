"""Evaluation beyond the loss: HellaSwag, exact whole-split loss and bits per byte."""
