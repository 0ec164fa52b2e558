"""The conformance kit: checks files a system means to send (FHIR resources, Bundles, NDJSON,
directory XML) with the checker inbound writes and ``$validate`` use, offline, and reports
each bad record with its position (``contactpoint-gateway validate``,
``POST /directory/entries/$validate``; docs/vendors.md)."""
