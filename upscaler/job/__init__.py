"""A job on disk: planning outputs from inputs, the checks before work starts (preflight, disk
space) and the state that lets a stopped video job resume."""
