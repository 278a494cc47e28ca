"""Generated stubs of the mf.persona package."""
