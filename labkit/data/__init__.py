"""The data: the registry of datasets (`datasets`), splits and batching as tensor ops (`splits`), and folders of
images read from disk (`imagefolder`). Imports only `labkit.core`."""
