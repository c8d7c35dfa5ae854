"""Repositories: one module of typed query functions per entity."""
