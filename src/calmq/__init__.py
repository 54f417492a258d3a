"""calmq: a background-job queue that never stalls the caller and never loses a job."""
