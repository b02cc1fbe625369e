"""vqbench adapters for vector-quantize-pytorch (registered through ``vqbench.methods``)."""
