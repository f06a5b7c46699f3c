"""Python op builders for the flexattn dialect, generated from its ODS."""
