"""Generated stubs of mf.persona.v1 (persona.proto); regenerate, never edit."""
