"""One provider per FHIR resource type, named after it: the service behind the type's REST
interactions (``adapter.fhir.handlers.ResourceHandler``), declared in ``adapter.registry``."""
