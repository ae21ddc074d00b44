"""The optimizer daemon: sessions, execution DAGs, OptoPrime, LLM calls, patches."""
