"""Wire format shared by the tracer and the optimizer daemon. Imports neither."""
