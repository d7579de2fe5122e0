"""Benchmark commands: each measures one stage and writes its numbers, with ratios against a
baseline measured in the same run, to a file."""
