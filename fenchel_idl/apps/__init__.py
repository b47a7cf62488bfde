"""Applications built on the public API: the command line, the experiments of section 7,
the demos, the benchmarks and the Table 1 command."""
