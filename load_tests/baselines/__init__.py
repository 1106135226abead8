"""Benchmark contenders that are not the tabserve service itself."""
