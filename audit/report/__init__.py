"""report.json: its records, its assembly, and the renderers that read it (HTML, JUnit XML, Markdown)."""
