"""Benchmarks and their reports: knowledge incorporation conditions side by side (`knowledge`,
`knowledge_report`, `floors`) and continual learning of documents one after another
(`continual`, `continual_report`). Run records are `seal.core.run_records`."""
