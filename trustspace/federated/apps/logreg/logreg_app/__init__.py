"""ServerApp, ClientApp and the NumPy model they share."""
