"""The Keras model code (TensorFlow): standardization, custom layers and the scorer.
Only workers, training and benchmarks import it; the API never does."""
