"""Using a trained model: `LineModel`, embedding a file, the model soup."""
