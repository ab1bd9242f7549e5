"""Federated logistic regression on CSV data: the example app of the federated mode."""
