"""Django migrations of the unmanaged jobs model (the schema is koyojobs' own)."""
