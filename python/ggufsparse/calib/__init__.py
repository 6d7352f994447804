"""Calibration: text windows, the statistics a layer collects through its hooks, and the run that
feeds calibration windows through the model one layer at a time. Knows no method."""
