import FieldSyncCore

/// Benchmarks of the pure data model (filled in by the foundation work).
func coreBenchmarks() -> [Benchmark] { [] }
