"""Mappings between the canonical model and FHIR, read from ``mappings/`` (docs/architecture.md
"Mappings are data"): ``engine`` compiles the TOML field maps, ``transforms`` / ``datatypes``
hold the named value functions, ``conceptmaps`` the code translations, ``fhir`` the API."""
