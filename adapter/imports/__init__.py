"""Bulk imports: directory XML batches and FHIR files, applied as canonical records."""
