"""Results folders: a study published into results/ (publish) and imported back into a store (load)."""
