"""Training, evaluation and reporting for the reviewscore models (imports TensorFlow)."""
