"""Reports, regression comparison and run history built from stored results."""
