"""A conversion from recipe to file: the recipe, the dispatcher, the per-method conversions and the
results they return."""
