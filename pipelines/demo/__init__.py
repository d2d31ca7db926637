"""Demo pipelines and the Python steps they call."""
