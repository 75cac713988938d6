"""Example third-party entropy source package (test fixture)."""
