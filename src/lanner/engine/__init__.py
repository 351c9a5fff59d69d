"""Training engine: one loop for every task, schedules, checkpoints, history, resume."""
