"""Infrastructure as code: the Bicep templates, and the `.env` writer for their outputs."""
