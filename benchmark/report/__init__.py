"""Sweep tables -> statistics (``stats``), tables (``tables``), figures (``figures``), papers' claims (``papers``), open questions (``questions``) -> reports/ (``build``)."""
