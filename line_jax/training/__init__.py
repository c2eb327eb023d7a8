"""Training: batches (host reference and on the devices), the step, the train state and checkpoints, the work dir, residual recovery, the two-stage loop."""
