"""Results tables (and, later, plots) rendered from the evaluation JSON files."""
