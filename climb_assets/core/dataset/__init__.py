"""The final dataset: sampling documents by the chosen weights, its card."""
