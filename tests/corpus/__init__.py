"""The exporter-made model corpus: see README.md here."""
