"""Service functions between the dialects (FHIR, directory XML, CLI) and the canonical model:
each route or command calls one of these, inside one transaction."""
