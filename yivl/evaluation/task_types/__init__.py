"""One module per evaluation task type; ``yivl.evaluation.registry`` lists them."""
