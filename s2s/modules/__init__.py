"""Neural building blocks: encoders, attention, the bridge between them, decoders."""
