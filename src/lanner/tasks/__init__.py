"""Tasks: what the trainer needs from classification and detection."""
