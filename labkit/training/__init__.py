"""Training and runs: the schema (`config`), resolving it (`resolve`), the engine and its callbacks (`engine`,
`callbacks`, `tracking`), a run end to end (`experiment`) in its folder (`run_folder`, `checkpoint`), the run cache
(`cache`), comparisons over seeds (`report`), several processes (`distributed`) and models of the official code
(`official`). Imports `labkit.core`, `labkit.sla` and `labkit.data`."""
