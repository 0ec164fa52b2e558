"""Storage of the canonical model: queries, loads, writes and version history of directory
entries, assessment references, organisations and practitioners."""
